"""One model: a crash run whose fault never starts is a compare run, table for table."""

from __future__ import annotations

import pandas as pd
import pytest

import sim
from sim import Scenario
from sim.crash import run_crash

# One server (compare models one), a fault after the run has ended: it never starts.
# Jitter and exponential service times make every random stream matter.
QUIET = dict(clients=400, duration_s=40, warmup_s=12, servers=1, crashed_servers=1, crash_at_s=1000,
             net_jitter_ms=5, service_time_dist="exponential", http_keepalive_s=3, group_size=3)


@pytest.mark.parametrize("design", ["queue", "direct"])
@pytest.mark.parametrize("transport", ["short_polling", "long_polling", "websocket"])
def test_a_crash_run_without_a_fault_is_a_compare_run(transport: str, design: str) -> None:
    sc = Scenario().with_overrides({**QUIET, "delivery_design": design})
    plain = sim.run(sc, transport)
    crash = run_crash(sc, transport)
    assert crash.run is not None
    assert crash.run.summary == plain.summary
    for table in ("messages", "receipts", "classes", "bins"):
        pd.testing.assert_frame_equal(getattr(crash.run, table), getattr(plain, table))
    s = crash.summary
    assert s["affected_clients"] == 0 and s["messages_lost"] == 0 and s["messages_duplicated"] == 0
    # the crash summary carries compare's columns, with the same values
    for k, v in plain.summary.items():
        assert s[k] == v, k
