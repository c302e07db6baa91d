"""``GET /ws``: the WebSocket transport (docs/PROTOCOL.md, "WebSocket").

One :class:`WsSession` per connection:

1. The first frame must be ``{"type":"auth","token":T}`` within ``ws_auth_timeout_s``,
   else close 4001. The token never travels in the URL.
2. ``{"type":"resume","after":C}`` subscribes: the session attaches to the hub *first*
   (so nothing committed from now on is missed), replays the log after ``C`` from
   SQLite, sends ``resumed``, then a writer task pushes live events from the bounded
   send queue. Anything both replayed and queued is skipped by sequence number; a gap
   in the queue (events committed out of push order) is filled from SQLite, so the
   client sees every event once and in order.
3. ``send`` and ``receipt`` frames are the HTTP requests of the same name; a send is
   answered with ``ack``, a refused frame with ``error`` (the connection stays open).
4. A full send queue closes the connection with 4008 (slow consumer); the client
   resumes from its cursor.
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
from .hub import Listener
from .http_api import CHAT
from .store import Expired
from .tasks import run_every, stop_all

log = logging.getLogger(__name__)

CLOSE_AUTH = 4001
CLOSE_SLOW_CONSUMER = 4008
TRANSPORT = "websocket"


class WsSession:
    """One authenticated WebSocket of *user*."""

    def __init__(self, chat: ChatService, ws: web.WebSocketResponse, user: str,
                 transport: asyncio.BaseTransport | None) -> None:
        self.chat = chat
        self.ws = ws
        self.user = user
        self.conn_id = "ws:" + uuid.uuid4().hex[:16]
        self.listener: Listener | None = None
        self.sent_seq = 0  # newest event sent on this connection
        self._transport = transport
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def send_obj(self, obj: dict[str, Any]) -> None:
        data = encode(obj)
        self.chat.metrics.bytes_out.inc(len(data), transport=TRANSPORT)
        await self.ws.send_str(data.decode("utf-8"))

    async def error(self, exc: ApiError, frame: Any = None) -> None:
        body: dict[str, Any] = {"type": "error", **exc.body()}
        if isinstance(frame, dict) and isinstance(frame.get("client_msg_id"), str):
            body["client_msg_id"] = frame["client_msg_id"]
        await self.send_obj(body)

    # --- main loop ---------------------------------------------------------------
    async def run(self) -> None:
        await self.chat.presence.touch(self.user, self.conn_id)
        stop = asyncio.Event()
        heartbeat = asyncio.create_task(
            run_every(stop, self.chat.config.presence_heartbeat_s, self._touch, "presence heartbeat"),
            name=f"presence-heartbeat-{self.conn_id}")
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    self.chat.metrics.traffic(TRANSPORT, len(msg.data.encode("utf-8")), 0)
                    await self._frame(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self.error(bad_request("binary frames are not accepted: send JSON text"))
                else:  # CLOSE / ERROR
                    break
        finally:
            # Stopped by event as well as by cancel: a cancel that lands inside a Redis call
            # can be swallowed (fakeredis reads through asyncio.wait_for, which on CPython
            # 3.11 may drop a cancel that races a reply), and a heartbeat that went on
            # touching would keep a closed connection online forever.
            if self.listener is not None:
                self.chat.hub.detach(self.listener)  # the writer's queue returns None from now on
            await stop_all(stop, [heartbeat, *(t for t in (self._writer,) if t)])
            with contextlib.suppress(Exception):
                await self.chat.presence.leave(self.user, self.conn_id)

    async def _touch(self) -> None:
        """One presence heartbeat. A failure (Redis away) is not this connection's problem:
        the next beat retries, and presence shows offline at worst; logged at debug level
        so that an outage does not log a traceback per connection per beat."""
        try:
            await self.chat.presence.touch(self.user, self.conn_id)
        except Exception:
            log.debug("presence heartbeat of %s failed", self.conn_id, exc_info=True)

    async def _frame(self, text: str) -> None:
        obj: Any = None
        try:
            obj = payloads.decode_json(text.encode("utf-8"))
            if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
                raise bad_request("expected a JSON object with a string 'type'")
            fields = {k: v for k, v in obj.items() if k != "type"}
            kind = obj["type"]
            if kind == "send":
                ack = await self.chat.send(self.user, payloads.parse_send(fields))
                await self.send_obj({"type": "ack", **ack})
            elif kind == "receipt":
                await self.chat.receipt(self.user, payloads.parse_receipt(fields))
            elif kind == "resume":
                await self._resume(fields)
            elif kind == "auth":
                raise bad_request("already authenticated")
            else:
                raise bad_request(f"type={kind!r}: expected send, receipt or resume")
        except ApiError as exc:
            await self.error(exc, obj)

    # --- resume and push ------------------------------------------------------------
    async def _resume(self, fields: dict[str, Any]) -> None:
        if self.listener is not None:
            raise bad_request("already resumed on this connection; reconnect to resume elsewhere")
        unknown = set(fields) - {"after"}
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(sorted(unknown))}")
        after_text = fields.get("after")
        if after_text is not None and not isinstance(after_text, str):
            raise bad_request("after: expected a cursor string or null")
        after: Cursor | None = payloads.parse_cursor(after_text)
        store = self.chat.store
        self.listener = Listener(self.user, self.conn_id, self.chat.config.ws_send_queue_bytes,
                                 on_overflow=self._overflowed)
        self.chat.hub.attach(self.listener)  # before reading: nothing committed from now on is missed
        recovered = True
        while True:
            page = await store.read_events(self.user, after, self.chat.config.poll_max_events)
            if isinstance(page, Expired):
                recovered = False
                self.sent_seq = page.current.seq
                break
            for event in page.events:
                await self.send_obj(event)
            self.chat.metrics.events_out.inc(len(page.events), transport=TRANSPORT)
            self.sent_seq = page.cursor.seq
            after = page.cursor
            if page.cursor.seq >= page.last_seq:
                break
        await self.send_obj({"type": "resumed", "recovered": recovered,
                             "cursor": str(Cursor(store.epoch, self.sent_seq))})
        self._writer = asyncio.create_task(self._push())

    async def _push(self) -> None:
        """Send queued live events in sequence order, filling gaps from the log."""
        assert self.listener is not None
        queue = self.listener.queue
        while True:
            item = await queue.get()
            if item is None:
                return
            seq, text, nbytes = item
            if seq <= self.sent_seq:
                continue
            if seq > self.sent_seq + 1:
                missing = await self.chat.store.events_between(self.user, self.sent_seq, seq - 1)
                if len(missing) != seq - 1 - self.sent_seq:  # trimmed meanwhile: cannot recover here
                    self._overflowed()
                    return
                for _, event in missing:
                    await self.send_obj(event)
            self.chat.metrics.bytes_out.inc(nbytes, transport=TRANSPORT)
            self.chat.metrics.events_out.inc(1, transport=TRANSPORT)
            await self.ws.send_str(text)
            self.sent_seq = seq

    def _overflowed(self) -> None:
        """The send queue is full: close 4008 (slow consumer). Runs at most once."""
        if self._closing is None:
            self.chat.metrics.slow_consumers.inc()
            self._closing = asyncio.create_task(self._close_slow())

    async def _close_slow(self) -> None:
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        try:
            async with asyncio.timeout(2.0):
                await self.ws.close(code=CLOSE_SLOW_CONSUMER, message=b"slow consumer")
        except Exception:
            # The peer reads nothing, not even the close frame: drop the TCP connection.
            if self._transport is not None:
                self._transport.abort()


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    chat = request.app[CHAT]
    cfg = chat.config
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
            chat.metrics.traffic(TRANSPORT, len(msg.data.encode("utf-8")), 0)
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
