"""Token buckets on an injected clock: the per-user limits on writes and reads, and the
failed-login throttles (chat.py, auth.py)."""

from __future__ import annotations

from .clock import Clock


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up, on an injected clock."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "clock")

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock.monotonic()

    def refill(self) -> float:
        """Add what has accrued since the last look; returns the tokens now saved up."""
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def take(self, cost: float = 1.0) -> bool:
        """Spend *cost* tokens if there are that many (a cost above ``burst`` never fits)."""
        if self.refill() >= cost:
            self.tokens -= cost
            return True
        return False

    def wait_s(self, cost: float = 1.0) -> float:
        """Seconds until *cost* tokens are available (0 if they are)."""
        return max(0.0, (cost - self.tokens) / self.rate)
