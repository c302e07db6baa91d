"""docs/server.md "A cluster": several server processes share the real Redis and one
PostgreSQL database; a message reaches its recipient on every transport whichever server
the sender and the recipient are connected to. Two servers in this test process (their own
ids, prefix and database), driven over HTTP and WebSockets on loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from reference_server.app import RunningServer, run_server
from reference_server.redis_link import connect

from .conftest import PG_ADMIN_URL, REDIS_URL, Api, _pg_admin, delete_prefix, fast_config, poll_until, \
    ws_frames_until, ws_open

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[RunningServer]]:
    name = f"chatlab_test_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    prefix = f"chatlab-test-{uuid.uuid4().hex[:12]}"
    db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    servers = []
    try:
        for sid in ("s1", "s2"):
            servers.append(await run_server(fast_config(tmp_path / sid, REDIS_URL, prefix, server_id=sid,
                                                        db_url=db_url)))
        yield servers
    finally:
        for srv in servers:
            await srv.stop()
        client = connect(REDIS_URL)
        await delete_prefix(client, prefix)
        await client.aclose()
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_message_reaches_a_websocket_on_the_other_server(cluster: list[RunningServer]) -> None:
    s1, s2 = cluster
    async with aiohttp.ClientSession() as session:
        a1, a2 = Api(session, s1.url), Api(session, s2.url)
        alice, bob = await a1.user("alice"), await a2.user("bob")  # one database: both see both
        ws = await ws_open(a2, bob)                                   # bob is on s2
        await ws_frames_until(ws, lambda f: f["type"] == "resumed")
        await s2.chat.delivery.stop()                                 # so s1 fans out everything
        for i in range(20):                                           # alice writes through s1
            await a1.send(alice, f"m{i}", to="bob")
        frames = await ws_frames_until(ws, lambda f: f.get("body") == "m19", timeout=10)
        bodies = [f["body"] for f in frames if f["type"] == "message"]
        assert bodies == [f"m{i}" for i in range(20)], "every message once, in order"
        await ws.close()
        assert s1.chat.delivery.router.forwarded >= 20 and s2.chat.delivery.router.received >= 20, \
            "fanned out on s1, pushed to s2 through its stream"


async def test_a_held_long_poll_on_the_other_server_is_woken(cluster: list[RunningServer]) -> None:
    s1, s2 = cluster
    async with aiohttp.ClientSession() as session:
        a1, a2 = Api(session, s1.url), Api(session, s2.url)
        alice, bob = await a1.user("alice"), await a2.user("bob")
        await a1.send(alice, "first", to="bob")
        events = await poll_until(a2, bob, lambda e: e.get("body") == "first")
        cursor = events[-1]["cursor"]
        await s2.chat.delivery.stop()  # s1 fans out: the wake-up must cross to s2

        async def hold() -> tuple[int, dict]:
            return await a2.call("GET", f"/api/longpoll?timeout=20&after={cursor}", bob)

        held = asyncio.create_task(hold())
        for _ in range(200):  # until the poll is held on s2
            if s2.chat.metrics.held_longpolls.get() >= 1:
                break
            await asyncio.sleep(0.01)
        t0 = asyncio.get_running_loop().time()
        await a1.send(alice, "wake up", to="bob")
        status, page = await asyncio.wait_for(held, 10)
        assert status == 200 and [e["body"] for e in page["events"]] == ["wake up"]
        assert asyncio.get_running_loop().time() - t0 < 5, "woken by the push, not by its 20 s timeout"


async def test_presence_is_one_state_across_servers(cluster: list[RunningServer]) -> None:
    """Bob's phone on s1 and laptop on s2: one 'online', and 'offline' only when both left."""
    s1, s2 = cluster
    async with aiohttp.ClientSession() as session:
        a1, a2 = Api(session, s1.url), Api(session, s2.url)
        alice, bob = await a1.user("alice"), await a1.user("bob")
        await a1.send(bob, "hi", to="alice")
        phone, laptop = await ws_open(a1, bob), await ws_open(a2, bob)
        for ws in (phone, laptop):
            await ws_frames_until(ws, lambda f: f["type"] == "resumed")
        await phone.close()
        await asyncio.sleep(0.3)
        status, body = await a2.call("GET", "/api/presence?users=bob", alice)
        assert body["presence"]["bob"] == "online"
        await laptop.close()
        events = await poll_until(a1, alice, lambda e: e["type"] == "presence" and e["status"] == "offline")
        assert [e["status"] for e in events if e["type"] == "presence"] == ["online", "offline"]
