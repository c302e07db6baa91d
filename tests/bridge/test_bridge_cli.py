"""``chatlab loadgen``, ``calibrate`` and ``validate`` end to end on a small scale, and their
one-line refusals. Each run starts its own server process on a free port."""

import json
import subprocess
import sys
import time

import pytest

from chatlab.cli import main
from sim import Scenario

SMALL = ["--set", "clients=6", "--set", "duration_s=7", "--set", "warmup_s=3", "--set", "connect_ramp_s=1",
         "--set", "msg_rate_per_min=30", "--set", "rtt_ms=20"]


@pytest.mark.parametrize("argv,needle", [
    (["loadgen", "--transport", "carrier_pigeon"], "--transport=carrier_pigeon"),
    (["loadgen", "--set", "clients=1"], "clients"),
    (["loadgen", "--set", "bogus=1"], "bogus"),
    (["loadgen", "--crash-at", "soon"], "--crash-at=soon"),
    (["loadgen", "--set", "payload_bytes=0"], "payload_bytes=0: an integer 1..4000"),  # the scenario's own limit
    (["loadgen", "--set", "clients=6000"], "clients=6000: an integer 2..5000 (what one load generator drives)"),
    (["loadgen", "--crash-at", "500"], "crash_at_s=500.0: a number in (0, duration_s)"),
    (["calibrate", "--scale", "0"], "--scale=0"),
    (["calibrate", "--out", "x.txt"], "--out=x.txt"),
    (["validate", "--levels", "extreme"], "--levels=extreme"),
    (["validate", "--transports", "smoke"], "--transports=smoke"),
    (["validate", "--max-clients", "-3"], "--max-clients=-3"),
    (["validate", "--calibration", "/nonexistent.toml"], "--calibration=/nonexistent.toml"),
    (["validate", "--redis-url", "http://x"], "--redis-url=http://x"),
    (["validate", "--repeat", "0"], "--repeat=0"),
    (["validate", "--cluster", "1"], "--cluster=1"),
    (["validate", "--cluster", "many"], "--cluster=many"),
    (["validate", "--cluster", "4", "--cluster-downtime", "-1"], "--cluster-downtime=-1"),
    (["validate", "--cluster", "4", "--cluster-msg-rate", "0"], "--cluster-msg-rate=0"),
    (["validate", "--cluster", "4", "--db", "chat.sqlite3"], "--db=chat.sqlite3"),
    (["validate", "--cluster", "4", "--merge"], "--merge"),
])
def test_bad_arguments_are_one_line_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


@pytest.mark.parametrize("flag", ["--calibration", "--scenario"])
def test_a_file_that_is_not_utf8_is_a_one_line_error(flag, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe not text")
    assert main(["validate", flag, str(bad), "--transports", "none", "--crash-transport", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{flag}={bad}: not UTF-8 text" in err and "\n" not in err


@pytest.mark.slow
def test_loadgen_json_has_the_simulations_names(capsys):
    assert main(["loadgen", "--transport", "long_polling", "--json", *SMALL]) == 0
    data = json.loads(capsys.readouterr().out)
    r = data["results"][0]
    assert r["transport"] == "long_polling" and data["scenario"]["clients"] == 6
    for key in ("requests_per_s", "bytes_per_message", "overhead_bytes_up_per_s", "payload_bytes_down_per_s",
                "open_connections_mean", "server_cpu_utilization", "messages_sent", "messages_delivered"):
        assert key in r, key
    assert r["messages_delivered"] == r["messages_sent"] > 0
    assert r["latency_ms"]["p50"] >= 20.0  # at least the emulated round trip... of one way each, plus server
    assert r["server_cpu_utilization"] > 0
    assert r["duplicates_after_dedup"] == 0
    lag = r["loadgen_loop_lag_ms"]  # how late the load generator's own event loop ran
    assert 0 <= lag["p50"] <= lag["p95"] <= lag["max"]


def test_unreachable_redis_is_reported_not_hung(tmp_path):
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "chatlab.cli", "loadgen", *SMALL, "--redis-url", "redis://127.0.0.1:1/0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "error:" in p.stdout and "Redis" in p.stdout
    assert time.monotonic() - t < 40


@pytest.mark.slow
def test_calibrate_writes_a_scenario_the_simulation_takes(tmp_path, capsys):
    out = tmp_path / "cal.toml"
    assert main(["calibrate", "--scale", "0.05", "--out", str(out)]) == 0
    sc = Scenario.from_toml(out.read_text())
    assert sc.server_cores == 1 and sc.cpu_poll_ms > 0 and sc.http_request_header_bytes > 100
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["machine"]["python"] and meta["machine"]["cpu_model"]
    gc = meta["details"]["group_commit"]  # writes alone and sixteen at a time, split (docs/MODEL.md)
    # a lone send's commits (its own and its fan-out's, per the server's counters) share its commit CPU
    from reference_server.loadgen.calibrate import commit_cpu_ms
    assert sc.cpu_commit_batch_ms == pytest.approx(commit_cpu_ms(gc["batch_ms"], gc["commits_per_send_1"]), abs=1e-4)
    assert commit_cpu_ms(1.6, 2.0) == pytest.approx(0.8) and commit_cpu_ms(1.6, None) == pytest.approx(0.8)
    assert commit_cpu_ms(1.6, 0.5) == pytest.approx(0.8)  # fewer commits than writes alone: implausible
    assert sc.cpu_http_send_ms == pytest.approx(gc["send_1_ms"] - gc["batch_ms"], abs=2e-4)


@pytest.mark.slow
def test_validate_short_run(tmp_path, capsys):
    assert main(["validate", "--transports", "websocket,short_polling", "--levels", "light", "--max-clients", "6",
                 "--crash-clients", "6", "--set", "duration_s=7", "--set", "warmup_s=3", "--set", "connect_ramp_s=1",
                 "--json", "--out", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["rows"]
    assert {r["transport"] for r in rows} == {"websocket", "short_polling"}
    assert {"requests/s", "bytes per message", "latency p50 (ms)", "latency p95 (ms)"} <= {r["metric"] for r in rows}
    for r in rows:
        if r["metric"] == "latency p50 (ms)":  # the measured median with its sampling interval
            assert r["measured_ci_low"] <= r["measured"] <= r["measured_ci_high"]
    crash = {r["metric"]: r for r in rows if r["level"] == "crash"}
    assert crash["messages lost"]["measured"] == 0 and crash["messages duplicated"]["measured"] == 0
    assert crash["time to reconnect all (s)"]["measured"] is not None
    assert (tmp_path / "validation.csv").exists() and (tmp_path / "validation.png").exists()


@pytest.mark.slow
def test_validate_repeats_pool_the_runs(capsys):
    """--repeat 2: each case runs on seeds 1 and 2; latency quantiles come from both runs'
    messages together, the other numbers are the runs' mean, and each run's value is kept."""
    assert main(["validate", "--transports", "websocket", "--levels", "light", "--max-clients", "6",
                 "--crash-transport", "none", "--repeat", "2", "--set", "duration_s=7", "--set", "warmup_s=3",
                 "--set", "connect_ramp_s=1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["repeat"] == 2
    rows = {r["metric"]: r for r in doc["rows"]}
    rps = rows["requests/s"]
    assert len(rps["measured_each"]) == 2
    assert rps["measured"] == pytest.approx(sum(rps["measured_each"]) / 2)
    assert rps["measured_min"] <= rps["measured"] <= rps["measured_max"]
    p50 = rows["latency p50 (ms)"]  # over both runs' messages, with its interval
    assert len(p50["measured_each"]) == 2
    assert p50["measured_ci_low"] <= p50["measured"] <= p50["measured_ci_high"]


def test_pool_crash_sums_losses_and_averages_the_rest():
    from types import SimpleNamespace as NS

    from chatlab.validation import pool_crash

    meas = [NS(crash={"time_to_reconnect_all_s": 2.0, "messages_lost": 0, "messages_duplicated": 1}),
            NS(crash={"time_to_reconnect_all_s": 4.0, "messages_lost": 2, "messages_duplicated": 0})]
    sims = [NS(summary={"time_to_reconnect_all_s": 3.0, "messages_lost": 0}),
            NS(summary={"time_to_reconnect_all_s": 5.0, "messages_lost": 0})]
    m, s = pool_crash(meas, sims)
    assert m.crash == {"time_to_reconnect_all_s": 3.0, "messages_lost": 2, "messages_duplicated": 1}
    assert s.summary["time_to_reconnect_all_s"] == 4.0 and m.each[1]["messages_lost"] == 2
    one_m, one_s = pool_crash(meas[:1], sims[:1])
    assert one_m is meas[0] and one_s is sims[0]
    # a run in which not every client came back has no time to reconnect all: nor has the pool
    stuck = NS(crash={"time_to_reconnect_all_s": None, "messages_lost": 0, "messages_duplicated": 0})
    for order in ([meas[0], stuck], [stuck, meas[0]]):
        assert pool_crash(order, sims)[0].crash["time_to_reconnect_all_s"] is None


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_validate_cluster_rows(tmp_path, capsys):
    """A small cluster crash run end to end (two servers behind HAProxy, the real Redis and a
    PostgreSQL database of its own): its rows, with nothing lost or duplicated, merged into an
    existing table."""
    import asyncio
    import uuid

    from tests.server.conftest import PG_ADMIN_URL, REDIS_URL, _pg_admin

    name = f"chatlab_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        _validate_cluster(tmp_path, capsys, REDIS_URL, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _validate_cluster(tmp_path, capsys, redis_url: str, db_url: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "validation.json").write_text(json.dumps({"rows": [
        {"transport": "websocket", "level": "crash", "metric": "messages lost", "simulated": 0, "measured": 0,
         "relative_error": None, "tolerance": "= 0", "pass": True}]}))
    assert main(["validate", "--transports", "none", "--crash-transport", "none", "--cluster", "2",
                 "--cluster-clients", "16", "--cluster-downtime", "1", "--redis-url", redis_url, "--db", db_url,
                 "--merge",
                 "--out", str(out), "--json", "--set", "duration_s=8", "--set", "warmup_s=2",
                 "--set", "rtt_ms=20"]) == 0
    doc = json.loads((out / "validation.json").read_text())
    rows = {(r["level"], r["metric"]): r for r in doc["rows"]}
    assert ("crash", "messages lost") in rows, "the rows it did not redo are kept"
    level = "cluster crash (2 servers)"
    assert rows[(level, "clients affected")]["measured"] == rows[(level, "clients affected")]["simulated"] == 8
    assert rows[(level, "messages lost")]["pass"] and rows[(level, "messages duplicated after de-duplication")]["pass"]
    assert rows[(level, "time to reconnect all (s)")]["measured"] > 0
    assert doc["cluster_crash"]["measured"]["servers"] == 2
    capsys.readouterr()
