"""The simulation's workload, drawn the same way (``sim/workload.py``) without importing
``sim`` (the server side never does): same named ``SeedSequence`` streams in the same
order, same draws. With the same seed, the load generator sends exactly the messages
the simulation sends, at the same times, between the same users (common random numbers;
``tests/bridge`` checks that the two agree array for array).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STREAMS = ("arrivals", "read_delay", "start", "phase", "jitter", "service", "lb", "backoff")


def conversations(clients: int, group_size: int) -> tuple[tuple[int, ...], ...]:
    """Clients 0..N-1 in conversations of *group_size*; the last takes the remainder."""
    n_conv = clients // group_size
    groups = [list(range(c * group_size, (c + 1) * group_size)) for c in range(n_conv)]
    groups[-1].extend(range(n_conv * group_size, clients))
    return tuple(tuple(g) for g in groups)


@dataclass(frozen=True)
class Workload:
    send_time: np.ndarray
    sender: np.ndarray
    conversation: np.ndarray
    read_delay: np.ndarray
    start_time: np.ndarray
    poll_phase: np.ndarray
    members: tuple[tuple[int, ...], ...]
    conversation_of: np.ndarray


def draw(clients: int, msg_rate_per_min: float, group_size: int, duration_s: float, read_delay_s: float,
         connect_ramp_s: float, seed: int) -> Workload:
    rngs = {name: np.random.default_rng(s)
            for name, s in zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS)))}
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
        send_time=times, sender=senders, conversation=conv_of[senders], read_delay=read_delay,
        start_time=rngs["start"].uniform(0.0, connect_ramp_s, clients) if connect_ramp_s > 0 else np.zeros(clients),
        poll_phase=rngs["phase"].uniform(0.0, 1.0, clients), members=members, conversation_of=conv_of)
