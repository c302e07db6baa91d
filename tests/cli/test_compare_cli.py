"""``chatlab compare``: the table, --json, --out, and one-line errors with exit status 2."""

import json
import math
import subprocess
import sys

import pytest

from chatlab.cli import main

FAST = ["--set", "clients=30", "--set", "duration_s=40", "--set", "warmup_s=5", "--jobs", "1"]


def test_table(capsys):
    assert main(["compare", *FAST]) == 0
    out = capsys.readouterr().out
    for word in ("short_polling", "long_polling", "websocket", "requests/s", "latency p95", "open connections"):
        assert word in out


def test_json_follows_the_contract(capsys):
    assert main(["compare", *FAST, "--json", "--set", "transports=websocket,short_polling"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"]["clients"] == 30
    assert data["scenario"]["transports"] == ["websocket", "short_polling"]
    assert [r["transport"] for r in data["results"]] == ["websocket", "short_polling"]
    for r in data["results"]:
        assert r["messages_delivered"] <= r["messages_sent"]
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["max"]


def test_scenario_file_then_set(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('clients = 20\nrtt_ms = 10\ntransports = ["websocket"]\n')
    assert main(["compare", "--scenario", str(f), "--set", "rtt_ms=30", "--json", "--jobs", "1",
                 "--set", "duration_s=40", "--set", "warmup_s=5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["scenario"]["clients"], data["scenario"]["rtt_ms"]) == (20, 30.0)


def test_out_writes_tables_and_figures(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compare", *FAST, "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"summary.csv", "messages.csv", "classes.csv", "bins.csv", "receipts.csv", "result.json",
            "latency_cdf.png", "load.png"} <= names
    assert (out / "load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD = [
    (["--set", "clients=0"], "clients=0"),
    (["--set", "clients=ten"], "clients=ten"),
    (["--set", "msg_rate_per_min=-2"], "msg_rate_per_min=-2"),
    (["--set", "long_poll_timeout_s=0"], "long_poll_timeout_s=0"),
    (["--set", "nonsense=1"], "nonsense=1: unknown parameter"),
    (["--set", "clients"], "--set=clients: NAME=VALUE"),
    (["--set", "transports=smoke_signals"], "transports=smoke_signals"),
    (["--scenario", "/nonexistent/x.toml"], "--scenario=/nonexistent/x.toml: cannot read"),
    (["--jobs", "0"], "--jobs=0"),
    (["--unknown-flag"], "unrecognized arguments: --unknown-flag"),
]


@pytest.mark.parametrize("argv,fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2(argv, fragment, capsys):
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err
    assert "Traceback" not in err


def test_broken_scenario_file(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("clients = = 3\n")
    assert main(["compare", "--scenario", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid TOML" in err and str(f) in err


def test_real_process_exit_status_and_stderr():
    p = subprocess.run([sys.executable, "-m", "chatlab.cli", "compare", "--set", "group_size=1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: group_size=1: an integer >= 2 and <= clients"]
    assert p.stdout == ""


def test_replications_add_confidence_intervals(capsys, tmp_path):
    assert main(["compare", *FAST, "--replications", "3", "--json", "--set", "transports=websocket",
                 "--out", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(set(data["seeds"])) == 3 and data["seeds"][0] == data["scenario"]["seed"]
    (res,) = data["results"]
    assert res["replications"] == 3
    assert math.isfinite(res["ci95_half_width"]["latency_ms"]["p50"])
    assert res["ci95_half_width"]["requests_per_s"] > 0  # different seeds, different arrivals
    assert (tmp_path / "confidence.csv").exists() and (tmp_path / "replications.csv").exists()


@pytest.mark.parametrize("value", ["0", "x", "1001"])
def test_bad_replications(value, capsys):
    assert main(["compare", "--replications", value]) == 2
    assert f"--replications={value}" in capsys.readouterr().err
