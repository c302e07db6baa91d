"""HTTP connection bookkeeping: a keep-alive connection, a client's pool of them for uploads,
and the one process that ends held long polls at their timeout."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Generator

import simpy

if TYPE_CHECKING:
    from .recorder import Recorder

Proc = Generator[simpy.Event, object, None]


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
