"""ChatClient behind a sticky load balancer (``route_cookie``), against a small stand-in
that answers like HAProxy does: it sets the cookie naming a server, and later moves the
client by setting another. Also: a balancer's non-JSON error page is a retry, not a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from reference_server.client import ChatClient, _Retry


class Balancer:
    """Records the Cookie header of every request; sets ``SERVERID=<self.server>`` when the
    client's cookie names another server (insert mode)."""

    def __init__(self) -> None:
        self.server = "s1"
        self.seen: list[tuple[str, str | None]] = []

    def _stick(self, request: web.Request, resp: web.StreamResponse) -> None:
        cookie = request.headers.get("Cookie")
        self.seen.append((request.path, cookie))
        if cookie != f"SERVERID={self.server}":
            resp.headers["Set-Cookie"] = f"SERVERID={self.server}; path=/"

    async def login(self, request: web.Request) -> web.Response:
        resp = web.json_response({"token": "t"})
        self._stick(request, resp)
        return resp

    async def poll(self, request: web.Request) -> web.Response:
        resp = web.json_response({"events": [], "cursor": "e1.0"})
        self._stick(request, resp)
        return resp

    async def broken(self, request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                            content_type="text/html")

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        self._stick(request, ws)
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["type"] == "resume":
                await ws.send_str(json.dumps({"type": "resumed", "recovered": True, "cursor": "e1.0"}))
        return ws


@pytest.fixture
async def balancer() -> AsyncIterator[tuple[Balancer, str]]:
    b = Balancer()
    app = web.Application()
    app.router.add_post("/api/login", b.login)
    app.router.add_get("/api/poll", b.poll)
    app.router.add_get("/api/broken", b.broken)
    app.router.add_get("/ws", b.ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield b, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_each_client_keeps_its_own_route_and_follows_a_move(balancer: tuple[Balancer, str]) -> None:
    b, url = balancer
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as shared:
        one = ChatClient(url, "a", "pw", transport="short_polling", session=shared, route_cookie="SERVERID")
        two = ChatClient(url, "b", "pw", transport="short_polling", session=shared, route_cookie="SERVERID")
        await one.login()
        assert one.route == "s1" and b.seen[-1] == ("/api/login", None)
        b.server = "s2"  # the balancer sends the next newcomer elsewhere
        await two.login()
        assert (one.route, two.route) == ("s1", "s2"), "one session, two routes"
        b.server = "s1"
        await one._request("GET", "/api/poll")
        assert b.seen[-1] == ("/api/poll", "SERVERID=s1"), "the client sends its own route"
        b.server = "s3"  # s1 died: the balancer moves the client and says so
        await one._request("GET", "/api/poll")
        assert one.route == "s3"
        await one._request("GET", "/api/poll")
        assert b.seen[-1] == ("/api/poll", "SERVERID=s3")


async def test_the_websocket_handshake_carries_and_takes_the_route(balancer: tuple[Balancer, str]) -> None:
    b, url = balancer
    c = ChatClient(url, "a", "pw", transport="websocket", route_cookie="SERVERID")
    c.token, c.route, b.server = "t", "s1", "s2"
    await c.start()
    try:
        for _ in range(200):
            if c.state.value == "connected":
                break
            await asyncio.sleep(0.01)
        assert c.state.value == "connected"
        assert b.seen[-1] == ("/ws", "SERVERID=s1") and c.route == "s2", "sent s1, moved to s2 by the 101"
    finally:
        await c.stop()


async def test_without_route_cookie_no_cookie_is_sent(balancer: tuple[Balancer, str]) -> None:
    b, url = balancer
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        c = ChatClient(url, "a", "pw", transport="short_polling", session=s)
        await c.login()
        await c._request("GET", "/api/poll")
        assert c.route is None and b.seen[-1] == ("/api/poll", None)


async def test_a_balancers_error_page_is_a_retry(balancer: tuple[Balancer, str]) -> None:
    _, url = balancer
    async with aiohttp.ClientSession() as s:
        c = ChatClient(url, "a", "pw", session=s)
        with pytest.raises(_Retry, match="502"):
            await c._request("GET", "/api/broken")
