"""The network between clients and the server, as its own object.

Clients and server never compute a delay themselves: they ask the network when
a packet sent now arrives (SimPy's ``latency.py`` keeps its delay in a
``Cable`` for the same reason). One-way delay is ``rtt/2`` plus an optional
exponential jitter. Frames on one WebSocket share a TCP connection, so a
:class:`Link` keeps them in order: a frame never arrives before the one sent
before it.

Not modelled: bandwidth limits, packet loss and TCP/IP/TLS header bytes (the
byte counts are application-layer: HTTP headers and bodies, WebSocket frames).
"""

from __future__ import annotations

import numpy as np


class Link:
    """An ordered byte stream (one TCP connection) in one direction."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0.0


class Network:
    def __init__(self, rtt_s: float, jitter_mean_s: float, rng: np.random.Generator):
        self.one_way_s = rtt_s / 2.0
        self.rtt_s = rtt_s
        self._jitter = jitter_mean_s
        self._rng = rng
        # Pre-drawn jitter, refilled in blocks: one numpy call per 4096 packets.
        self._pool: list[float] = []

    def delay(self) -> float:
        """One-way delay of a packet sent now."""
        if self._jitter <= 0.0:
            return self.one_way_s
        if not self._pool:
            self._pool = self._rng.exponential(self._jitter, 4096).tolist()
        return self.one_way_s + self._pool.pop()

    def arrival(self, now: float, link: Link | None = None) -> float:
        """Time at which a packet sent at *now* arrives; in order on *link*."""
        t = now + self.delay()
        if link is not None:
            if t < link.last:
                t = link.last
            link.last = t
        return t

    def connect_delay(self) -> float:
        """Extra time a new TCP connection costs before its first request leaves:
        one round trip (SYN, SYN-ACK; the request rides with the ACK)."""
        return self.delay() * 2.0 if self._jitter > 0.0 else self.rtt_s
