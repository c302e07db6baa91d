"""The server CPU: a :class:`simpy.Resource` of ``server_cores`` that schedules fewer events.

A plain ``Resource`` puts two events on SimPy's queue for every use, even uncontended:
the :class:`~simpy.resources.resource.Request` (scheduled although it is granted at
once) and the :class:`~simpy.resources.resource.Release` (scheduled although nothing
waits for it). The model makes millions of short CPU uses, nearly all uncontended, so
those two events were about a third of its run time (``make bench``,
docs/PERFORMANCE.md).

:meth:`Cpu.acquire` and :meth:`Cpu.free` keep the Resource's semantics and skip those
events:

* ``acquire()`` takes a free core at once and returns None (nothing scheduled); when
  every core is busy it returns an ordinary ``Request``, queued FIFO behind the others,
  for the caller to ``yield``.
* ``free(grant)`` removes the user and, if requests are queued, grants the head at the
  same simulated instant, as a Release's callback would.

A queued request is granted exactly when a plain Resource grants it (the same instant,
FIFO), and no process ever waited on the skipped events, so a run's results are
identical to a plain Resource's (tests/sim/test_cpu.py). ``users``, ``queue``,
``count`` and ``capacity`` mean what they mean on any Resource; ``request()`` and
``release()`` still work and may be mixed with ``acquire``/``free``.
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
        if len(self.users) < self.capacity:  # queued requests exist only while every core is busy
            self.users.append(_GRANTED)
            return None
        return self.request()

    def free(self, grant: Request | None) -> None:
        """Give back the core taken by :meth:`acquire` (*grant* is what it returned)."""
        self.users.remove(_GRANTED if grant is None else grant)
        if self.put_queue:
            self._trigger_put(None)
