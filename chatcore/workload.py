"""The chat workload: who sends when, to which conversation, and the per-client draws.

Shared by the simulation (``sim``) and the load generator
(``reference_server.loadgen``), so that with the same seed the load generator sends
exactly the messages the simulation sends, at the same times, between the same users
(common random numbers). Pure: randomness comes from named streams spawned from
``SeedSequence(seed)``; nothing here reads a clock or a file.

Every random stream of a run is spawned here, in a fixed order; a new stream goes at
the end so existing ones keep their numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Named random streams, in a fixed order (adding a stream goes at the end).
STREAMS = ("arrivals", "read_delay", "start", "phase", "jitter", "service", "lb")


def streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, children)}


@dataclass(frozen=True)
class Workload:
    """Messages sorted by send time, and per-client draws."""

    send_time: np.ndarray      # float64 [messages]
    sender: np.ndarray         # int64   [messages]
    conversation: np.ndarray   # int64   [messages]
    read_delay: np.ndarray     # float64 [messages] (one draw per message, used by every reader)
    start_time: np.ndarray     # float64 [clients]
    poll_phase: np.ndarray     # float64 [clients], in [0, 1): fraction of poll_interval_s
    members: tuple[tuple[int, ...], ...]  # conversation -> member clients
    conversation_of: np.ndarray  # int64 [clients]

    @property
    def n_messages(self) -> int:
        return int(self.send_time.size)


def conversations(clients: int, group_size: int) -> tuple[tuple[int, ...], ...]:
    """Partition clients 0..N-1 into conversations of *group_size* members; the
    last one takes the remainder (so every conversation has >= group_size members)."""
    n_conv = clients // group_size
    groups = [list(range(c * group_size, (c + 1) * group_size)) for c in range(n_conv)]
    groups[-1].extend(range(n_conv * group_size, clients))
    return tuple(tuple(g) for g in groups)


def draw(rngs: dict[str, np.random.Generator], *, clients: int, msg_rate_per_min: float, group_size: int,
         duration_s: float, read_delay_s: float, connect_ramp_s: float) -> Workload:
    """Draw a workload from *rngs* (see :func:`streams`).

    Each client sends as a Poisson process of ``msg_rate_per_min``: a Poisson count over
    ``[0, duration_s]`` and uniform times (the order statistics of a Poisson process).
    """
    r = rngs["arrivals"]
    counts = r.poisson(msg_rate_per_min / 60.0 * duration_s, clients)
    times = r.uniform(0.0, duration_s, int(counts.sum()))
    senders = np.repeat(np.arange(clients, dtype=np.int64), counts)
    order = np.argsort(times, kind="stable")
    times, senders = times[order], senders[order]
    members = conversations(clients, group_size)
    conv_of = np.empty(clients, dtype=np.int64)
    for c, group in enumerate(members):
        conv_of[list(group)] = c
    read_delay = rngs["read_delay"].exponential(read_delay_s, times.size) if read_delay_s > 0 \
        else np.zeros(times.size)
    return Workload(
        send_time=times,
        sender=senders,
        conversation=conv_of[senders],
        read_delay=read_delay,
        start_time=rngs["start"].uniform(0.0, connect_ramp_s, clients) if connect_ramp_s > 0
        else np.zeros(clients),
        poll_phase=rngs["phase"].uniform(0.0, 1.0, clients),
        members=members,
        conversation_of=conv_of,
    )
