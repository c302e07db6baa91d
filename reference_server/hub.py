"""Who is listening right now: open WebSockets and long polls waiting for their user's
next event. In memory, per process.

The hub never decides what a user may see; it only moves events that the delivery
service already committed to the user's log. If anything is dropped here the log
still has it, and the client gets it on its next poll or resume.

WebSocket frames are written straight to the connection's transport by a
:class:`Sink`, without a writer task or a queue per connection: every frame a
connection gets in one event-loop turn (acks, events) goes out in one ``write``. The
transport's own buffer is the bounded send queue: past ``limit`` bytes the peer is a
slow consumer and is closed (4008; Centrifugo: 1 MB, close 3008).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack


def text_frame_header(n: int) -> bytes:
    """RFC 6455 section 5.2 header of an unmasked, final text frame of *n* payload bytes
    (a server never masks)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return _LEN2(0x81, 126, n)
    return _LEN8(0x81, 127, n)


class Flusher:
    """Writes every dirty :class:`Sink` once at the end of the current event-loop turn."""

    def __init__(self) -> None:
        self._dirty: list[Sink] = []
        self._scheduled = False

    def mark(self, sink: "Sink") -> None:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for sink in dirty:
            sink.flush()


class Sink:
    """The outgoing side of one WebSocket: text frames, coalesced per loop turn.

    *transport* is the connection's asyncio transport. *on_overflow* is called once when
    the bytes waiting in the transport pass *limit* (the peer does not read).
    *send_slow*, when given, replaces the direct write (permessage-deflate: the frames
    must go through aiohttp's compressor, in order).
    """

    __slots__ = ("transport", "limit", "on_overflow", "closed", "sent_bytes", "pending_bytes", "_buf", "_flusher",
                 "_slow")

    def __init__(self, transport: asyncio.BaseTransport | None, limit: int, flusher: Flusher,
                 on_overflow: Callable[[], None],
                 send_slow: Callable[[list[bytes]], None] | None = None) -> None:
        self.transport: Any = transport
        self.limit = limit
        self.on_overflow = on_overflow
        self.closed = False
        self.sent_bytes = 0
        self.pending_bytes = 0
        self._buf: list[bytes] = []
        self._flusher = flusher
        self._slow = send_slow

    def send(self, payload: bytes) -> None:
        """Queue one text frame (*payload*: UTF-8 JSON) for this turn's write."""
        if self.closed:
            return
        if not self._buf:
            self._flusher.mark(self)
        self._buf.append(payload)
        self.sent_bytes += len(payload)
        self.pending_bytes += len(payload)

    def buffered(self) -> int:
        """Bytes queued here or waiting in the transport for the peer to read."""
        transport = self.transport
        return self.pending_bytes + (transport.get_write_buffer_size() if transport is not None else 0)

    async def drain(self, below: int, timeout_s: float) -> bool:
        """Write what is queued and wait until fewer than *below* bytes wait for the peer;
        False when that took longer than *timeout_s* (a slow consumer) or the sink closed."""
        self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.closed and self.buffered() >= below:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.005)
        return not self.closed

    def flush(self) -> None:
        frames, self._buf = self._buf, []
        self.pending_bytes = 0
        if not frames:
            return
        if self._slow is not None:
            self._slow(frames)
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            self.closed = True
            return
        parts = []
        for payload in frames:
            parts.append(text_frame_header(len(payload)))
            parts.append(payload)
        transport.write(b"".join(parts))
        if not self.closed and transport.get_write_buffer_size() > self.limit:
            self.closed = True
            self.on_overflow()

    def stop(self) -> None:
        """Accept no new frame; those already queued are still written (before a close frame)."""
        self.closed = True

    def close(self) -> None:
        """No frame is written after this, not even those queued (the connection has ended)."""
        self.closed = True
        self._buf = []
        self.pending_bytes = 0


class Listener:
    """One open, resumed WebSocket of *user*. Live events reach it in sequence order; any
    it has already sent (``seq <= sent_seq``) are skipped.

    While the session reads the log (the replay of a resume, or filling a gap) the listener
    is ``replaying``: live events are not kept, only the newest sequence number among them
    (``live_seq``); they are committed, so the session reads them from the log too and goes
    live once it has sent up to ``live_seq``. Nothing is buffered per connection but what
    the socket itself holds.
    """

    __slots__ = ("user", "sink", "sent_seq", "replaying", "live_seq", "on_gap")

    def __init__(self, user: str, sink: Sink, on_gap: Callable[[], None]) -> None:
        self.user = user
        self.sink = sink
        self.sent_seq = 0
        self.replaying = True
        self.live_seq = 0
        #: Called when a live event skips ahead of ``sent_seq + 1`` (committed out of push
        #: order): the session reads the gap from the log (``replaying`` is set first).
        self.on_gap = on_gap

    def deliver(self, events: list[tuple[int, bytes]]) -> int:
        """Send *events* (or note them while replaying); returns how many were sent (their
        bytes are added to ``sink.sent_bytes``)."""
        if self.replaying:
            self.live_seq = max(self.live_seq, events[-1][0])
            return 0
        sent = 0
        for seq, data in events:
            if seq <= self.sent_seq:
                continue
            if seq != self.sent_seq + 1:  # a gap: read it (and the rest) from the log
                self.replaying = True
                self.live_seq = max(self.live_seq, events[-1][0])
                self.on_gap()
                return sent
            self.sink.send(data)
            self.sent_seq = seq
            sent += 1
        return sent


class Hub:
    """Routes committed events to the user's open WebSockets and wakes its long polls."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.flusher = Flusher()
        #: Live events written to WebSockets, and their bytes (for /metrics).
        self.events_pushed = 0
        self.bytes_pushed = 0
        #: Set at shutdown: long polls answer at once instead of waiting again.
        self.closing = False

    # --- WebSockets ------------------------------------------------------------
    def attach(self, listener: Listener) -> None:
        self._listeners.setdefault(listener.user, set()).add(listener)

    def detach(self, listener: Listener) -> None:
        group = self._listeners.get(listener.user)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.user]
        listener.sink.close()

    def listeners(self) -> list[Listener]:
        return [l for group in self._listeners.values() for l in group]

    def local_users(self) -> list[str]:
        """Users with at least one open WebSocket here."""
        return list(self._listeners)

    # --- long polls ------------------------------------------------------------------
    def waiter(self, user: str) -> asyncio.Future[None]:
        """A future resolved at the user's next event. Take it *before* reading the log,
        so an event committed between the read and the wait is not missed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(user, set()).add(fut)
        return fut

    def drop_waiter(self, user: str, fut: asyncio.Future[None]) -> None:
        group = self._waiters.get(user)
        if group is not None:
            group.discard(fut)
            if not group:
                del self._waiters[user]

    # --- delivery ----------------------------------------------------------------------
    def publish(self, user: str, events: list[tuple[int, bytes]]) -> int:
        """Hand *user*'s newly committed events (``(seq, encoded event)``, in sequence order)
        to every live connection of the user. Returns how many WebSockets got them."""
        waiters = self._waiters.pop(user, None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        group = self._listeners.get(user)
        if not group:
            return 0
        for listener in group:
            sink = listener.sink
            before = sink.sent_bytes
            self.events_pushed += listener.deliver(events)
            self.bytes_pushed += sink.sent_bytes - before
        return len(group)

    def close(self) -> None:
        """Server shutdown: wake every long poll and stop every WebSocket's output."""
        self.closing = True
        for group in self._waiters.values():
            for fut in group:
                if not fut.done():
                    fut.set_result(None)
        self._waiters.clear()
        for listener in self.listeners():
            listener.sink.close()
