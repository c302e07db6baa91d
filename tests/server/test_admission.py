"""docs/server.md "Admission control": a send the server cannot deliver in time is refused
(429 ``overloaded`` with ``retry_after_ms``) before anything is stored, and the client
library backs off and resends. Time is a FakeClock: nothing here sleeps against a bound."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from reference_server.admission import Admission
from reference_server.chat import TokenBucket
from reference_server.client import ChatClient
from reference_server.clock import FakeClock
from reference_server.errors import ApiError

from .conftest import PASSWORD, Api, stored, ws_frames_until, ws_open


def _admission(clock: FakeClock, delivery: float = 0.0, commit: float = 0.0, loop: float = 0.0) -> Admission:
    return Admission(clock, max_delivery_lag_s=0.25, max_commit_wait_s=0.25, max_loop_lag_s=0.1,
                     delivery_age=lambda now: delivery, commit_age=lambda now: commit, loop_lag=lambda: loop)


@pytest.mark.parametrize("signal", ["delivery_lag", "commit_wait", "loop_lag"])
def test_each_signal_past_its_bound_refuses(signal: str) -> None:
    clock = FakeClock()
    under = {"delivery_lag": dict(delivery=0.25), "commit_wait": dict(commit=0.25), "loop_lag": dict(loop=0.1)}
    over = {"delivery_lag": dict(delivery=0.3), "commit_wait": dict(commit=0.3), "loop_lag": dict(loop=0.15)}
    _admission(clock, **under[signal]).check()  # at the bound: admitted
    adm = _admission(clock, **over[signal])
    with pytest.raises(ApiError) as refused:
        adm.check()
    assert (refused.value.status, refused.value.code) == (429, "overloaded")
    assert 200 <= refused.value.extra["retry_after_ms"] <= 5000
    assert adm.refused[signal] == 1 and sum(adm.refused.values()) == 1


def test_retry_after_grows_with_the_lag_within_limits() -> None:
    clock = FakeClock()
    waits = []
    for lag in (0.3, 1.0, 2.0, 10.0):
        with pytest.raises(ApiError) as refused:
            _admission(clock, delivery=lag).check()
        waits.append(refused.value.extra["retry_after_ms"])
    assert waits == sorted(waits) and waits[0] >= 200 and waits[-1] == 5000


def test_token_bucket_on_a_fake_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.5)
    clock.advance(0.49)
    assert not bucket.take()
    clock.advance(0.02)
    assert bucket.take(), "one token back after 1/rate seconds"
    clock.advance(100)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False], "never more than the burst"


async def _stalled_server(make_server, clock: FakeClock):  # type: ignore[no-untyped-def]
    """A server whose delivery consumer is stopped, so accepted sends stay undelivered."""
    server = await make_server(admission=True, admission_max_delivery_lag_ms=250,
                               admission_max_loop_lag_ms=60_000, clock=clock)
    await server.chat.delivery.stop()
    return server


async def test_http_send_is_refused_while_delivery_lags_and_accepted_after(make_server, session) -> None:
    clock = FakeClock()
    server = await _stalled_server(make_server, clock)
    api = Api(session, server.url)
    alice, _ = await api.user("alice"), await api.user("bob")
    await api.send(alice, "accepted", to="bob")          # delivery lag 0: admitted, then stuck
    # The stuck item is now 1.1 s old: past the bound even for a light writer like alice
    # (LIGHT_FACTOR x 250 ms; test_light_writers_are_held_to_a_higher_bound).
    clock.advance(1.1)
    before = await stored(server)
    async with session.post(server.url + "/api/messages", headers={"Authorization": f"Bearer {alice}"},
                            json={"to": "bob", "body": "refused", "client_msg_id": "r1"}) as r:
        body = await r.json()
        assert r.status == 429 and body["error"] == "overloaded"
        assert int(r.headers["Retry-After"]) == -(-body["retry_after_ms"] // 1000)
    assert await stored(server) == before, "a refused send stores nothing"
    await server.chat.delivery.start()                    # delivery catches up
    for _ in range(200):
        if server.chat.delivery.backlog() == 0:
            break
        await asyncio.sleep(0.01)
    assert server.chat.delivery.backlog() == 0
    await api.send(alice, "accepted again", to="bob")


async def test_ws_send_is_refused_with_an_error_frame_naming_it(make_server, session) -> None:
    clock = FakeClock()
    server = await _stalled_server(make_server, clock)
    api = Api(session, server.url)
    alice, _ = await api.user("alice"), await api.user("bob")
    ws = await ws_open(api, alice)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    await ws.send_json({"type": "send", "to": "bob", "body": "first", "client_msg_id": "c1"})
    # Frames are matched by client_msg_id: a presence or other event may come first.
    assert (await ws_frames_until(ws, lambda f: f.get("client_msg_id") == "c1"))[-1]["type"] == "ack"
    clock.advance(1.1)  # past the bound even for a light writer (LIGHT_FACTOR x 250 ms)
    await ws.send_json({"type": "send", "to": "bob", "body": "second", "client_msg_id": "c2"})
    frame = (await ws_frames_until(ws, lambda f: f.get("client_msg_id") == "c2"))[-1]
    assert frame["type"] == "error" and frame["error"] == "overloaded" and frame["client_msg_id"] == "c2"
    assert frame["retry_after_ms"] >= 200
    assert (await stored(server))["messages"] == 1
    await ws.close()


@pytest.mark.parametrize("transport", ["long_polling", "websocket"])
async def test_client_backs_off_after_429_and_resends_once(transport: str, make_server) -> None:
    """The library waits retry_after_ms (with jitter) and resends the same client_msg_id:
    every send ends stored exactly once."""
    server = await make_server(rate_per_s=5, rate_burst=2)
    async with aiohttp.ClientSession() as s:
        bob = ChatClient(server.url, "bob", PASSWORD, transport=transport, session=s)
        alice = ChatClient(server.url, "alice", PASSWORD, transport=transport, session=s,
                           backoff_base=0.05, send_attempts=10)
        for c in (alice, bob):
            await c.register()
            await c.start()
        acks = await asyncio.wait_for(asyncio.gather(*(alice.send(f"m{i}", to="bob") for i in range(6))), 30)
        assert sorted(a["id"] for a in acks) == [1, 2, 3, 4, 5, 6]
        assert alice.refusals >= 1, "the rate limit must have refused some"
        assert (await stored(server))["messages"] == 6
        for c in (alice, bob):
            await c.stop()
    assert json.dumps(acks)  # plain JSON answers


def _fair_admission(clock: FakeClock, lag: list[float]) -> Admission:
    return Admission(clock, max_delivery_lag_s=0.25, max_commit_wait_s=0.25, max_loop_lag_s=0.1,
                     delivery_age=lambda now: lag[0], commit_age=lambda now: 0.0, loop_lag=lambda: 0.0,
                     light_rate_per_s=5.0)


def test_light_writers_are_held_to_a_higher_bound() -> None:
    """Past the bound the heavy writer is refused and the light one admitted, up to
    LIGHT_FACTOR times the bound; past that, both (degrade, never collapse)."""
    from reference_server.admission import LIGHT_FACTOR

    clock = FakeClock()
    lag = [0.0]
    adm = _fair_admission(clock, lag)
    for step in range(200):  # 10 s: the heavy writer at 20 writes/s, the light one every 2 s
        adm.check("heavy")
        if step % 40 == 0:
            adm.check("light")
        clock.advance(0.05)
    assert adm.rate_of("heavy") > 15 and adm.rate_of("light") < 1
    lag[0] = 0.5  # twice the bound
    with pytest.raises(ApiError):
        adm.check("heavy")
    adm.check("light")  # admitted
    clock.advance(2.0)
    lag[0] = 0.25 * LIGHT_FACTOR + 0.01
    with pytest.raises(ApiError):
        adm.check("light")
    assert adm.refused["delivery_lag"] == 2


def test_writers_at_the_same_pace_are_all_held_to_the_bound() -> None:
    clock = FakeClock()
    lag = [0.0]
    adm = _fair_admission(clock, lag)
    for _ in range(40):  # 20 users, one write/s each: all well under light_rate_per_s
        for u in range(20):
            adm.check(f"u{u}")
            clock.advance(0.05)
    lag[0] = 0.5
    for u in range(20):
        with pytest.raises(ApiError):
            adm.check(f"u{u}")


def test_without_the_rule_everyone_has_the_same_bound() -> None:
    clock = FakeClock()
    adm = _admission(clock, delivery=0.3)
    for user in ("light", None):
        with pytest.raises(ApiError):
            adm.check(user)


async def test_commit_wait_is_read_on_the_servers_injected_clock(make_server, session) -> None:
    """Queued writes are stamped with the server's clock, the one admission reads ages
    against: a fake clock far from the real monotonic clock must not make the first write
    look hours old (it did, whenever the machine had been up less than the fake clock's
    start)."""
    clock = FakeClock(monotonic=10_000_000.0)
    server = await make_server(admission=True, clock=clock)
    api = Api(session, server.url)
    alice, _ = await api.user("alice"), await api.user("bob")
    # Concurrent sends: each is checked while others wait for their commit.
    acks = await asyncio.gather(*(api.send(alice, f"m{i}", to="bob") for i in range(20)))
    assert sorted(a["id"] for a in acks) == list(range(1, 21))
