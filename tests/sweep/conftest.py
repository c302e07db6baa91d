"""Tiny sweeps: a few clients for a few simulated seconds, so a run takes tens of milliseconds."""

from pathlib import Path

import pytest

#: A base scenario small enough for tests; warm-up covers the connect ramp.
TINY_BASE = """
[base]
clients = 24
duration_s = 25
warmup_s = 6
connect_ramp_s = 3
transports = ["long_polling", "websocket"]
"""


def write_sweep(path: Path, body: str, base: str = TINY_BASE) -> Path:
    path.write_text(body + base, encoding="utf-8")
    return path


@pytest.fixture
def tiny_sweep(tmp_path):
    """2 points x 2 transports x 3 replications = 12 runs."""
    return write_sweep(tmp_path / "tiny.toml", """
name = "tiny"
seed = 11
replications = 3
metrics = ["latency_ms_p95", "requests_per_s", "messages_sent", "server_cpu_utilization"]
[grid]
rtt_ms = [20, 200]
""")
