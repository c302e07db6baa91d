"""Reconnect backoff policies, named as in the AWS Architecture Blog
("Exponential Backoff and Jitter", Marc Brooker, 2015).

With ``v = min(cap, base * 2**attempt)``:

=====================  =========================================
``immediate``          0
``fixed``              base
``exponential``        v
``full_jitter``        U(0, v)
``equal_jitter``       v/2 + U(0, v/2)
``decorrelated_jitter`` min(cap, U(base, 3 * previous))
=====================  =========================================

Randomness comes from the caller: anything with ``uniform(a, b)`` works, so the
module holds no random state of its own. :func:`reconnect_seed` seeds the stream both the
simulation and the load generator give a client (``random.Random(reconnect_seed(...))``),
so that a measured crash and its simulation back off by the same delays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Uniform(Protocol):
    def uniform(self, low: float, high: float) -> float: ...


POLICIES: tuple[str, ...] = (
    "immediate", "fixed", "exponential", "full_jitter", "equal_jitter", "decorrelated_jitter",
)


def backoff_delay(policy: str, attempt: int, base: float, cap: float, previous: float,
                  rng: Uniform) -> float:
    """Delay before retry number *attempt* (0 for the first retry).

    *previous* is the delay this policy returned last time (``base`` before the
    first retry); only ``decorrelated_jitter`` uses it.
    """
    if policy == "immediate":
        return 0.0
    if policy == "fixed":
        return min(cap, base)
    if policy == "decorrelated_jitter":
        return min(cap, float(rng.uniform(base, max(base, previous * 3.0))))
    v = min(cap, base * 2.0 ** min(attempt, 62))
    if policy == "exponential":
        return v
    if policy == "full_jitter":
        return float(rng.uniform(0.0, v))
    if policy == "equal_jitter":
        return v / 2.0 + float(rng.uniform(0.0, v / 2.0))
    raise ValueError(f"reconnect_policy={policy!r}: expected one of {', '.join(POLICIES)}")


def reconnect_seed(seed: int, client: int) -> int:
    """The seed of client *client*'s reconnect delays in run *seed* (a ``random.Random``'s).

    The simulation's clients and the load generator's take their backoff draws from
    that stream and from nothing else, in the same order (one draw after losing the
    session, one after each failed attempt), so a measured crash run and its simulation
    share their random numbers: a difference between them comes from the mechanism
    (detection, restart, the attempt), not from which 100 delays each happened to draw.
    The time to reconnect everyone is the slowest client's, a maximum over draws whose
    spread from seed to seed is larger than the 20 % target (docs/VALIDATION.md).
    Distinct for runs of fewer than 100,003 clients: beyond that, client i + 100,003 of seed s
    draws what client i of seed s + 1 draws.
    """
    return seed * 100_003 + client


@dataclass
class Backoff:
    """A client's retry schedule: call :meth:`next_delay` after each failure and
    :meth:`reset` after a success."""

    policy: str
    base: float
    cap: float
    rng: Uniform
    attempt: int = 0
    previous: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"reconnect_policy={self.policy!r}: expected one of {', '.join(POLICIES)}")
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must be >= 0")
        self.previous = self.base

    def next_delay(self) -> float:
        d = backoff_delay(self.policy, self.attempt, self.base, self.cap, self.previous, self.rng)
        self.attempt += 1
        self.previous = d
        return d

    def reset(self) -> None:
        self.attempt = 0
        self.previous = self.base
