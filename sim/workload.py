"""The chat workload, drawn before the simulation starts (``chatcore.workload``).

Everything random about *what users do* (who sends when, to which
conversation, how long a reader takes, when each client starts, a short
poller's phase) is drawn up front from its own stream spawned from
``SeedSequence(seed)``. The transports only change *how* it travels, so with
the same seed every transport sees exactly the same messages at exactly the
same times (common random numbers), and so does the load generator, which
draws with the same shared code.
"""

from __future__ import annotations

import numpy as np

from chatcore.workload import STREAMS, Workload, conversations, streams
from chatcore.workload import draw as _draw

from .params import Scenario

__all__ = ["STREAMS", "Workload", "conversations", "draw", "streams"]


def draw(scenario: Scenario, rngs: dict[str, np.random.Generator]) -> Workload:
    return _draw(rngs, clients=scenario.clients, msg_rate_per_min=scenario.msg_rate_per_min,
                 group_size=scenario.group_size, duration_s=scenario.duration_s,
                 read_delay_s=scenario.read_delay_s, connect_ramp_s=scenario.connect_ramp_s)
