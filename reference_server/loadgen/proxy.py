"""A counting, delaying TCP proxy between load-generator clients and the server.

Every byte that crosses it is counted per direction at the socket level, and split
into *overhead* (HTTP request/status lines and headers, WebSocket frame headers,
the WebSocket opening handshake) and *payload* (HTTP bodies, WebSocket frame
payloads), per class of request or frame, with the same class names as the
simulation (``poll``, ``longpoll``, ``send``, ``receipt``, ``handshake``,
``ws_send``, ``ws_receipt``, ``ws_event``, ``ws_ack``, ``ping``, ``pong``; anything
else, e.g. login or the WebSocket ``auth`` frame, is ``other``).

Each chunk is delayed by ``rtt_ms / 2`` in each direction, in order and without
limiting throughput (a reader task stamps chunks, a writer task releases them at
their due time), and the first bytes of a new connection wait one extra round trip
(the TCP handshake); a connection the server refuses is reset one round trip after it
was opened. Loopback then behaves like a link with that round trip.

The parsers assume what the reference client sends: HTTP/1.1 without pipelining,
bodies sized by Content-Length, and WebSocket text frames after a 101 response.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from chatcore.tables import DOWN, OVH_DOWN, OVH_UP, PAY_DOWN, PAY_UP, TRAFFIC_COUNTERS, UP

_HTTP_CLASSES = {("GET", "/api/poll"): "poll", ("GET", "/api/longpoll"): "longpoll",
                 ("POST", "/api/messages"): "send", ("POST", "/api/receipts"): "receipt",
                 ("GET", "/ws"): "handshake"}


@dataclass
class Counters:
    """Counts since the proxy started; ``window`` decides what is counted in the
    measurement window (a callable of the monotonic time)."""

    in_window: Callable[[float], bool] = lambda t: True
    bin_of: Callable[[float], int] = lambda t: 0
    classes: dict[str, list[int]] = field(default_factory=dict)
    #: per bin: [requests_up, overhead_up, payload_up, overhead_down, payload_down]
    bins: dict[int, list[int]] = field(default_factory=dict)
    conn_intervals: list[list[float]] = field(default_factory=list)  # [opened, closed or inf]
    held_intervals: list[list[float]] = field(default_factory=list)   # HTTP request in flight
    poll_responses: int = 0
    empty_responses: int = 0
    #: in the window: how much later than due each delayed chunk went on (seconds; < 0 early)
    delay_excess: list[float] = field(default_factory=list)
    #: raw bytes through the proxy, parsed or not
    total_up: int = 0
    total_down: int = 0

    def add(self, cls: str, now: float, *, up: int = 0, down: int = 0, ovh_up: int = 0, pay_up: int = 0,
            ovh_down: int = 0, pay_down: int = 0) -> None:
        b = self.bins.get(self.bin_of(now))
        if b is None:
            b = self.bins[self.bin_of(now)] = [0, 0, 0, 0, 0]
        b[0] += up
        b[1] += ovh_up
        b[2] += pay_up
        b[3] += ovh_down
        b[4] += pay_down
        if not self.in_window(now):
            return
        c = self.classes.get(cls)
        if c is None:
            c = self.classes[cls] = [0] * TRAFFIC_COUNTERS
        c[UP] += up
        c[DOWN] += down
        c[OVH_UP] += ovh_up
        c[PAY_UP] += pay_up
        c[OVH_DOWN] += ovh_down
        c[PAY_DOWN] += pay_down


class _HttpParser:
    """One direction of one connection: counts HTTP messages, then WebSocket frames."""

    def __init__(self, conn: "_Conn", up: bool) -> None:
        self.conn, self.up = conn, up
        self.buf = bytearray()
        self.body_left = 0
        self.cls = "other"
        self.ws = False
        self.frame_need = 0  # bytes of a WebSocket frame payload still to skip (counted already)

    def feed(self, data: bytes, now: float) -> None:
        if self.body_left:  # fast path: the rest of an HTTP body
            n = min(self.body_left, len(data))
            self.body_left -= n
            self._count(0, n, now, 0)
            data = data[n:]
            if not self.body_left:
                self._done(now)
        if not data:
            return
        self.buf += data
        while self.buf:
            if self.ws:
                if not self._ws_frame(now):
                    return
            elif not self._http_head(now):
                return

    def _count(self, ovh: int, pay: int, now: float, msgs: int, cls: str | None = None) -> None:
        c = self.conn.counters
        name = cls or self.cls
        if self.up:
            c.add(name, now, up=msgs, ovh_up=ovh, pay_up=pay)
        else:
            c.add(name, now, down=msgs, ovh_down=ovh, pay_down=pay)

    # --- HTTP --------------------------------------------------------------------
    def _http_head(self, now: float) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end + 4])
        del self.buf[:end + 4]
        lines = head.split(b"\r\n")
        first = lines[0].decode("latin-1").split(" ")
        length = 0
        for line in lines[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:].strip() or 0)
        conn = self.conn
        if self.up:
            method, path = first[0], first[1].split("?", 1)[0] if len(first) > 1 else ""
            self.cls = _HTTP_CLASSES.get((method, path), "other")
            conn.pending.append((self.cls, now))
            self._count(len(head), 0, now, 1)
        else:
            self.cls, started = conn.pending.popleft() if conn.pending else ("other", now)
            self.started = started
            status = first[1] if len(first) > 1 else ""
            self._count(len(head), 0, now, 1)
            if status == "101":
                self.ws = True
                conn.upgraded()
                conn.counters.held_intervals.append([started, now])
                return True
        n = min(length, len(self.buf))
        self._count(0, n, now, 0)
        if not self.up and self.cls in ("poll", "longpoll") and n >= 12:
            conn.counters.poll_responses += 1
            if self.buf.startswith(b'{"events":[]'):
                conn.counters.empty_responses += 1
        del self.buf[:n]
        self.body_left = length - n
        if not self.body_left:
            self._done(now)
        return True

    def _done(self, now: float) -> None:
        if not self.up:
            self.conn.counters.held_intervals.append([self.started, now])

    # --- WebSocket (RFC 6455 section 5.2) -------------------------------------------
    def _ws_frame(self, now: float) -> bool:
        b = self.buf
        if len(b) < 2:
            return False
        opcode = b[0] & 0x0F
        masked = b[1] & 0x80
        n = b[1] & 0x7F
        head = 2
        if n == 126:
            if len(b) < 4:
                return False
            n = int.from_bytes(b[2:4], "big")
            head = 4
        elif n == 127:
            if len(b) < 10:
                return False
            n = int.from_bytes(b[2:10], "big")
            head = 10
        if masked:
            head += 4
        if len(b) < head + n:
            return False
        payload = bytes(b[head:head + n])
        if masked:
            key = b[head - 4:head]
            start = bytes(p ^ key[i % 4] for i, p in enumerate(payload[:16]))
        else:
            start = payload[:16]
        del b[:head + n]
        if opcode == 0x9:
            cls = "ping"
        elif opcode == 0xA:
            cls = "pong"
        elif opcode == 0x1:
            kind = start[9:16] if start.startswith(b'{"type":"') else b""
            if self.up:
                cls = "ws_send" if kind.startswith(b"send") else "ws_receipt" if kind.startswith(b"receipt") \
                    else "other"
            else:
                cls = "ws_event" if kind.startswith((b"message", b"receipt", b"presenc")) else \
                    "ws_ack" if kind.startswith(b"ack") else "other"
        else:
            cls = "other"
        self._count(head, n, now, 1, cls)
        return True


class _Conn:
    def __init__(self, counters: Counters, opened: float) -> None:
        self.counters = counters
        self.pending: deque[tuple[str, float]] = deque()
        self.interval = [opened, float("inf")]
        counters.conn_intervals.append(self.interval)
        self.up = _HttpParser(self, True)
        self.down = _HttpParser(self, False)

    def upgraded(self) -> None:
        self.up.ws = True


class CountingProxy:
    """``await start()`` listens on 127.0.0.1 (a free port unless given) and forwards to
    *target*; ``counters`` holds what was seen; ``await stop()`` closes everything."""

    def __init__(self, target_host: str, target_port: int, rtt_ms: float = 0.0, port: int = 0,
                 counters: Counters | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = (target_host, target_port)
        self.delay = max(0.0, rtt_ms) / 2000.0
        self.port = port
        self.counters = counters or Counters()
        self.clock = clock
        #: how much before its due time a delayed chunk's wake-up is set (seconds), learnt from
        #: how late the wake-ups came (:meth:`_release`)
        self.early = 0.0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "CountingProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def retarget(self, port: int) -> None:
        """New connections go to *port* from now on (a restarted server)."""
        self.target = (self.target[0], port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        # Cancelled only by stop(): swallow it, or asyncio (3.11) logs the cancelled
        # connection task as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(c_reader, c_writer)

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        opened = self.clock()
        conn = _Conn(self.counters, opened)
        self._writers.add(c_writer)
        s_writer = None
        try:
            try:
                s_reader, s_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5.0)
            except (OSError, asyncio.TimeoutError):
                # The server is down: the client sees a reset, one round trip after its
                # connect (its SYN out, the RST back), as on a real link.
                await asyncio.sleep(max(0.0, opened + 2 * self.delay - self.clock()))
                c_writer.transport.abort()
                return
            self._writers.add(s_writer)
            # The TCP handshake costs one round trip before the first request can leave.
            first_at = opened + 2 * self.delay
            pipes = [asyncio.create_task(self._pipe(c_reader, s_writer, conn.up, True, first_at)),
                     asyncio.create_task(self._pipe(s_reader, c_writer, conn.down, False, 0.0))]
            try:
                # Either side closing (after what it sent was delivered) closes both, as a
                # server that dies resets its clients' connections.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pipes:
                    p.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            conn.interval[1] = self.clock()
            for w in (c_writer, s_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: _HttpParser,
                    up: bool, not_before: float) -> None:
        """Copy reader -> writer, delayed by the one-way delay; count up at delivery to the
        server and down when the server writes, as the simulation does."""
        delay = self.delay
        queue: asyncio.Queue[tuple[float, bytes]] | None = asyncio.Queue() if delay > 0 else None
        writer_task = asyncio.create_task(self._release(queue, writer, parser, up)) if queue else None
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    data = b""
                now = self.clock()
                if up:
                    self.counters.total_up += len(data)
                else:
                    self.counters.total_down += len(data)
                if not up and data:
                    parser.feed(data, now)
                if queue is None:
                    if not data:
                        break
                    if up:
                        parser.feed(data, now)
                    writer.write(data)
                    try:
                        await writer.drain()
                    except (ConnectionError, OSError):
                        break
                    continue
                queue.put_nowait((max(now + delay, not_before + delay), data))
                if not data:
                    break
            if writer_task is not None:
                await writer_task
        finally:
            if writer_task is not None and not writer_task.done():
                writer_task.cancel()

    async def _release(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter,
                       parser: _HttpParser, up: bool) -> None:
        """Send each chunk on at its due time. An asyncio sleep wakes late: epoll's timeout is
        rounded up to the next millisecond (0.5 ms late on average on an idle loop), and a
        busy loop (clients and proxy share it) runs the wake-up later still; on the way to the
        server and back that was 1-2 ms added to every message that the emulated network does
        not have. So each wake-up is set ``early`` before its due time, ``early`` following the
        lateness seen (an exponential average, 0-3 ms): the delay is right on average, each
        chunk within about half a millisecond either way; ``counters.delay_excess`` keeps how
        far off each one was."""
        while True:
            due, data = await queue.get()
            wait = due - self.early - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
                late = self.clock() - due
                self.early = min(0.003, max(0.0, self.early + 0.05 * late))
                if self.counters.in_window(due):
                    self.counters.delay_excess.append(late)
            elif self.counters.in_window(due):
                self.counters.delay_excess.append(self.clock() - due)
            if not data:
                return
            if up:
                parser.feed(data, self.clock())
            writer.write(data)
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                return
