"""Admission control: refuse a send the system cannot deliver in time, instead of
acknowledging it and letting every queue grow (the collapse a server without it shows
past saturation: acks keep coming, delivery falls to nothing).

Three signals, each with a bound in :class:`~reference_server.config.ServerConfig`:

* **delivery lag**: how long the oldest item accepted by this process has waited for
  its fan-out (committed, queued, not yet in the recipients' logs); in a cluster, until a
  consumer takes it, and then in the process whose consumer took it until its fan-out
  commits (``delivery.py``);
* **commit wait**: how long the oldest write has waited for its group commit;
* **event-loop lag**: how late a timer that should fire every ``loop_probe_ms`` fires;
  on one core this is the first sign that the process has more work than CPU.

Past any bound a send (or receipt) is answered ``429 overloaded`` (an ``error`` frame on
a WebSocket) with ``retry_after_ms``, before anything is stored; the client backs off
with jitter and resends with the same ``client_msg_id``. Reads, polls and connections
are not refused here: they do not grow the backlog, and a client that cannot read
cannot catch up.

**Light writers first.** The signals are the server's, but the load is not everyone's: a
user who has written little recently (a decayed rate at most ``light_rate_per_s``, that is
``admission_light_share`` of the per-user rate limit, a quarter by default, and at most
half the mean rate of the recent writers) is held to bounds ``LIGHT_FACTOR`` times
higher, so past saturation the heavy writers are refused first and a bystander chatting
at a human pace is still admitted. If light writers alone overload the server, the lag
rises to the higher bound and they are refused too: it still degrades, never collapses.
(``tests/server/test_faults.py``: without this rule, a bystander beside 100 senders at
their rate limits was refused like them and waited seconds for ``retry_after_ms``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from .clock import Clock
from .errors import ApiError

#: A light writer's bounds are this many times the configured ones.
LIGHT_FACTOR = 4.0
#: The time constant (seconds) of each writer's decayed rate.
RATE_WINDOW_S = 2.0


class LoopMonitor:
    """Measures event-loop lag: a timer due every *interval_s* records how late it ran.
    ``lag`` is the worst lateness seen in the last two periods (so one late turn is not
    forgotten before the next check, and one good turn does not hide a backlog)."""

    def __init__(self, clock: Clock, interval_s: float = 0.025) -> None:
        self.clock = clock
        self.interval_s = interval_s
        self.lag = 0.0
        self._prev = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due = self.clock.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            late = max(0.0, self.clock.monotonic() - due)
            self.lag, self._prev = max(late, self._prev), late


class Admission:
    """Decides whether a new write may enter. *delivery_age*, *commit_age* and
    *loop_lag* return seconds (see the module docstring)."""

    def __init__(self, clock: Clock, *, max_delivery_lag_s: float, max_commit_wait_s: float,
                 max_loop_lag_s: float, delivery_age: Callable[[float], float],
                 commit_age: Callable[[float], float], loop_lag: Callable[[], float],
                 light_rate_per_s: float | None = None) -> None:
        self.clock = clock
        #: Writers at or under this decayed rate get the higher bounds (None: no one).
        self.light_rate_per_s = light_rate_per_s
        #: user -> (decayed count of writes, when it was last updated).
        self._recent: dict[str, tuple[float, float]] = {}
        #: Everyone's writes, decayed the same way, and when that was last updated.
        self._total = 0.0
        self._total_stamp = 0.0
        self._checks = 0
        self.max_delivery_lag_s = max_delivery_lag_s
        self.max_commit_wait_s = max_commit_wait_s
        self.max_loop_lag_s = max_loop_lag_s
        self._delivery_age = delivery_age
        self._commit_age = commit_age
        self._loop_lag = loop_lag
        #: Refusals so far, by the signal that decided (for /metrics).
        self.refused: dict[str, int] = {"delivery_lag": 0, "commit_wait": 0, "loop_lag": 0}

    def rate_of(self, user: str, now: float | None = None) -> float:
        """*user*'s recent writes per second (decayed over ``RATE_WINDOW_S``)."""
        count, stamp = self._recent.get(user, (0.0, 0.0))
        now = self.clock.monotonic() if now is None else now
        return count * math.exp(-(now - stamp) / RATE_WINDOW_S) / RATE_WINDOW_S

    def _count(self, user: str, now: float) -> bool:
        """Count one write by *user*; True if *user* was a light writer before it: at most
        ``light_rate_per_s``, and at most half the mean rate of the recent writers (so that
        when everyone writes at the same pace, no one is lighter than the others)."""
        mine = self.rate_of(user, now) * RATE_WINDOW_S
        self._total = self._total * math.exp(-(now - self._total_stamp) / RATE_WINDOW_S)
        self._total_stamp = now
        mean = self._total / max(1, len(self._recent))
        light = mine / RATE_WINDOW_S <= (self.light_rate_per_s or 0.0) and mine <= 0.5 * mean
        self._recent[user] = (mine + 1.0, now)
        self._total += 1.0
        self._checks += 1
        if self._checks % 1024 == 0:  # forget writers whose count has decayed away
            self._recent = {u: v for u, v in self._recent.items() if self.rate_of(u, now) * RATE_WINDOW_S > 0.05}
        return light

    def check(self, user: str | None = None) -> None:
        """Raise ``429 overloaded`` when any signal is past its bound (``LIGHT_FACTOR`` times
        it for a light writer, when *user* is given and the rule is on)."""
        now = self.clock.monotonic()
        scale = 1.0
        if user is not None and self.light_rate_per_s is not None and self._count(user, now):
            scale = LIGHT_FACTOR
        for signal, value, bound in (("delivery_lag", self._delivery_age(now), self.max_delivery_lag_s * scale),
                                     ("commit_wait", self._commit_age(now), self.max_commit_wait_s * scale),
                                     ("loop_lag", self._loop_lag(), self.max_loop_lag_s * scale)):
            if value > bound:
                self.refused[signal] += 1
                # Come back after about the time the backlog needs to drain, within limits.
                retry_ms = int(min(5000.0, max(200.0, 2000.0 * value)))
                raise ApiError(429, "overloaded",
                               f"server overloaded ({signal.replace('_', ' ')} {value * 1000:.0f} ms > "
                               f"{bound * 1000:.0f} ms): resend the same client_msg_id after retry_after_ms",
                               retry_after_ms=retry_ms)
