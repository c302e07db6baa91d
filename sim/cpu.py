"""The server CPU: a :class:`simpy.Resource` of ``server_cores`` that schedules fewer events.

A plain ``Resource`` puts two events on SimPy's queue for every use, even uncontended:
the :class:`~simpy.resources.resource.Request` (scheduled although it is granted at
once) and the :class:`~simpy.resources.resource.Release` (scheduled although nothing
waits for it). ``Cpu`` skips both when a core is free, and the Release when a use
queued. The model makes millions of short CPU uses, so those events were about a third
of its run time (``make bench``, docs/PERFORMANCE.md).

:meth:`Cpu.acquire` and :meth:`Cpu.free` keep the Resource's semantics and skip those
events:

* ``acquire()`` takes a free core at once and returns None (nothing scheduled); when
  every core is busy it returns an ordinary ``Request``, queued FIFO behind the others,
  for the caller to ``yield``.
* ``free(grant)`` removes the user and, if requests are queued, grants the head at the
  same simulated instant, as a Release's callback would.

A queued request is granted at the instant a plain Resource grants it, in the same FIFO
order, and no process ever waited on the skipped events. One thing differs by design:
``free()`` grants the head of the queue at once, where a plain Resource does it when
the Release event is processed, later *within the same instant*; a process woken by an
event scheduled in between could then run in the other order. The model's runs, with
exponential and with deterministic service times, come out identical table by table
(tests/sim/test_cpu.py). ``users``, ``queue``, ``count`` and ``capacity`` mean what they
mean on any Resource; ``request()`` and ``release()`` still work beside
``acquire``/``free`` (``acquire`` never takes a core ahead of a queued request).
"""

from __future__ import annotations

import simpy
from simpy.resources.resource import Request


class _Granted:
    """Stands in ``Cpu.users`` for a core taken by :meth:`Cpu.acquire` without a Request."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<core taken without a Request event>"


_GRANTED = _Granted()


class Cpu(simpy.Resource):
    """``server_cores`` cores, FIFO; see the module docstring."""

    def acquire(self) -> Request | None:
        """Take a core: None if one was free (taken now), else a queued Request to yield."""
        if len(self.users) < self.capacity and not self.put_queue:  # never ahead of a queued request
            self.users.append(_GRANTED)  # type: ignore[arg-type]  # a core taken without a Request
            return None
        return self.request()

    def free(self, grant: Request | None) -> None:
        """Give back the core taken by :meth:`acquire` (*grant* is what it returned)."""
        self.users.remove(_GRANTED if grant is None else grant)  # type: ignore[arg-type]
        if self.put_queue:
            self._trigger_put(None)
