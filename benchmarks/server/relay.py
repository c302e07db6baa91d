"""The bare aiohttp relay of ``make bench-server``: the reference server's WebSocket protocol
with nothing behind it, to show what Python and aiohttp alone cost.

    python -m benchmarks.server.relay [--port 0]

prints ``relay on http://127.0.0.1:PORT`` once it listens, and stops on SIGTERM or SIGINT.

It speaks the same JSON frames as docs/PROTOCOL.md over ``GET /ws``: ``auth`` (a token from
``POST /api/login``), ``resume`` answered with ``resumed`` at once, ``send`` answered with an
``ack`` after the ``message`` event (built by ``chatcore.message_event``, compact JSON by
``chatcore.encode``) has been written to every open WebSocket of the recipient. Accounts and
tokens live in dicts (no scrypt, no SQLite), and there is no queue, no event log, no presence,
no Redis and no rate limit: what is left is aiohttp's HTTP and WebSocket handling, JSON, and
one asyncio task per connection. A refused frame gets an ``error`` frame as on the reference
server. Anything a real server must do on top of this costs more; the relay is a ceiling for
a single-process aiohttp server, not a chat server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import signal
import time
from collections import defaultdict
from typing import Any

from aiohttp import WSMsgType, web

from chatcore import encode
from chatcore.wire import ack_body, message_event

USER_RE = re.compile(r"^[a-z0-9_]{1,32}$")


class Relay:
    """Accounts, tokens and the open WebSockets of each user, all in memory."""

    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.seq: dict[str, int] = defaultdict(int)       # recipient -> last event sequence
        self.msg_id: dict[str, int] = defaultdict(int)    # conversation -> last message id
        self.epoch = secrets.token_hex(4)

    # --- HTTP ----------------------------------------------------------------------
    @staticmethod
    async def _credentials(request: web.Request) -> tuple[str, str]:
        try:
            obj = json.loads(await request.read())
            user, password = obj["user"], obj["password"]
        except (ValueError, KeyError, TypeError):
            raise _http_error(400, "bad_request", "expected {user, password}") from None
        if not isinstance(user, str) or not USER_RE.match(user) or not isinstance(password, str) or not password:
            raise _http_error(400, "bad_request", "user: 1-32 characters a-z 0-9 _; password: 1-256 characters")
        return user, password

    async def register(self, request: web.Request) -> web.Response:
        user, password = await self._credentials(request)
        if user in self.passwords:
            raise _http_error(409, "user_exists", f"user={user!r} is taken")
        self.passwords[user] = password
        return web.Response(body=encode({"user": user}), status=201, content_type="application/json")

    async def login(self, request: web.Request) -> web.Response:
        user, password = await self._credentials(request)
        if self.passwords.get(user) != password:
            raise _http_error(401, "unauthorized", "wrong user or password")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = user
        expires = int(time.time() * 1000) + 24 * 3600 * 1000
        return web.Response(body=encode({"token": token, "user": user, "expires_at": expires}),
                            content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=encode({"status": "ok", "epoch": self.epoch}), content_type="application/json")

    # --- WebSocket ------------------------------------------------------------------
    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024, heartbeat=25.0)
        await ws.prepare(request)
        try:
            first = await asyncio.wait_for(ws.receive(), 10.0)
        except asyncio.TimeoutError:
            await ws.close(code=4001, message=b"auth timeout")
            return ws
        user = None
        if first.type == WSMsgType.TEXT:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                obj = json.loads(first.data)
                if obj.get("type") == "auth" and set(obj) == {"type", "token"}:
                    user = self.tokens.get(obj["token"])
        if user is None:
            await ws.close(code=4001, message=b"auth frame expected")
            return ws
        mine = self.sockets[user]
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.BINARY:
                        await ws.send_str(_error("bad_request", "binary frames are not accepted"))
                        continue
                    break
                await self._frame(ws, user, mine, msg.data)
        finally:
            mine.discard(ws)
        return ws

    async def _frame(self, ws: web.WebSocketResponse, user: str, mine: set[web.WebSocketResponse],
                     text: str) -> None:
        try:
            obj = json.loads(text)
            kind = obj.get("type")
        except (ValueError, AttributeError):
            await ws.send_str(_error("bad_request", "expected a JSON object with a string 'type'"))
            return
        if kind == "send":
            to, body, cmid = obj.get("to"), obj.get("body"), obj.get("client_msg_id")
            if not isinstance(to, str) or to not in self.passwords or to == user \
                    or not isinstance(body, str) or not 1 <= len(body) <= 4000 or not isinstance(cmid, str):
                await ws.send_str(_error("bad_request", "expected {to: another user, body, client_msg_id}", cmid))
                return
            conv = f"dm:{user}:{to}" if user < to else f"dm:{to}:{user}"
            self.msg_id[conv] += 1
            msg_id = self.msg_id[conv]
            now_ms = int(time.time() * 1000)
            targets = self.sockets.get(to)
            if targets:
                self.seq[to] += 1
                event = encode(message_event(f"{self.epoch}.{self.seq[to]}", msg_id, conv, user, body, cmid,
                                             now_ms)).decode()
                for peer in list(targets):
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await peer.send_str(event)
            await ws.send_str(encode({"type": "ack", **ack_body(msg_id, conv, now_ms, cmid)}).decode())
        elif kind == "resume":
            mine.add(ws)
            await ws.send_str(encode({"type": "resumed", "recovered": True,
                                      "cursor": f"{self.epoch}.{self.seq[user]}"}).decode())
        elif kind == "receipt":
            return
        else:
            await ws.send_str(_error("bad_request", f"type={kind!r}: expected send, receipt or resume"))


def _error(code: str, message: str, client_msg_id: Any = None) -> str:
    body: dict[str, Any] = {"type": "error", "error": code, "message": message}
    if isinstance(client_msg_id, str):
        body["client_msg_id"] = client_msg_id
    return encode(body).decode()


_REFUSALS = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 409: web.HTTPConflict}


def _http_error(status: int, code: str, message: str) -> web.HTTPException:
    """The reference server's refusal body, ``{"error": CODE, "message": ...}``."""
    return _REFUSALS[status](text=encode({"error": code, "message": message}).decode(),
                             content_type="application/json")


def create_app() -> web.Application:
    relay = Relay()
    app = web.Application(client_max_size=16 * 1024)
    app.router.add_post("/api/register", relay.register)
    app.router.add_post("/api/login", relay.login)
    app.router.add_get("/healthz", relay.healthz)
    app.router.add_get("/ws", relay.ws)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(create_app(), access_log=None, shutdown_timeout=1.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # the only place the bound port of port 0 is
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay on http://{host}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.server.relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    asyncio.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
