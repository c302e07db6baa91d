"""What both HTTP transports share: keep-alive connection bookkeeping, a client's pool of them
for uploads, the one process that ends held long polls at their timeout, and
:class:`HttpClient` (uploads as POSTs, poll responses, the session's connections)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import simpy

from chatcore.states import ConnectionState as CS

from ..clients import MSG, Client, LogEvent, Proc, Upload

if TYPE_CHECKING:
    from ..model import ChatModel
    from ..recorder import Recorder


class HttpConnection:
    """Keep-alive bookkeeping of one client's HTTP connection: it closes after
    ``http_keepalive_s`` idle, and the next request opens a new one."""

    __slots__ = ("opened", "idle_since", "busy")

    def __init__(self) -> None:
        self.opened = -1.0
        self.idle_since = 0.0
        self.busy = 0

    def acquire(self, now: float, keepalive: float, rec: Recorder) -> bool:
        """Use the connection for a request sent at *now*; True if it had to be opened."""
        new = False
        if self.opened < 0.0:
            new = True
        elif self.busy == 0 and now - self.idle_since > keepalive:
            rec.connection(self.opened, self.idle_since + keepalive)
            new = True
        if new:
            self.opened = now
        self.busy += 1
        return new

    def release(self, now: float) -> None:
        self.busy -= 1
        if self.busy == 0:
            self.idle_since = now

    def close(self, end: float, keepalive: float, rec: Recorder) -> None:
        if self.opened >= 0.0:
            closes = end if self.busy else min(end, self.idle_since + keepalive)
            rec.connection(self.opened, max(closes, self.opened))


class HttpPool:
    """A client's keep-alive connections for uploads (sends and receipts).

    HTTP/1.1 carries one request at a time on a connection, and the client can reuse it
    only once the response has arrived, so an upload that finds every connection busy
    opens another and pays the TCP connect. An idle one is reused longest-idle first
    (aiohttp's pool since 3.11, which the reference client uses), and one idle longer than
    ``http_keepalive_s`` is closed. Connections are not told apart: which one a request
    takes does not change how many are open at any time."""

    __slots__ = ("idle", "busy")

    def __init__(self) -> None:
        self.idle: list[tuple[float, float]] = []  # (free at the client since, opened)
        self.busy: list[float] = []  # opened times of the connections carrying a request

    def acquire(self, now: float, keepalive: float, rec: Recorder) -> bool:
        """Take a connection for a request sent at *now*; True if it had to be opened."""
        expired = [c for c in self.idle if now - c[0] > keepalive]
        if expired:
            for since, opened in expired:
                rec.connection(opened, since + keepalive)  # timed out while idle
            self.idle = [c for c in self.idle if now - c[0] <= keepalive]
        free = [c for c in self.idle if c[0] <= now]  # not those whose answer is still on the way
        if free:
            longest_idle = min(free)
            self.idle.remove(longest_idle)
            self.busy.append(longest_idle[1])
            return False
        self.busy.append(now)
        return True

    def release(self, free_at: float) -> None:
        """The response to a request arrives at the client at *free_at*."""
        self.idle.append((free_at, self.busy.pop()))

    def close(self, end: float, keepalive: float, rec: Recorder) -> None:
        for opened in self.busy:
            rec.connection(opened, end)
        for since, opened in self.idle:
            rec.connection(opened, max(opened, min(end, since + keepalive)))


class LongPollExpiry:
    """Ends held long polls after ``long_poll_timeout_s``. Every hold lasts the same
    time, so deadlines come in the order holds start: one queue and one process
    replace a timeout event per held request (holds answered early are skipped)."""

    def __init__(self, env: simpy.Environment, hold_s: float):
        self.env, self.hold_s = env, hold_s
        self.queue: deque[tuple[float, simpy.Event]] = deque()
        self.idle: simpy.Event | None = None
        env.process(self._run())

    def hold(self, now: float, waiter: simpy.Event) -> None:
        self.queue.append((now + self.hold_s, waiter))
        if self.idle is not None and not self.idle.triggered:
            self.idle.succeed()

    def _run(self) -> Proc:
        env, queue = self.env, self.queue
        while True:
            while queue and queue[0][1].triggered:
                queue.popleft()
            if not queue:
                self.idle = env.event()
                yield self.idle
                self.idle = None
                continue
            deadline, waiter = queue[0]
            if deadline > env.now:
                yield env.timeout(deadline - env.now)
            while queue and queue[0][0] <= env.now:
                _, w = queue.popleft()
                if not w.triggered:
                    w.succeed()


class HttpClient(Client):
    """Polls on one keep-alive connection; sends messages and receipts as POSTs from a pool
    of them (:class:`HttpPool`). Its session begins when the user's app starts."""

    __slots__ = ("upload_pool", "recv_conn", "polling_since")

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.upload_pool = HttpPool()  # sends and receipts
        self.recv_conn = HttpConnection()  # polls: one at a time
        self.polling_since = -1.0  # arrival of the poll the server is working on or holding

    def connect_retries(self) -> int:
        return 1 if self.m.sc.http_retry_once else 0

    def start(self) -> None:
        """The app starts: the first request opens the session (no separate connect)."""
        self.move(CS.CONNECTING)
        self.move(CS.CONNECTED)
        self.begin(self.server, float(self.m.wl.start_time[self.idx]))
        self.m.delivery.opened(self)

    def upload(self, kind: int, body: int) -> Upload:
        m = self.m
        env = m.env
        server = self.server
        new = self.upload_pool.acquire(env.now, m.keepalive_s, m.rec)
        delay = m.net.delay() + (m.net.connect_delay() if new else 0.0)
        yield env.timeout(delay)
        if self.lost:
            return None  # into a dead server or a cut network: no answer
        now = env.now
        if kind == MSG:
            m.rec.up("send", now, m.req_hdr, body)
            cost = m.c_http_send
        else:
            m.rec.up("receipt", now, m.req_hdr, body)
            cost = m.c_http_receipt
        ok = yield from server.work("send" if kind == MSG else "receipt", cost + (m.c_handshake if new else 0.0))
        return now if ok else None

    def acked(self, kind: int, arrived: float, session: int) -> None:
        m = self.m
        now = m.env.now
        m.rec.down("send" if kind == MSG else "receipt", now, m.resp_hdr,
                   m.sizes.ack if kind == MSG else m.receipt_ack_bytes)
        m.rec.held(arrived, now)
        self.upload_pool.release(now + m.net.delay())  # reusable once the answer reaches the client

    def finish(self, end: float) -> None:
        if self.polling_since >= 0.0:  # still held when the run ends
            self.m.rec.held(self.polling_since, end)
        self.upload_pool.close(end, self.m.keepalive_s, self.m.rec)
        self.recv_conn.close(end, self.m.keepalive_s, self.m.rec)

    def on_lost(self, t: float) -> None:
        if self.polling_since >= 0.0:  # the held or served request ends with the server
            self.m.rec.held(self.polling_since, t)
            self.polling_since = -1.0

    def end_session(self, t: float) -> None:
        m = self.m
        self.upload_pool.close(t, m.keepalive_s, m.rec)
        self.recv_conn.close(t, m.keepalive_s, m.rec)
        self.upload_pool = HttpPool()
        self.recv_conn = HttpConnection()

    def resume(self) -> None:
        # the reconnect opened a connection: the next poll goes out on it
        now = self.m.env.now
        self.recv_conn.opened = now
        self.recv_conn.idle_since = now
        super().resume()

    def respond(self, name: str, arrived: float) -> list[LogEvent]:
        """Write a poll response with every pending event; return the events."""
        m = self.m
        now = m.env.now
        events = self.inbox
        self.inbox = []
        size = 0
        for ev in events:
            size += ev.size
        m.rec.down(name, now, m.resp_hdr, m.sizes.poll_body(size, len(events)))
        m.rec.poll_response(now, len(events))
        m.rec.held(arrived, now)
        self.polling_since = -1.0
        self.recv_conn.release(now)
        return events
