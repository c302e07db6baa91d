"""Who is listening right now: open WebSockets (each with a bounded send queue) and
long polls waiting for their user's next event. In memory, per process.

The hub never decides what a user may see; it only moves events that the delivery
service already committed to the user's log. If anything is dropped here the log
still has it, and the client gets it on its next poll or resume.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

from chatcore import encode


class SendQueue:
    """A connection's bounded queue of encoded events, measured in bytes.

    :meth:`put` refuses (returns False) once the queued bytes would pass the limit;
    the connection is then a slow consumer and is closed (Centrifugo: 1 MB, close
    3008; ours is 4008). A single frame is accepted into an empty queue whatever its size.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.size = 0
        self.overflowed = False
        self.closed = False
        self._items: deque[tuple[int, str, int]] = deque()
        self._ready = asyncio.Event()

    def put(self, seq: int, text: str, nbytes: int) -> bool:
        if self.overflowed or (self._items and self.size + nbytes > self.limit):
            self.overflowed = True
            self._ready.set()
            return False
        self._items.append((seq, text, nbytes))
        self.size += nbytes
        self._ready.set()
        return True

    async def get(self) -> tuple[int, str, int] | None:
        """The next ``(seq, text, nbytes)``; None once the queue overflowed or was closed."""
        while not self._items and not (self.overflowed or self.closed):
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed or self.closed:
            return None
        item = self._items.popleft()
        self.size -= item[2]
        return item

    def close(self) -> None:
        """Wake a waiting :meth:`get` so it returns None."""
        self.closed = True
        self._ready.set()


class Listener:
    """One open WebSocket of *user*: the hub feeds its :class:`SendQueue`."""

    def __init__(self, user: str, conn_id: str, limit_bytes: int,
                 on_overflow: Callable[[], None] | None = None) -> None:
        self.user = user
        self.conn_id = conn_id
        self.queue = SendQueue(limit_bytes)
        #: Called once when the send queue overflows: the connection must be closed.
        self.on_overflow = on_overflow


class Hub:
    """Routes committed events to the user's open WebSockets and wakes its long polls."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
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
        listener.queue.close()

    def listeners(self) -> list[Listener]:
        return [l for group in self._listeners.values() for l in group]

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
    def publish(self, user: str, events: list[tuple[int, dict[str, Any]]]) -> int:
        """Hand *user*'s newly committed events to every live connection of the user.
        Returns how many connections received them."""
        for fut in self._waiters.pop(user, ()):
            if not fut.done():
                fut.set_result(None)
        group = self._listeners.get(user)
        if not group:
            return 0
        frames = []
        for seq, event in events:
            data = encode(event)
            frames.append((seq, data.decode("utf-8"), len(data)))
        for listener in list(group):
            if listener.queue.overflowed:
                continue  # already being closed
            for seq, text, n in frames:
                if not listener.queue.put(seq, text, n):
                    if listener.on_overflow is not None:
                        listener.on_overflow()
                    break
        return len(group)

    def close(self) -> None:
        """Server shutdown: wake every long poll and stop every send queue."""
        self.closing = True
        for group in self._waiters.values():
            for fut in group:
                if not fut.done():
                    fut.set_result(None)
        self._waiters.clear()
        for listener in self.listeners():
            listener.queue.close()
