"""Storms (issue 10, docs/server.md "Storms and faults"): thousands of clients arriving at
once. Every WebSocket that connects within the storm authenticates, resumes and stays open;
every long poll is held and answered 200; none is refused (503) or closed after its auth.
On both backends (the embedded fakeredis and the real Redis, whose pool makes a burst wait
rather than fail).

Sizes: ``tests/soak.py`` (300 in ``make test``, 2,000 in ``make soak``). The time the storm
took is printed (``-s``) and written to docs/server.md; it is not asserted (a loaded machine
decides it, not the server).
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import uuid
from typing import Any

import aiohttp
import pytest

from reference_server.app import RunningServer
from reference_server.loadgen.process import raise_nofile
from reference_server.payloads import Credentials, SendRequest

from ..soak import size
from .conftest import PASSWORD, wait_until

pytestmark = pytest.mark.soak

#: Generous waits (not targets): 2,000 clients and the server share one loaded event loop.
WAIT_S = 120.0


def raise_fd_limit(need: int) -> None:
    """Raise this process's open-file soft limit to its hard limit if *need* descriptors
    would not fit (each storm connection is two: the client's and the server's end)."""
    soft = raise_nofile(need)
    if soft != resource.RLIM_INFINITY and soft < need:
        pytest.skip(f"the storm needs {need} open files; this process may have only {soft}")


async def users(server: RunningServer, n: int) -> tuple[list[str], list[str]]:
    """*n* registered users and a token for each (set up through the chat service: the storm
    is the connects, not the registrations)."""
    names = [f"s{i}" for i in range(n)]
    await asyncio.gather(*(server.chat.register(Credentials(u, PASSWORD)) for u in names))
    tokens = await asyncio.gather(*(server.chat.login(Credentials(u, PASSWORD)) for u in names))
    return names, [t["token"] for t in tokens]


async def one_message_each(server: RunningServer, names: list[str]) -> None:
    """A message from ``host`` to every user (through the group commit, as a send would)."""
    await server.chat.register(Credentials("host", PASSWORD))
    await asyncio.gather(*(server.chat.send("host", SendRequest(f"hi {u}", uuid.uuid4().hex, to=u))
                           for u in names))


def storm_session() -> aiohttp.ClientSession:
    """No client-side cap on connections (aiohttp's default pool holds 100)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def test_websocket_connect_storm(make_server: Any) -> None:
    n = size(300, 2000)
    raise_fd_limit(2 * n + 200)
    server = await make_server(rate_per_s=1e6, rate_burst=10 ** 6)  # the host writes to everyone
    names, tokens = await users(server, n)
    url = "ws" + server.url[len("http"):] + "/ws"
    async with storm_session() as s:
        async def connect(token: str) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
            ws = await s.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=WAIT_S))
            await ws.send_json({"type": "auth", "token": token})
            await ws.send_json({"type": "resume", "after": None})
            msg = await ws.receive(timeout=WAIT_S)
            frame = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else \
                {"type": str(msg.type), "data": msg.data, "close_code": ws.close_code}
            return ws, frame

        t0 = time.monotonic()
        opened = await asyncio.gather(*(connect(t) for t in tokens), return_exceptions=True)
        took = time.monotonic() - t0
        failed = [o for o in opened if isinstance(o, BaseException) or o[1].get("type") != "resumed"]
        assert not failed, f"{len(failed)} of {n} connects failed, e.g. {failed[:3]!r}"
        sockets = [o[0] for o in opened if not isinstance(o, BaseException)]
        print(f"\nws storm: {n} connects + auth + resume in {took:.2f} s")
        await wait_until(lambda: server.chat.metrics.open_connections.get(transport="websocket") == n,
                         WAIT_S, f"{n} open WebSockets")

        # Every one is live: a message to each user reaches its socket; none was closed.
        await one_message_each(server, names)

        async def first_message(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
            while True:
                msg = await ws.receive(timeout=WAIT_S)
                assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, ws.close_code)
                frame: dict[str, Any] = json.loads(msg.data)
                if frame["type"] != "presence":
                    return frame

        frames = await asyncio.gather(*(first_message(ws) for ws in sockets))
        assert [f["type"] for f in frames] == ["message"] * n
        assert [f["body"] for f in frames] == [f"hi {u}" for u in names]
        assert not [ws for ws in sockets if ws.closed]
        assert server.chat.metrics.slow_consumers.get() == 0
        await asyncio.gather(*(ws.close() for ws in sockets))


async def test_long_poll_storm(make_server: Any) -> None:
    n = size(300, 2000)
    raise_fd_limit(2 * n + 200)
    server = await make_server(rate_per_s=1e6, rate_burst=10 ** 6)  # the host writes to everyone
    names, tokens = await users(server, n)
    async with storm_session() as s:
        async def hold(token: str) -> tuple[int, Any]:
            async with s.get(server.url + "/api/longpoll?timeout=110", headers={"Authorization": f"Bearer {token}"},
                             timeout=aiohttp.ClientTimeout(total=WAIT_S)) as r:
                return r.status, await r.json()

        t0 = time.monotonic()
        polls = [asyncio.create_task(hold(t)) for t in tokens]
        await wait_until(lambda: server.chat.metrics.held_longpolls.get() == n or any(p.done() for p in polls),
                         WAIT_S, f"{n} held long polls")
        took = time.monotonic() - t0
        early = [p for p in polls if p.done()]
        assert not early, f"{len(early)} long polls answered before any event: {early[0].result()!r}"
        print(f"\nlong-poll storm: {n} polls held in {took:.2f} s")

        await one_message_each(server, names)  # wakes every one of them
        answers = await asyncio.gather(*polls, return_exceptions=True)
        bad = [a for a in answers if isinstance(a, BaseException) or a[0] != 200]
        assert not bad, f"{len(bad)} of {n} long polls failed, e.g. {bad[:3]!r}"
        got = [[e["body"] for e in a[1]["events"] if e["type"] == "message"] for a in answers]  # type: ignore[index]
        assert got == [[f"hi {u}"] for u in names]
