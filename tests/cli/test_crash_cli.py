"""``chatlab crash``: table, --policies, --json, --out, and one-line errors."""

import json

import pytest

from chatlab.cli import main

FAST = ["--set", "clients=80", "--set", "duration_s=90", "--set", "servers=2", "--jobs", "1"]


def test_table_one_row_per_transport_and_policy(capsys):
    assert main(["crash", *FAST, "--policies", "immediate,full_jitter"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("short_polling", "long_polling", "websocket"))]
    assert len(rows) == 6
    assert "peak attempts/s" in out and "all back (s)" in out


def test_json_names(capsys, tmp_path):
    assert main(["crash", *FAST, "--set", "transports=websocket", "--json", "--out", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    (res,) = data["results"]
    for key in ("transport", "reconnect_policy", "delivery_design", "reconnect_peak_per_s",
                "time_to_reconnect_all_s", "messages_lost", "messages_duplicated", "messages_recovered",
                "presence_flaps", "p99_incident_latency_ms"):
        assert key in res
    assert data["scenario"]["reconnect_policy"] == res["reconnect_policy"] == "full_jitter"
    assert {"crash_bins.csv", "crash_reconnects.png", "crash_backlog.png"} <= {p.name for p in tmp_path.iterdir()}


def test_crash_for_good_is_valid_json(capsys):
    assert main(["crash", *FAST, "--set", "transports=websocket", "--set", "downtime_s=inf", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scenario"]["downtime_s"] == "inf"


BAD = [
    (["--policies", "sometimes"], "--policies=sometimes"),
    (["--policies", "immediate,immediate"], "--policies=immediate,immediate"),
    (["--set", "servers=0"], "servers=0"),
    (["--set", "crashed_servers=9"], "crashed_servers=9"),
    (["--set", "reconnect_policy=eventually"], "reconnect_policy=eventually"),
    (["--set", "delivery_design=pigeon"], "delivery_design=pigeon"),
    (["--set", "connect_timeout_s=0"], "connect_timeout_s=0"),
    (["--set", "downtime_s=-1"], "downtime_s=-1"),
    (["--set", "fault=meteor"], "fault=meteor"),
    (["--set", "partition_fraction=1.5"], "partition_fraction=1.5"),
]


@pytest.mark.parametrize("argv,fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2(argv, fragment, capsys):
    assert main(["crash", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_a_crash_that_never_fires_prints_what_compare_prints(capsys):
    """Item: one model. Same scenario and seed, one server, the fault after the run: every column
    the two commands share is equal, exactly."""
    common = ["--set", "clients=150", "--set", "duration_s=40", "--set", "warmup_s=12", "--set", "servers=1",
              "--set", "crashed_servers=1", "--set", "net_jitter_ms=5", "--set", "seed=9", "--jobs", "1", "--json"]
    assert main(["compare", *common]) == 0
    cmp = {r["transport"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert main(["crash", *common, "--set", "crash_at_s=500"]) == 0
    out = capsys.readouterr()
    crash = json.loads(out.out)
    assert "crash_at_s=500 is outside the measurement window" in out.err
    assert any(w.startswith("crash_at_s=500") for w in crash["warnings"])
    assert len(crash["results"]) == 3
    for res in crash["results"]:
        shared = set(res) & set(cmp[res["transport"]])
        assert len(shared) > 20
        assert {k: res[k] for k in shared} == {k: cmp[res["transport"]][k] for k in shared}


def test_short_windows_are_flagged_on_stderr_and_in_the_json(capsys):
    assert main(["compare", "--set", "clients=50", "--set", "warmup_s=2", "--set", "duration_s=12",
                 "--set", "transports=short_polling", "--jobs", "1", "--json"]) == 0
    out = capsys.readouterr()
    assert out.err.startswith("warning: warmup_s=2 < connect_ramp_s=10")
    assert json.loads(out.out)["warnings"] == [line[len("warning: "):] for line in out.err.splitlines()]
    assert main(["compare", "--set", "clients=50", "--set", "transports=short_polling", "--jobs", "1",
                 "--json"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "warnings" not in json.loads(out.out)
