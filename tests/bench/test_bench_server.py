"""``make bench-server`` at a tiny size: 20 WebSocket clients, one level of 50 msgs/s for 2 s,
against the reference server, Socket.IO and the relay; the table's invariants, the JSON's
fields, the report and the clean-up. Speeds are never asserted (they belong to the benchmark).

Needs Node.js and the npm packages of benchmarks/server, which `make test` installs
(`make node-packages`); skipped, saying why, only where node or npm is not installed at all.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.server.__main__ import main as bench_main
from benchmarks.server.orchestrate import BenchConfig, check_node, collapsed, run_all
from benchmarks.server.report import BEGIN, END, SECTION, render, update_doc

TINY = BenchConfig(servers=("ours", "socketio", "relay"), clients=20, levels=(50,), warmup_s=0.5, measure_s=2.0,
                   drain_s=3.0, sections=("websocket",), quiet_wait_s=0, retry_disturbed=0)

#: Every field of a measured level that the tables and the lead's later comparison read.
LEVEL_FIELDS = {
    "server", "protocol", "clients", "rate", "seed", "payload_bytes", "warmup_s", "measure_s", "drain_s_used",
    "offered_per_s", "acked_per_s", "delivered_per_s", "sent_in_window", "not_sent", "acked", "delivered",
    "refused", "unanswered", "lost", "lost_whole_level", "refused_per_s", "error_frames", "latency_ms",
    "duplicates", "misdelivered", "send_failures", "disconnects", "server_cpu_s", "server_cpu_utilization",
    "server_cpu_ms_per_delivered", "server_rss_bytes", "server_rss_peak_bytes", "server_rss_idle_bytes",
    "loadgen", "cpu_busy", "others_on_cpu", "connect_retries",
}
LATENCY_FIELDS = {"p50", "p90", "p99", "max", "n", "undelivered"}
LOADGEN_FIELDS = {"loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms", "cpu_utilization", "send_late_p99_ms"}


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is *pid*."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d.name))
    return out


@pytest.fixture(scope="module")
def report() -> dict:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node or npm is not installed: make bench-server and this test need Node.js 20 and npm")
    check_node()  # the packages must be there (make test installs them): a failure, not a skip
    before = set(_children(os.getpid()))
    rep = asyncio.run(run_all(TINY, log=lambda s: None))
    rep["leftover_children"] = sorted(set(_children(os.getpid())) - before)
    return rep


pytestmark = pytest.mark.slow


def test_every_server_ran_the_level_with_every_field(report):
    rows = report["results"]["websocket"]
    assert [r["server"] for r in rows] == ["ours", "socketio", "relay"]
    for r in rows:
        assert "error" not in r and "skipped" not in r, r
        assert LEVEL_FIELDS <= set(r), sorted(LEVEL_FIELDS - set(r))
        assert LATENCY_FIELDS <= set(r["latency_ms"])
        assert LOADGEN_FIELDS <= set(r["loadgen"])
    json.dumps(report, allow_nan=False)  # plain JSON: no NaN or Infinity


def test_same_workload_for_every_server(report):
    rows = report["results"]["websocket"]
    # Same seed, same level: the same scheduled sends (a Poisson count of mean 100 in the window).
    assert len({r["sent_in_window"] for r in rows}) == 1
    assert 50 <= rows[0]["sent_in_window"] <= 160


def test_counts_of_the_windows_sends_are_consistent_and_nothing_is_lost(report):
    for r in report["results"]["websocket"]:
        n = r["sent_in_window"]
        assert r["offered_per_s"] * r["measure_s"] == pytest.approx(n)
        assert r["delivered"] <= n and r["acked"] <= n
        # 50 msgs/s among 20 clients is light load for every server: all acked and delivered once.
        assert r["acked"] == r["delivered"] == n, r["server"]
        assert r["lost"] == r["lost_whole_level"] == r["unanswered"] == r["not_sent"] == 0
        assert r["refused"] == {} and r["error_frames"] == {}
        assert r["duplicates"] == r["misdelivered"] == r["send_failures"] == r["disconnects"] == 0
        assert r["latency_ms"]["n"] == n and r["latency_ms"]["undelivered"] == 0
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_rates_are_ordered_within_the_edge_effect(report):
    """Rates count acks and deliveries that *arrive* in the window, offered counts sends *made*
    in it; they differ only by messages in flight across the two window edges. Those are at
    most the sends of the last max-latency before each edge: Poisson with mean
    rate * max latency each, so mean + 4 sd + 1 bounds them with room to spare."""
    for r in report["results"]["websocket"]:
        w = r["measure_s"]
        mean = 2 * r["rate"] * r["latency_ms"]["max"] / 1000
        slack = (mean + 4 * math.sqrt(mean) + 1) / w
        assert r["delivered_per_s"] <= r["acked_per_s"] + slack
        assert r["acked_per_s"] <= r["offered_per_s"] + slack
        assert r["delivered_per_s"] >= r["offered_per_s"] - slack


def test_server_and_loadgen_measurements_are_sane(report):
    for r in report["results"]["websocket"]:
        assert r["server_cpu_s"] >= 0 and r["server_rss_bytes"] > 10e6 and r["server_rss_idle_bytes"] > 10e6
        assert r["server_cpu_ms_per_delivered"] is not None and r["server_cpu_ms_per_delivered"] >= 0
        assert 0 <= r["cpu_busy"]["server_cpu"] <= 1 and 0 <= r["cpu_busy"]["loadgen_cpu"] <= 1
        assert r["loadgen"]["loop_lag_p99_ms"] is not None and r["loadgen"]["cpu_utilization"] > 0


def test_every_child_process_stopped(report):
    assert report["leftover_children"] == []


def test_report_and_docs_section(report, tmp_path):
    rep = {"command": "pytest", **report}
    out = render(rep, md=False)
    assert "ours delivered/s" in out and "relay p99 ms" in out and "ours/Socket.IO" in out and "ours/relay" in out
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# Performance\n\nintro\n")
    update_doc(doc, render(rep, md=True))
    update_doc(doc, render(rep, md=True).replace("pytest", "again"))  # a rerun replaces, never appends
    text = doc.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.count(SECTION) == 1
    assert "intro" in text and "`again`" in text and "`pytest`" not in text
    assert "| 50 |" in text


@pytest.mark.parametrize("argv,needle", [
    (["--levels", "lots"], "--levels=lots"),
    (["--servers", "ours,nginx"], "--servers=ours,nginx"),
    (["--measure-s", "0"], "--measure-s=0"),
    (["--clients", "1"], "--clients=1"),
    (["--write", "--no-write"], "--write"),
])
def test_bad_options_are_one_line_errors(argv, needle, capsys):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_children_never_inherit_debug_switches(monkeypatch):
    # PYTHONASYNCIODEBUG="0" *enables* asyncio's debug mode (any non-empty value does), and the
    # Makefile exports it: a server measured in debug mode is several times slower.
    from benchmarks.server.procs import bench_env

    monkeypatch.setenv("PYTHONASYNCIODEBUG", "0")
    monkeypatch.setenv("PYTHONDEVMODE", "1")
    env = bench_env()
    assert "PYTHONASYNCIODEBUG" not in env and "PYTHONDEVMODE" not in env and env.get("PATH") == os.environ["PATH"]


def test_a_disturbed_level_is_measured_again_on_a_fresh_server(report, monkeypatch):
    # Pretend every window was disturbed: the level runs twice, each time on a fresh server
    # (a second run on the first one's database would find its users taken).
    import benchmarks.server.orchestrate as orch

    monkeypatch.setattr(orch, "disturbance", lambda r: 0.5)
    cfg = orch.BenchConfig(servers=("ours",), clients=10, levels=(20,), warmup_s=0.2, measure_s=1.0, drain_s=2.0,
                           sections=("websocket",), quiet_wait_s=0, retry_disturbed=1)
    rows = asyncio.run(run_all(cfg, log=lambda s: None))["results"]["websocket"]
    assert len(rows) == 1 and "error" not in rows[0], rows
    assert rows[0]["attempts"] == 2 and rows[0]["lost"] == 0
    assert all("error" not in a for a in rows[0]["attempt_summaries"]), rows[0]["attempt_summaries"]


def test_the_report_warns_when_other_processes_disturbed_a_window():
    from benchmarks.server.report import disturbance_note

    quiet = {"others_on_cpu": {"server_cpu": 0.02, "loadgen_cpu": 0.05}}
    busy = {"others_on_cpu": {"server_cpu": 0.60, "loadgen_cpu": 0.05}}
    assert disturbance_note([quiet, quiet, {"skipped": "collapsed"}]) is None
    note = disturbance_note([quiet, busy, {"skipped": "collapsed"}])
    assert note is not None and note.startswith("1 of 2 measured windows were disturbed")


def test_saturation_is_not_collapse() -> None:
    """A server that refuses the excess and keeps delivering near its peak runs its higher
    levels; one whose deliveries fall far below what it delivered before, or below half of
    what is offered at its first level, is skipped from there on."""
    assert not collapsed(4_600, peak=4_800, offered=10_000, fraction=0.5)  # refused the excess
    assert collapsed(1_000, peak=4_800, offered=10_000, fraction=0.5)      # fell off a cliff
    assert collapsed(1, peak=None, offered=1_000, fraction=0.5)            # never delivered
    assert not collapsed(978, peak=None, offered=1_000, fraction=0.5)
