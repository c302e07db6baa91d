"""An asyncio chat client with the three transports: ``short_polling``, ``long_polling``
and ``websocket`` (chatcore.TRANSPORTS).

The receive side runs as one task per client that reconnects by itself with a
:class:`chatcore.Backoff` policy and resumes from the client's cursor. Events reach
the caller once each, in order: duplicates are dropped by cursor (and by
``(conversation, id)`` for messages). Each event is handed to ``on_event(event,
received_at)`` and to every :meth:`events` iterator, with ``received_at`` from the
injectable ``clock`` so a load generator can measure latency.

Kept cheap per client (one task, no threads) and given an injectable
``aiohttp.ClientSession`` so that many clients can share one connection pool.

Behind a sticky load balancer (``chatlab cluster``: HAProxy's ``SERVERID`` cookie), pass
``route_cookie="SERVERID"``: the client keeps that cookie for itself, taken from every
``Set-Cookie`` it gets (HTTP answers and the WebSocket handshake's), and sends it on every
request and WebSocket handshake, so it stays on its server, and follows the balancer when
it moves it. It is per client, not per session: clients sharing one session (and its cookie
jar) would otherwise all stick to one server. A shared session should not keep the cookie in
its own jar (``cookie_jar=aiohttp.DummyCookieJar()``); aiohttp's default jar ignores cookies
from IP addresses anyway.

    client = ChatClient("http://127.0.0.1:8080", "alice", "pw", transport="websocket")
    await client.register(); await client.start()
    ack = await client.send("hi", to="bob")
    async for event, t in client.events(): ...
    await client.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

import aiohttp
import websockets
from websockets.exceptions import ConnectionClosed

from chatcore import (MAX_BODY_BYTES, TRANSPORTS, Backoff, ConnectionState, Cursor, CursorError,
                      encode, receipt_request, send_request)
from chatcore.states import CONNECTION_TRANSITIONS, check_transition

EventCallback = Callable[[dict[str, Any], float], None]


class ChatError(Exception):
    """The server refused a request: *status* (HTTP status, or the WebSocket error's
    equivalent) and the error *body* (``{"error": code, "message": ...}``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error')}: {body.get('message', '')}")
        self.status = status
        self.body = body
        self.code = body.get("error")


class _Retry(Exception):
    """A transient failure: back off and try again."""


_WS_ERROR_STATUS = {"bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404,
                    "too_large": 413, "rate_limited": 429, "overloaded": 429, "client_msg_id_reused": 409,
                    "unavailable": 503}


class ChatClient:
    def __init__(self, base_url: str, user: str, password: str, *, transport: str = "websocket",
                 session: aiohttp.ClientSession | None = None,
                 reconnect_policy: str = "full_jitter", backoff_base: float = 0.5, backoff_cap: float = 10.0,
                 rng: random.Random | None = None, retry_rng: random.Random | None = None,
                 poll_interval: float = 1.0, longpoll_timeout: float = 30.0,
                 ws_compression: bool = False, send_timeout: float = 10.0, send_attempts: int = 5,
                 on_event: EventCallback | None = None, clock: Callable[[], float] = time.monotonic,
                 cursor: str | None = None, route_cookie: str | None = None) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport={transport!r}: expected one of {', '.join(TRANSPORTS)}")
        self.base_url = base_url.rstrip("/")
        self.user, self.password, self.transport = user, password, transport
        self.poll_interval, self.longpoll_timeout = poll_interval, longpoll_timeout
        self.ws_compression = ws_compression
        self.send_timeout, self.send_attempts = send_timeout, send_attempts
        self.on_event = on_event
        self.clock = clock
        #: *rng* draws the receive loop's reconnect delays and nothing else (a load generator
        #: seeds it with ``chatcore.reconnect_seed``, as the simulation does); *retry_rng* draws the
        #: resends' delays and the jitter after a 429.
        self.backoff = Backoff(reconnect_policy, backoff_base, backoff_cap, rng or random.Random())
        self.retry_rng = retry_rng or random.Random()
        self.state = ConnectionState.DISCONNECTED
        self.token: str | None = None
        self.cursor: str | None = cursor
        #: Times the server could not resume our cursor (events were lost to us).
        self.gaps = 0
        #: Successful (re)connections of the receive loop; polls count their first success.
        self.connects = 0
        self.duplicates_dropped = 0
        #: Sends and receipts the server refused with 429 and this client resent later.
        self.refusals = 0
        #: The load balancer's cookie name (None: none), and this client's value of it.
        self.route_cookie = route_cookie
        self.route: str | None = None
        self._session = session
        self._own_session = session is None
        self._seen: set[tuple[str, int]] = set()
        self._subscribers: list[asyncio.Queue[tuple[dict[str, Any], float]]] = []
        self._task: asyncio.Task[None] | None = None
        self._ws: Any = None
        self._ready = asyncio.Event()  # WebSocket resumed and open
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- plumbing ------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Its own jar would add the balancer's cookie itself (for host names); the client
            # sends the route cookie explicitly instead.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar() if self.route_cookie else None)
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.route_cookie and self.route:
            headers["Cookie"] = f"{self.route_cookie}={self.route}"
        return headers

    def _take_route(self, set_cookie_headers: list[str]) -> None:
        """Keep the load balancer's cookie from these ``Set-Cookie`` values, if one names it."""
        if not self.route_cookie:
            return
        for text in set_cookie_headers:
            jar: SimpleCookie = SimpleCookie()
            with contextlib.suppress(CookieError):
                jar.load(text)
            morsel = jar.get(self.route_cookie)
            if morsel is not None and morsel.value:
                self.route = morsel.value

    async def _request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                       timeout: float = 30.0) -> Any:
        """One HTTP request: the decoded JSON body, :class:`ChatError` on 4xx, :class:`_Retry`
        on a network failure or 5xx."""
        try:
            async with self.session.request(
                    method, self.base_url + path, params=params, headers=self._headers(),
                    data=None if body is None else encode(body),
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                status = resp.status
                self._take_route(resp.headers.getall("Set-Cookie", []))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _Retry(str(exc)) from exc
        if status >= 500:  # the server's, or a load balancer's with no server to send to
            raise _Retry(f"HTTP {status}")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:  # not the server's JSON: a proxy's page
            raise _Retry(f"HTTP {status}: not JSON") from None
        if status >= 400:
            raise ChatError(status, data)
        return data

    def _retry_after(self, exc: ChatError) -> float | None:
        """Seconds to wait before resending after a 429 (rate limited or overloaded): the
        server's ``retry_after_ms`` stretched by up to half again at random, so clients that
        were refused together do not come back together. None for other errors."""
        if exc.status != 429:
            return None
        ms = exc.body.get("retry_after_ms")
        base = ms / 1000 if isinstance(ms, (int, float)) and ms > 0 else self.backoff.base
        return base * (1.0 + self.retry_rng.uniform(0.0, 0.5))

    async def _with_retries(self, method: str, path: str, body: Any = None) -> Any:
        """A request retried with backoff on transient failures and after a 429's
        ``retry_after_ms`` (sends are idempotent by client_msg_id, receipts by watermark),
        re-logging in once on 401."""
        backoff = Backoff(self.backoff.policy, self.backoff.base, self.backoff.cap, self.retry_rng)
        relogged = False
        for attempt in range(self.send_attempts):
            last = attempt == self.send_attempts - 1
            try:
                return await self._request(method, path, body, timeout=self.send_timeout)
            except _Retry:
                if last:
                    raise ChatError(503, {"error": "unavailable", "message": "server unreachable"}) from None
                await asyncio.sleep(backoff.next_delay())
            except ChatError as exc:
                if exc.status == 401 and not relogged and self.token is not None:
                    relogged = True
                    await self.login()
                    continue
                wait = self._retry_after(exc)
                if wait is None or last:
                    raise
                self.refusals += 1
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    # --- account -------------------------------------------------------------------
    async def register(self) -> bool:
        """Create the account; False if it already exists."""
        try:
            await self._request("POST", "/api/register", {"user": self.user, "password": self.password})
        except ChatError as exc:
            if exc.code == "user_exists":
                return False
            raise
        return True

    async def login(self) -> str:
        self.token = None
        data = await self._request("POST", "/api/login", {"user": self.user, "password": self.password})
        self.token = data["token"]
        return self.token

    async def logout(self) -> None:
        """Revoke this client's token on the server (idempotent) and forget it."""
        if self.token is not None:
            await self._request("POST", "/api/logout")
            self.token = None

    # --- requests --------------------------------------------------------------------
    async def send(self, body: str, *, to: str | None = None, conversation: str | None = None,
                   client_msg_id: str | None = None) -> dict[str, Any]:
        """Send a message; returns the ack (``id``, ``conversation``, ``sent_at``,
        ``client_msg_id``). Resent with the same client_msg_id after a timeout, so at
        most one message is ever stored."""
        cmid = client_msg_id or uuid.uuid4().hex
        req = send_request(body, cmid, to=to, conversation=conversation)
        if self.transport != "websocket":
            return await self._with_retries("POST", "/api/messages", req)
        return await self._ws_send(cmid, {"type": "send", **req})

    async def receipt(self, conversation: str, up_to: int, status: str) -> None:
        """Report messages up to *up_to* as delivered or read."""
        req = receipt_request(conversation, up_to, status)
        if self.transport == "websocket" and self._ws is not None and self._ready.is_set():
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(encode({"type": "receipt", **req}).decode())
                return
        await self._with_retries("POST", "/api/receipts", req)

    async def create_group(self, members: list[str]) -> str:
        return (await self._with_retries("POST", "/api/groups", {"members": members}))["conversation"]

    async def history(self, conversation: str, before: int | None = None, limit: int = 50) -> dict[str, Any]:
        params = {"limit": str(limit), **({"before": str(before)} if before else {})}
        return await self._request("GET", f"/api/conversations/{conversation}/messages", params=params)

    async def presence(self, users: list[str]) -> dict[str, str]:
        return (await self._request("GET", "/api/presence", params={"users": ",".join(users)}))["presence"]

    # --- receiving -------------------------------------------------------------------
    async def start(self) -> None:
        """Log in if needed and start receiving in the background."""
        if self.token is None:
            await self.login()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"client-{self.user}")

    async def stop(self) -> None:
        """Stop receiving, close the WebSocket, and the session if this client made it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._close_ws()
        for fut in self._acks.values():
            if not fut.done():
                fut.cancel()
        for task in list(self._background):
            task.cancel()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        self._move(ConnectionState.DISCONNECTED)

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        self._ready.clear()
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    def events(self) -> AsyncIterator[tuple[dict[str, Any], float]]:
        """An async iterator of ``(event, received_at)`` from now on."""
        queue: asyncio.Queue[tuple[dict[str, Any], float]] = asyncio.Queue()
        self._subscribers.append(queue)

        async def gen() -> AsyncIterator[tuple[dict[str, Any], float]]:
            try:
                while True:
                    yield await queue.get()
            finally:
                self._subscribers.remove(queue)
        return gen()

    def _deliver(self, event: dict[str, Any]) -> None:
        """Hand *event* to the caller unless it was seen already; advance the cursor."""
        try:
            cur = Cursor.parse(event["cursor"])
        except (KeyError, CursorError):
            return
        if self.cursor is not None:
            mine = Cursor.parse(self.cursor)
            if mine.epoch == cur.epoch and cur.seq <= mine.seq:
                self.duplicates_dropped += 1
                return
        self.cursor = str(cur)
        if event.get("type") == "message":
            key = (event["conversation"], event["id"])
            if key in self._seen:
                self.duplicates_dropped += 1
                return
            self._seen.add(key)
        t = self.clock()
        if self.on_event is not None:
            self.on_event(event, t)
        for q in self._subscribers:
            q.put_nowait((event, t))

    def _later(self, delay: float, coro: Any) -> None:
        """Run *coro* after *delay* seconds in the background (kept until it ends)."""
        async def run() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(ChatError, _Retry):
                await coro
        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _cursor_lost(self, current: str) -> None:
        self.gaps += 1
        self.cursor = current

    async def _run(self) -> None:
        loops = {"short_polling": self._poll_once, "long_polling": self._long_poll_once,
                 "websocket": self._ws_session}
        step = loops[self.transport]
        self._move(ConnectionState.CONNECTING)
        while True:
            try:
                await step()
            except (_Retry, ConnectionClosed, OSError, asyncio.TimeoutError,
                    websockets.exceptions.InvalidHandshake, aiohttp.ClientError):
                await self._back_off()
            except ChatError as exc:
                if exc.status == 401:
                    with contextlib.suppress(_Retry, ChatError):
                        await self.login()
                await self._back_off()

    def _move(self, to: ConnectionState) -> None:
        """Change connection state as ``chatcore.states.CONNECTION_TRANSITIONS`` allows (staying
        is no move); anything else raises TransitionError."""
        if to is not self.state:
            self.state = check_transition(CONNECTION_TRANSITIONS, self.state, to)

    async def _back_off(self) -> None:
        self._move(ConnectionState.BACKING_OFF)
        await self._close_ws()
        await asyncio.sleep(self.backoff.next_delay())
        self._move(ConnectionState.CONNECTING)

    def _connected(self) -> None:
        was = self.state
        self._move(ConnectionState.CONNECTED)
        if was != ConnectionState.CONNECTED:
            self.connects += 1
        self.backoff.reset()

    async def _fetch(self, path: str, params: dict[str, str], timeout: float) -> None:
        if self.cursor is not None:
            params["after"] = self.cursor
        try:
            data = await self._request("GET", path, params=params, timeout=timeout)
        except ChatError as exc:
            if exc.code == "cursor_expired":
                self._cursor_lost(exc.body["cursor"])
                return
            raise
        self._connected()
        for event in data["events"]:
            self._deliver(event)
        if not data["events"] and self.cursor is None:
            self.cursor = data["cursor"]

    async def _poll_once(self) -> None:
        await self._fetch("/api/poll", {}, timeout=30.0)
        await asyncio.sleep(self.poll_interval)

    async def _long_poll_once(self) -> None:
        await self._fetch("/api/longpoll", {"timeout": f"{self.longpoll_timeout:g}"},
                          timeout=self.longpoll_timeout + 10.0)

    async def _ws_session(self) -> None:
        """Connect, authenticate, resume from the cursor, then read frames until closed."""
        url = "ws" + self.base_url[len("http"):] + "/ws"
        self._move(ConnectionState.CONNECTING)
        cookie = {"Cookie": f"{self.route_cookie}={self.route}"} if self.route_cookie and self.route else None
        ws = await asyncio.wait_for(websockets.connect(
            url, compression="deflate" if self.ws_compression else None, additional_headers=cookie,
            max_size=4 * MAX_BODY_BYTES + 4 * 4000 * 4, open_timeout=10, ping_interval=None), 15)
        if ws.response is not None:
            self._take_route(ws.response.headers.get_all("Set-Cookie"))
        self._ws = ws
        await ws.send(encode({"type": "auth", "token": self.token}).decode())
        await ws.send(encode({"type": "resume", "after": self.cursor}).decode())
        try:
            async for text in ws:
                frame = json.loads(text)
                kind = frame.get("type")
                if kind in ("message", "receipt", "presence"):
                    self._deliver(frame)
                elif kind == "resumed":
                    if not frame["recovered"]:
                        self._cursor_lost(frame["cursor"])
                    elif self.cursor is None:
                        self.cursor = frame["cursor"]
                    self._connected()
                    self._ready.set()
                elif kind == "ack":
                    fut = self._acks.get(frame["client_msg_id"])
                    if fut is not None and not fut.done():
                        fut.set_result({k: v for k, v in frame.items() if k != "type"})
                elif kind == "error":
                    err = ChatError(_WS_ERROR_STATUS.get(frame["error"], 400), frame)
                    fut = self._acks.get(frame.get("client_msg_id", ""))
                    if fut is not None and not fut.done():
                        fut.set_exception(err)
                    elif "up_to" in frame and (wait := self._retry_after(err)) is not None:
                        self.refusals += 1  # a refused receipt: send it again later, over HTTP
                        self._later(wait, self._with_retries(
                            "POST", "/api/receipts", receipt_request(frame["conversation"], frame["up_to"],
                                                                     frame["status"])))
        finally:
            self._ready.clear()
        if ws.close_code == 4001:
            raise ChatError(401, {"error": "unauthorized", "message": ws.close_reason})
        raise _Retry(f"closed {ws.close_code}")

    async def _ws_send(self, cmid: str, frame: dict[str, Any]) -> dict[str, Any]:
        text = encode(frame).decode()
        fut = self._acks.get(cmid)
        if fut is None or fut.done():
            fut = self._acks[cmid] = asyncio.get_running_loop().create_future()
        try:
            for attempt in range(self.send_attempts):
                try:
                    await asyncio.wait_for(self._ready.wait(), self.send_timeout)
                    ws = self._ws
                    if ws is None:
                        continue  # closed between "ready" and now: wait for the reconnect
                    await ws.send(text)
                    return await asyncio.wait_for(asyncio.shield(fut), self.send_timeout)
                except (asyncio.TimeoutError, ConnectionClosed):
                    continue  # resend the same client_msg_id: the server de-duplicates
                except ChatError as exc:
                    wait = self._retry_after(exc)
                    if wait is None or attempt == self.send_attempts - 1:
                        raise
                    self.refusals += 1
                    fut = self._acks[cmid] = asyncio.get_running_loop().create_future()
                    await asyncio.sleep(wait)
            raise ChatError(503, {"error": "unavailable", "message": f"no ack after {self.send_attempts} tries"})
        finally:
            left = self._acks.pop(cmid, None)
            if left is not None and left.done() and not left.cancelled():
                left.exception()  # an error frame that came after the last wait: seen, not unretrieved
            elif left is not None:
                left.cancel()
