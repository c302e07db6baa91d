"""Time, injected: the server's rules (presence TTLs, rate limits, token expiry,
admission control) ask a :class:`Clock` instead of the ``time`` module, so their tests
drive a :class:`FakeClock` and never sleep against a TTL.
"""

from __future__ import annotations

import time


class Clock:
    """The real clocks: wall time for timestamps that leave the process, monotonic time
    for durations."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (message ``sent_at``, presence scores, expiry)."""
        return int(time.time() * 1000)

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (rate limits, ages, lags)."""
        return time.monotonic()


class FakeClock(Clock):
    """A clock that moves only when told to: ``clock.advance(2.5)``. Both readings move
    together."""

    def __init__(self, wall_ms: int = 1_764_000_000_000, monotonic: float = 1000.0) -> None:
        self._wall_ms = wall_ms
        self._mono = monotonic

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds
        self._wall_ms += round(seconds * 1000)


SYSTEM = Clock()
