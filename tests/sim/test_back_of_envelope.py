"""sim.analytic's back-of-envelope capacity (notebook 00, docs/INTERVIEW.md) against the model."""

from __future__ import annotations

import math

import pytest

from sim import Scenario, analytic, compare


@pytest.mark.parametrize("group_size, receipts", [(2, True), (5, True), (2, False)])
def test_websocket_cpu_per_client_matches_the_model(group_size: int, receipts: bool) -> None:
    """The closed form counts the frames the model charges. The model is a little cheaper
    (a few per cent): receipts are watermarks, so a member who reads several messages at once
    sends one, and the window cuts some pairs; 10 % covers that, not noise (costs are fixed)."""
    sc = Scenario().with_overrides({"clients": 1000, "transports": "websocket", "group_size": group_size,
                                    "receipts": receipts, "duration_s": 80, "warmup_s": 40, "connect_ramp_s": 20})
    r = compare(sc).summary.iloc[0]
    simulated = r.server_cpu_utilization * sc.server_cores / sc.clients
    closed = analytic.websocket_cpu_per_client(sc)
    assert simulated <= closed * 1.02
    assert abs(simulated / closed - 1) < 0.10, (simulated, closed)


def test_back_of_envelope_arithmetic() -> None:
    sc = Scenario()
    e = analytic.back_of_envelope(50_000_000, 0.1, sc, cpu_target=0.7)
    assert e["online"] == 5_000_000
    assert e["messages_per_s"] == pytest.approx(5_000_000 * sc.msg_rate_per_min / 60)
    assert e["deliveries_per_s"] == pytest.approx(e["messages_per_s"] * (sc.group_size - 1))
    assert e["clients_per_server_cpu"] == pytest.approx(sc.server_cores * 0.7 / e["cpu_per_client_s"])
    assert e["servers_cpu"] == math.ceil(e["online"] / e["clients_per_server_cpu"])
    # twice the message rate costs (almost) twice the CPU per client: only pings do not scale
    e2 = analytic.back_of_envelope(50_000_000, 0.1, sc.with_overrides({"msg_rate_per_min": 2 * sc.msg_rate_per_min}))
    ping = sc.cpu_ping_ms / 1000 / sc.ws_heartbeat_s
    assert e2["cpu_per_client_s"] - ping == pytest.approx(2 * (e["cpu_per_client_s"] - ping))
