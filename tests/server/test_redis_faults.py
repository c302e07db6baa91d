"""docs/server.md "The guarantees": Redis losing its data and bursts bigger than the Redis
pool. On both backends: the embedded fakeredis and the real Redis."""

from __future__ import annotations

import asyncio

import aiohttp

from .conftest import Api, delete_prefix, poll_until, wait_until, ws_frames_until, ws_open


def _body_is(text: str):  # type: ignore[no-untyped-def]
    return lambda e: e.get("type") == "message" and e.get("body") == text


async def _forget_everything(server) -> None:  # type: ignore[no-untyped-def]
    """What Redis restarted without persistence looks like to this server: its keys are gone
    (the stream, its consumer group, presence)."""
    await delete_prefix(server.chat.presence.redis, server.chat.config.redis_prefix)


async def test_delivery_recreates_its_group_after_redis_loses_it(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "before", to="bob")
    await poll_until(api, bob, _body_is("before"))
    await _forget_everything(server)
    await api.send(alice, "after", to="bob")  # acknowledged: it is durable in SQLite
    events = await poll_until(api, bob, _body_is("after"), timeout=10)
    assert [e["body"] for e in events if e["type"] == "message"] == ["before", "after"]
    assert server.chat.metrics.group_recreated.get() >= 1


async def test_healthz_tells_the_truth_while_the_group_is_missing(server, api: Api) -> None:
    await server.chat.delivery.stop()          # nobody recreates the group meanwhile
    await _forget_everything(server)
    status, body = await api.call("GET", "/healthz")
    assert status == 503 and "consumer group" in body["delivery"]
    await server.chat.delivery.start()         # creates it again at 0
    status, body = await api.call("GET", "/healthz")
    assert status == 200 and body["status"] == "ok"


async def test_healthz_says_when_the_consumer_stopped_reading(server, api: Api) -> None:
    await wait_until(lambda: server.chat.delivery.last_read_ok is not None, what="a first read")
    await server.chat.delivery.stop()
    limit = 2.0 + 4 * server.chat.config.queue_poll_ms / 1000
    server.chat.delivery.last_read_ok -= limit + 1  # as if it had not read for longer than its limit
    status, body = await api.call("GET", "/healthz")
    assert status == 503 and "not reading" in body["delivery"]


async def test_redis_pool_waits_instead_of_failing_a_burst(make_server, session: aiohttp.ClientSession) -> None:
    """Two Redis connections, sixty polls and thirty WebSocket connects at once: every one is
    served (the pool queues them), none is answered 503 or closed after auth."""
    server = await make_server(redis_max_connections=2, redis_pool_timeout_s=20)
    api = Api(session, server.url)
    tokens = await asyncio.gather(*(api.user(f"u{i}") for i in range(60)))
    polls = await asyncio.gather(*(api.poll(t) for t in tokens))
    assert [s for s, _ in polls] == [200] * 60

    async def connect(token: str) -> str:
        ws = await ws_open(api, token)
        frames = await ws_frames_until(ws, lambda f: f["type"] in ("resumed", "error"), timeout=20)
        await ws.close()
        return str(frames[-1]["type"])

    assert await asyncio.gather(*(connect(t) for t in tokens[:30])) == ["resumed"] * 30
