"""The simulation's workload for the load generator: the shared ``chatcore.workload``
(without importing ``sim``, which the server side never does). With the same seed the
load generator sends exactly the messages the simulation sends, at the same times,
between the same users (common random numbers)."""

from __future__ import annotations

from chatcore.workload import Workload, conversations, streams
from chatcore.workload import draw as _draw

__all__ = ["Workload", "conversations", "draw"]


def draw(clients: int, msg_rate_per_min: float, group_size: int, duration_s: float, read_delay_s: float,
         connect_ramp_s: float, seed: int) -> Workload:
    return _draw(streams(seed), clients=clients, msg_rate_per_min=msg_rate_per_min, group_size=group_size,
                 duration_s=duration_s, read_delay_s=read_delay_s, connect_ramp_s=connect_ramp_s)
