"""``chatlab validate --grid``: a sweep file of kind ``validate`` checked before any run, a tiny
grid end to end (two configurations on one transport, a crash run), and the calibration's
machine against this one."""

import csv
import json
import platform

import pytest

from chatlab.cli import main

TINY = """
name = "tiny"
kind = "validate"
[validate]
levels = ["light"]
crash = true
crash_clients = 6
max_clients = 6
[base]
transports = ["websocket"]
duration_s = 6
warmup_s = 2
connect_ramp_s = 1
[[zip]]
rtt_ms = [50, 20]
payload_bytes = [100, 2000]
"""


def _grid(tmp_path, text: str, name: str = "g.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,extra,needle", [
    ('kind = "compare"\n', [], 'kind=compare: expected a sweep file with kind = "validate"'),
    ('kind = "validate"\n[validate]\nlevels = ["extreme"]\n', [], "validate.levels=['extreme']"),
    ('kind = "validate"\n[validate]\nwarp = 9\n', [], "validate.warp=9: unknown key"),
    ('kind = "validate"\n[validate]\ncrash_clients = 1\n', [], "validate.crash_clients=1: an integer from 2"),
    ('kind = "validate"\nmetrics = ["requests_per_s"]\n', [], 'metrics=[\'requests_per_s\']: not for kind = "validate"'),
    ('kind = "validate"\n[sample]\ncount = 2\nbounds = {rtt_ms = [10, 100]}\n', [], "sample="),
    ('kind = "validate"\n[[zip]]\nrtt_ms = [20, 20]\ngroup_size = [2, 2]\n', [], "distinct rows"),
    ('kind = "validate"\n[grid]\nrtt_ms = [20, 20]\n', [], "grid.rtt_ms=[20, 20]: distinct values"),
    ('kind = "validate"\n[validate]\nlevels = ["light"]\n', ["--levels", "light"], "--levels=light: not with --grid"),
    ('kind = "validate"\n', ["--cluster", "4"], "--cluster=4: not with --grid"),
    ('kind = "validate"\n', ["--set", "rtt_ms=-4"], "rtt_ms"),
    ('kind = "validate"\n[grid]\nrtt_ms = [20]\n', ["--set", "rtt_ms=30"], "rtt_ms is an axis"),
    ('kind = "validate"\nnot toml', [], "not valid TOML"),
])
def test_bad_grids_are_one_line_errors_before_any_run(tmp_path, capsys, text, extra, needle):
    assert main(["validate", "--grid", _grid(tmp_path, text), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err


def test_sweep_refuses_a_validate_grid(tmp_path, capsys):
    path = _grid(tmp_path, TINY)
    assert main(["sweep", path, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"validate --grid {path}" in err and "\n" not in err


def test_one_factor_at_a_time_zip_is_a_design(tmp_path):
    """A zip column may repeat a value (the other factors stay at the base); the committed
    grid covers every listed level of every factor."""
    from chatlab import validation as v
    from chatlab.sweep.design import design_points
    from chatlab.sweep.spec import load_sweep

    start = v.load_scenario(v.VALIDATION_DEFAULTS, None, None, [])
    spec = load_sweep(v.ROOT / "data" / "validation-grid.toml", start=start)
    points = design_points(spec)
    assert spec.kind == "validate" and len(points) == len({tuple(p.values()) for p in points})
    for name, levels in (("group_size", {2, 4, 8}), ("rtt_ms", {20, 50, 150}), ("msg_rate_per_min", {6, 30}),
                         ("payload_bytes", {100, 2000})):
        assert {p[name] for p in points} == levels, name
    assert set(spec.base.transports) == {"short_polling", "long_polling", "websocket"}
    assert spec.validate["crash"] and spec.base.rtt_ms == 50 and spec.base.id_digits == 2  # validate's defaults


def test_calibration_machine_says_when_it_was_another(tmp_path):
    from chatlab.validation import calibration_machine, calibration_note, machine_metadata

    toml = tmp_path / "cal.toml"
    toml.write_text("[scenario]\n")
    assert calibration_machine(toml)["same"] is None  # no .json beside it
    here = machine_metadata()
    toml.with_suffix(".json").write_text(json.dumps({"machine": here}))
    assert calibration_machine(toml)["same"] is True
    there = {**here, "cpu_model": "Imaginary 9000", "packages": {**here["packages"], "aiohttp": "0.1"}}
    toml.with_suffix(".json").write_text(json.dumps({"machine": there}))
    info = calibration_machine(toml)
    assert info["same"] is False
    assert any("cpu_model: Imaginary 9000 ->" in d for d in info["differences"])
    assert any(d.startswith("aiohttp: 0.1 ->") for d in info["differences"])
    assert "another machine" in calibration_note(info) and platform.python_version() == here["python"]


@pytest.mark.slow
def test_tiny_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["validate", "--grid", _grid(tmp_path, TINY), "--json", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["rows"]
    runs = [r for r in rows if r["level"] != "crash"]
    assert {(r["point"], r["rtt_ms"], r["payload_bytes"]) for r in runs} == {(0, 50, 100), (1, 20, 2000)}
    metrics = {r["metric"] for r in runs}
    assert {"requests/s", "bytes per message", "latency p50 (ms)", "latency p95 (ms)",
            "load generator loop lag p95 (ms)"} <= metrics
    for r in runs:
        assert r["transport"] == "websocket" and r["clients"] == 6
        if r["metric"] == "latency p50 (ms)":  # the measured median with its sampling interval
            assert r["measured_ci_low"] <= r["measured"] <= r["measured_ci_high"]
    by = {(r["point"], r["metric"]): r for r in runs}
    # 2000-byte messages cost more bytes per message than 100-byte ones, measured and simulated
    assert by[(1, "bytes per message")]["measured"] > by[(0, "bytes per message")]["measured"] + 1500
    assert by[(1, "bytes per message")]["simulated"] > by[(0, "bytes per message")]["simulated"] + 1500
    crash = {r["metric"]: r for r in rows if r["level"] == "crash"}
    assert crash["messages lost"]["measured"] == 0 and crash["messages duplicated"]["measured"] == 0
    assert crash["time to reconnect all (s)"]["rtt_ms"] == 50  # the base point's configuration
    assert doc["targets"] == sum(1 for r in rows if r["pass"] is not None)
    assert doc["calibration_machine"]["same"] in (True, False, None) and "load average" in doc["load"]
    with open(out / "validation-grid.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert table[0].keys() >= {"point", "rtt_ms", "payload_bytes", "transport", "metric", "relative_error"}
    assert len(table) == len(rows) and all(r["rtt_ms"] for r in table)
    assert (out / "validation-grid.png").stat().st_size > 10_000
