"""``GET /ws``: the WebSocket transport (docs/PROTOCOL.md, "WebSocket").

One :class:`WsSession` per connection:

1. The first frame must be ``{"type":"auth","token":T}`` within ``ws_auth_timeout_s``,
   else close 4001. The token never travels in the URL.
2. ``{"type":"resume","after":C}`` subscribes: the session attaches to the hub *first*
   (so it learns of everything committed from now on), replays the log after ``C``,
   sends ``resumed``, reads from the log whatever was pushed meanwhile, then goes live.
   Anything both replayed and pushed is skipped by sequence number; a gap (events
   committed out of push order) is read from the log, so the client sees every event
   once and in order. Nothing is buffered per connection beyond the socket's own buffer.
3. ``send`` and ``receipt`` frames are the HTTP requests of the same name. They are
   pipelined: the session queues the write and reads the next frame at once; the ``ack``
   (or ``error``) goes out after the write's group commit, in the order the frames came.
4. Frames leave through the connection's :class:`~reference_server.hub.Sink` (one write
   per event-loop turn). More than ``ws_send_queue_bytes`` waiting for a peer that does
   not read closes the connection with 4008 (slow consumer); the client resumes from its
   cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from chatcore import MAX_BODY_BYTES, Cursor, encode

from . import payloads
from .chat import ChatService
from .errors import ApiError, bad_request
from .hub import Listener, Sink
from .http_api import CHAT
from .store import Expired, Page

log = logging.getLogger(__name__)

CLOSE_AUTH = 4001
CLOSE_SLOW_CONSUMER = 4008
TRANSPORT = "websocket"


class WsSession:
    """One authenticated WebSocket of *user*."""

    __slots__ = ("chat", "ws", "user", "conn_id", "sink", "listener", "_transport", "_tasks", "_slow",
                 "_closing")

    def __init__(self, chat: ChatService, ws: web.WebSocketResponse, user: str,
                 transport: asyncio.Transport | None) -> None:
        self.chat = chat
        self.ws = ws
        self.user = user
        self.conn_id = chat.delivery.router.conn_id("ws", uuid.uuid4().hex[:16])
        self.listener: Listener | None = None
        self._transport = transport
        self._tasks: set[asyncio.Task[None]] | None = None  # made when a task is (idle sockets have none)
        self._slow: list[bytes] | None = None  # frames waiting for aiohttp's compressor
        self._closing = False
        cfg = chat.config
        self.sink = Sink(transport, cfg.ws_send_queue_bytes, chat.hub.flusher, self._overflowed,
                         send_slow=self._send_compressed if cfg.ws_compression else None)

    def send_obj(self, obj: dict[str, Any]) -> None:
        """Queue one frame; it leaves at the end of this event-loop turn."""
        data = encode(obj)
        self.chat.metrics.ws_sent(len(data), 0)
        self.sink.send(data)

    def error(self, exc: ApiError, frame: Any = None) -> None:
        """An ``error`` frame; it names the refused request: a send by its ``client_msg_id``,
        a receipt by its ``conversation``, ``up_to`` and ``status`` (so a client can resend
        it after ``retry_after_ms``)."""
        body: dict[str, Any] = {"type": "error", **exc.body()}
        if isinstance(frame, dict):
            if isinstance(frame.get("client_msg_id"), str):
                body["client_msg_id"] = frame["client_msg_id"]
            elif frame.get("type") == "receipt":
                for key in ("conversation", "up_to", "status"):
                    if isinstance(frame.get(key), (str, int)) and not isinstance(frame.get(key), bool):
                        body[key] = frame[key]
        self.send_obj(body)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
            if not self._tasks:
                self._tasks = None

    # --- main loop ---------------------------------------------------------------
    async def run(self) -> None:
        presence = self.chat.presence
        await presence.join(self.user, self.conn_id)
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    raw = msg.data.encode("utf-8")
                    self.chat.metrics.ws_received(len(raw))
                    self._frame(raw)
                elif msg.type == WSMsgType.BINARY:
                    self.error(bad_request("binary frames are not accepted: send JSON text"))
                else:  # CLOSE / ERROR
                    break
        finally:
            if self.listener is not None:
                self.chat.hub.detach(self.listener)
            self.sink.close()
            tasks = list(self._tasks or ())
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
            with contextlib.suppress(Exception):
                await presence.leave(self.user, self.conn_id)

    def _frame(self, raw: bytes) -> None:
        obj: Any = None
        try:
            obj = payloads.decode_json(raw)
            if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
                raise bad_request("expected a JSON object with a string 'type'")
            fields = {k: v for k, v in obj.items() if k != "type"}
            kind = obj["type"]
            if kind == "send":
                req = payloads.parse_send(fields)
                self.chat.submit_send(self.user, req, self._on_ack(obj))
            elif kind == "receipt":
                self.chat.submit_receipt(self.user, payloads.parse_receipt(fields), self._on_receipt(obj))
            elif kind == "resume":
                self._start_resume(fields)
            elif kind == "auth":
                raise bad_request("already authenticated")
            else:
                raise bad_request(f"type={kind!r}: expected send, receipt or resume")
        except ApiError as exc:
            self.error(exc, obj)
        except Exception:  # the server's bug, not the peer's: say so and keep the connection
            log.exception("unexpected error on a WebSocket frame of %s", self.user)
            self.error(ApiError(503, "unavailable", "server error; retry later"), obj)

    def _on_ack(self, frame: dict[str, Any]) -> Any:
        def reply(ack: dict[str, Any] | None, exc: ApiError | None) -> None:
            if exc is not None:
                self.error(exc, frame)
            else:
                self.send_obj({"type": "ack", **(ack or {})})
        return reply

    def _on_receipt(self, frame: dict[str, Any]) -> Any:
        def reply(answer: dict[str, Any] | None, exc: ApiError | None) -> None:
            if exc is not None:
                self.error(exc, frame)  # a stored receipt gets no answer
        return reply

    # --- resume and push ------------------------------------------------------------
    def _start_resume(self, fields: dict[str, Any]) -> None:
        if self.listener is not None:
            raise bad_request("already resumed on this connection; reconnect to resume elsewhere")
        unknown = set(fields) - {"after"}
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(repr(k) for k in sorted(unknown))}")
        after_text = fields.get("after")
        if after_text is not None and not isinstance(after_text, str):
            raise bad_request("after: expected a cursor string or null")
        after: Cursor | None = payloads.parse_cursor(after_text)
        self.listener = Listener(self.user, self.sink, on_gap=self._gap)
        self.chat.hub.attach(self.listener)  # before reading: nothing committed from now on is missed
        self._spawn(self._resume(after))

    def _gap(self) -> None:
        self._spawn(self._catch_up())

    async def _resume(self, after: Cursor | None) -> None:
        """Replay the log after *after*, say ``resumed``, then catch up and go live."""
        listener = self.listener
        assert listener is not None
        store = self.chat.store
        page = await store.read_events(self.user, after, self.chat.config.poll_max_events)
        if isinstance(page, Expired):
            listener.sent_seq = page.current.seq
            self.send_obj({"type": "resumed", "recovered": False, "cursor": str(page.current)})
        else:
            listener.sent_seq = after.seq if after is not None else page.cursor.seq - len(page.events)
            if not await self._send_page(page):
                return
            await self._catch_up(until_seq=page.last_seq)
            self.send_obj({"type": "resumed", "recovered": True,
                           "cursor": str(Cursor(store.epoch, listener.sent_seq))})
        await self._catch_up()

    async def _send_page(self, page: Page) -> bool:
        """Send *page*'s events, never faster than the peer reads: past half the send limit,
        wait for the socket to drain (a peer that does not read for ``ws_auth_timeout_s`` is
        a slow consumer: closed, False)."""
        listener = self.listener
        assert listener is not None
        sink = self.sink
        half = sink.limit // 2
        for event in page.events:
            self.send_obj(event)
            listener.sent_seq += 1
            if sink.pending_bytes >= half and not await sink.drain(half, self.chat.config.ws_auth_timeout_s):
                self._overflowed()
                return False
        listener.sent_seq = page.cursor.seq
        self.chat.metrics.ws_sent(0, len(page.events))
        return True

    async def _catch_up(self, until_seq: int | None = None) -> None:
        """Read the log after ``sent_seq`` until *until_seq* (or, without it, until every
        event pushed meanwhile is sent); then go live. The events pushed while reading were
        committed first, so the log has them."""
        listener = self.listener
        assert listener is not None
        store = self.chat.store
        while True:
            target = until_seq if until_seq is not None else listener.live_seq
            if listener.sent_seq >= target:
                if until_seq is None:
                    listener.replaying = False  # no await since the check: nothing slips by
                return
            page = await store.read_events(self.user, Cursor(store.epoch, listener.sent_seq),
                                           self.chat.config.poll_max_events)
            if isinstance(page, Expired) or not page.events:  # trimmed meanwhile: cannot recover here
                self._overflowed()
                return
            if not await self._send_page(page):
                return
            await asyncio.sleep(0)  # a long catch-up lets other connections run between pages

    def _send_compressed(self, frames: list[bytes]) -> None:
        """permessage-deflate: frames go through aiohttp's compressor, in order, from one task."""
        if self._slow is not None:
            self._slow.extend(frames)
            return
        self._slow = list(frames)
        self._spawn(self._compressed_writer())

    async def _compressed_writer(self) -> None:
        try:
            while self._slow:
                frames, self._slow = self._slow, []
                for data in frames:
                    await self.ws.send_str(data.decode("utf-8"))
        finally:
            self._slow = None

    def _overflowed(self) -> None:
        """The peer does not read: close 4008 (slow consumer). Runs at most once."""
        if not self._closing:
            self._closing = True
            self.sink.stop()
            self.chat.metrics.slow_consumers.inc()
            self._spawn(self._close_slow())

    async def _close_slow(self) -> None:
        try:
            async with asyncio.timeout(2.0):
                await self.ws.close(code=CLOSE_SLOW_CONSUMER, message=b"slow consumer")
        except Exception:
            # The peer reads nothing, not even the close frame: drop the TCP connection.
            if self._transport is not None:
                self._transport.abort()


def check_origin(request: web.Request, allowed: tuple[str, ...]) -> None:
    """403 before the upgrade when a browser page of another origin opens ``/ws`` (cross-site
    WebSocket hijacking: a browser sends no CORS preflight for a WebSocket). Allowed: no
    ``Origin`` (not a browser: the Python client, tools), the server's own origin (same
    host and port as the request's ``Host``, so the demo page works behind a proxy too), and
    the configured ``ws_allowed_origins``."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    scheme, sep, rest = origin.partition("://")
    if sep and scheme.lower() in ("http", "https") and rest.lower() == request.host.lower():
        return
    if origin.lower() in (o.lower() for o in allowed):
        return
    raise ApiError(403, "forbidden", f"Origin {origin[:100]!r} may not open a WebSocket here "
                   "(same origin or --ws-allow-origin only)")


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    chat = request.app[CHAT]
    cfg = chat.config
    check_origin(request, cfg.ws_allowed_origins)
    ws = web.WebSocketResponse(
        compress=cfg.ws_compression,          # aiohttp's default is True: be explicit
        max_msg_size=4 * MAX_BODY_BYTES,      # larger frames: close 1009; 16-64 KiB: error frame
        heartbeat=cfg.ws_ping_interval_s,
    )
    await ws.prepare(request)
    chat.metrics.open_connections.inc(1, transport=TRANSPORT)
    try:
        user = await _authenticate(chat, ws)
        if user is not None:
            await WsSession(chat, ws, user, request.transport).run()
    finally:
        chat.metrics.open_connections.inc(-1, transport=TRANSPORT)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
    return ws


async def _authenticate(chat: ChatService, ws: web.WebSocketResponse) -> str | None:
    """Wait for the auth frame; on any problem close with 4001 and return None."""
    reason = "auth frame expected"
    try:
        async with asyncio.timeout(chat.config.ws_auth_timeout_s):
            msg = await ws.receive()
    except TimeoutError:
        reason = "auth timeout"
    else:
        if msg.type == WSMsgType.TEXT:
            chat.metrics.ws_received(len(msg.data.encode("utf-8")))
            try:
                obj = payloads.decode_json(msg.data.encode("utf-8"))
                if (isinstance(obj, dict) and set(obj) == {"type", "token"} and obj["type"] == "auth"
                        and isinstance(obj["token"], str)):
                    return await chat.auth.user_of(obj["token"])
            except ApiError as exc:
                reason = exc.message
            else:
                reason = 'first frame must be {"type":"auth","token":...}'
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
    with contextlib.suppress(Exception):
        await ws.close(code=CLOSE_AUTH, message=reason.encode("utf-8")[:120])
    return None
