"""PROTOCOL.md "Cursors and resume": every event once, in order, across reconnects; an
explicit refusal (410 / recovered:false) instead of a partial replay."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest

from chatcore import TRANSPORTS, Cursor
from reference_server.client import ChatClient

from .conftest import PASSWORD, Api, poll_until, wait_for_events, wait_until, ws_frames_until, ws_open


def _is_resumed(f: dict[str, Any]) -> bool:
    return f["type"] == "resumed"


async def test_ws_resume_replays_exactly_the_missed_events(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    ws = await ws_open(api, bob)
    assert (await ws_frames_until(ws, _is_resumed))[-1]["recovered"] is True
    for i in range(3):
        await api.send(alice, f"m{i}", to="bob")
    frames = await ws_frames_until(ws, lambda f: f.get("body") == "m2")
    assert [f["body"] for f in frames] == ["m0", "m1", "m2"]
    cursor = frames[-1]["cursor"]
    await ws.close()

    for i in range(3, 6):
        await api.send(alice, f"m{i}", to="bob")
    # Delivery is asynchronous: wait until m5 is in bob's log (a poll moves no cursor but its own).
    await poll_until(api, bob, lambda e: e.get("body") == "m5")

    # Recovery works more than once from the same cursor (Socket.IO #4880).
    for _ in range(2):
        ws = await ws_open(api, bob, after=cursor)
        frames = await ws_frames_until(ws, _is_resumed)
        events, resumed = frames[:-1], frames[-1]
        bodies = [e["body"] for e in events if e["type"] == "message"]
        assert bodies == ["m3", "m4", "m5"]
        assert resumed["recovered"] is True and resumed["cursor"] == events[-1]["cursor"]
        seqs = [Cursor.parse(e["cursor"]).seq for e in events]
        assert seqs == list(range(Cursor.parse(cursor).seq + 1, seqs[-1] + 1)), "contiguous, no gap"
        await ws.close()


async def test_ws_resume_twice_on_one_connection_is_refused(server, api: Api) -> None:
    bob = await api.user("bob")
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, _is_resumed)
    await ws.send_json({"type": "resume", "after": None})
    (err,) = await ws_frames_until(ws, lambda f: True)
    assert err["type"] == "error" and err["error"] == "bad_request"
    await ws.close()


async def test_expired_other_epoch_and_malformed_cursors(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(event_retention=3)
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    for i in range(10):
        await api.send(alice, f"m{i}", to="bob")
    await wait_until(lambda: server.chat.metrics.delivery_latency.count >= 10, what="10 deliveries")
    status, page = await api.poll(bob)
    assert status == 200
    epoch = server.chat.store.epoch
    current = page["cursor"]
    retained = [e["body"] for e in page["events"]]
    assert 3 <= len(retained) <= 4 and retained[-1] == "m9", "old events were trimmed"
    first_kept = Cursor.parse(page["events"][0]["cursor"]).seq

    for cursor in (f"{epoch}.1", f"zz{epoch[2:]}.{first_kept}", f"{epoch}.999"):
        status, body = await api.poll(bob, cursor)
        assert (status, body["error"], body["cursor"]) == (410, "cursor_expired", current), cursor
        status, body = await api.call("GET", f"/api/longpoll?after={cursor}&timeout=1", bob)
        assert (status, body["error"], body["cursor"]) == (410, "cursor_expired", current), cursor
        ws = await ws_open(api, bob, after=cursor)
        frames = await ws_frames_until(ws, _is_resumed)
        assert frames == [{"type": "resumed", "recovered": False, "cursor": current}], "nothing partial"
        await ws.close()

    # The oldest retained position still resumes.
    status, body = await api.poll(bob, f"{epoch}.{first_kept - 1}")
    assert status == 200 and [e["body"] for e in body["events"]] == retained

    for bad in ("abc", f"{epoch}.-1", f"{epoch}.", "EPOCH.1", f"{epoch}.1.2"):
        status, body = await api.poll(bob, bad)
        assert status == 400 and body["error"] == "bad_request", bad


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_client_survives_dropped_connections(transport: str, database: str, make_server,
                                                   session: aiohttp.ClientSession) -> None:
    """Messages keep coming while the server cuts every connection twice: the client
    reconnects by itself and ends with every message once, in order (SQLite and PostgreSQL)."""
    server = await make_server(db=database)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as plain:
        api = Api(plain, server.url)  # no keep-alive: the cuts cannot hit the sender
        alice = await api.user("alice")
        got: list[dict[str, Any]] = []
        bob = ChatClient(server.url, "bob", PASSWORD, transport=transport, session=session,
                         poll_interval=0.05, longpoll_timeout=2, backoff_base=0.05, backoff_cap=0.2,
                         rng=random.Random(7), on_event=lambda e, t: got.append(e))
        await bob.register()
        await bob.start()
        try:
            n = 30
            for i in range(n):
                await api.send(alice, f"m{i}", to="bob")
                if i in (10, 20):
                    await wait_until(lambda: bob.connects >= 1, what="bob connected")
                    _cut_all(server)
                await asyncio.sleep(0.005)
            msgs = await wait_for_events(got, lambda e: e["type"] == "message", count=n, timeout=10)
            assert [m["body"] for m in msgs] == [f"m{i}" for i in range(n)]
            seqs = [Cursor.parse(e["cursor"]).seq for e in got]
            assert seqs == sorted(set(seqs)), "each event once, in order"
            assert bob.gaps == 0
            if transport == "websocket":
                assert bob.connects >= 3, "two drops, two resumes"
        finally:
            await bob.stop()


def _cut_all(server) -> None:
    """Abort every TCP connection the server holds (WebSockets, long polls, keep-alives)."""
    for handler in list(server.runner.server.connections):
        if handler.transport is not None:
            handler.transport.abort()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_client_counts_a_gap_and_continues(transport: str, server, api: Api,
                                                 session: aiohttp.ClientSession) -> None:
    """A client holding a cursor from another epoch is told so, counts one gap, and
    receives new events from the current position on."""
    alice = await api.user("alice")
    got: list[dict[str, Any]] = []
    bob = ChatClient(server.url, "bob", PASSWORD, transport=transport, session=session, poll_interval=0.05,
                     longpoll_timeout=2, backoff_base=0.05, rng=random.Random(3), cursor="zzzz.5",
                     on_event=lambda e, t: got.append(e))
    await bob.register()
    await bob.start()
    try:
        await wait_until(lambda: bob.gaps == 1, what="the gap to be reported")
        assert Cursor.parse(bob.cursor).epoch == server.chat.store.epoch
        await api.send(alice, "after the gap", to="bob")
        await wait_for_events(got, lambda e: e.get("body") == "after the gap")
        assert bob.gaps == 1
    finally:
        await bob.stop()
