"""Sweep files: every mistake is one line naming the file, key and value, exit status 2, before any run."""

import pytest

from chatlab.cli import main
from chatlab.errors import UsageError
from chatlab.sweep import load_sweep

from .conftest import write_sweep

BAD = [
    ('kind = "bogus"\n', 'kind=bogus: one of compare, crash, capacity'),
    ('colour = "red"\n', 'colour=red: unknown key'),
    ('replications = 0\n', 'replications=0: an integer from 1 to 10000'),
    ('seed = -1\n', 'seed=-1: an integer >= 0'),
    ('metrics = ["latency_p95"]\n', 'metrics=latency_p95: unknown compare metric (did you mean latency_ms_p95?)'),
    ('[grid]\nrtt_ms = [10, -5]\n', 'grid.rtt_ms[1]: rtt_ms=-5.0: a number >= 0'),
    ('[grid]\nrtt_msec = [10]\n', 'grid.rtt_msec=rtt_msec: unknown parameter (did you mean rtt_ms?)'),
    ('[grid]\nseed = [1, 2]\n', 'grid.seed=seed: not an axis'),
    ('[grid]\nrtt_ms = [10, 10.0]\n', 'grid.rtt_ms=[10, 10.0]: distinct values'),
    ('[grid]\nrtt_ms = {start = 1, stop = 100, num = 3, scale = "cubic"}\n', 'grid.rtt_ms.scale=cubic: linear or log'),
    ('[[zip]]\nrtt_ms = [10, 20]\npoll_interval_s = [1]\n', 'zip[0]='),
    ('[grid]\nduration_s = [4, 50]\n', 'point 0 (duration_s=4.0): duration_s=4.0: a number > 0 and > warmup_s (6.0)'),
    ('[grid]\nduration_s = [20, 50]\nwarmup_s = [6, 30]\n', 'point 1 (duration_s=20.0, warmup_s=30.0): warmup_s=30.0'),
    ('[grid]\nrtt_ms = [1]\n[sample]\ncount = 4\nbounds = {rtt_ms = [1, 9]}\n', 'axes=rtt_ms: each parameter on one axis'),
    ('[sample]\ncount = 4\nbounds = {rtt_ms = [9, 1]}\n', 'sample.bounds.rtt_ms=[9, 1]: [low, high]'),
    ('[sample]\nmethod = "sobol"\ncount = 4\nbounds = {rtt_ms = [1, 9]}\n', 'sample.method=sobol: random or lhs'),
    ('policies = ["full_jitter"]\n', 'policies=[\'full_jitter\']: only for kind = "crash"'),
    ('kind = "crash"\npolicies = ["yolo"]\n', "policies=['yolo']: a list of distinct names from immediate"),
    ('kind = "capacity"\n', 'slo=: a constraint list'),
    ('kind = "capacity"\nslo = "latency_p99<=250"\n', 'unknown metric latency_p99 (did you mean latency_ms_p99?)'),
    ('kind = "capacity"\nslo = "latency_ms_p99=<250"\n', "'latency_ms_p99=<250' is not METRIC<=NUMBER"),
    ('scenario = "missing.toml"\n', 'scenario=missing.toml: a readable UTF-8 scenario file'),
    ('this is not toml\n', 'not valid TOML'),
]


@pytest.mark.parametrize("body,message", BAD)
def test_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys, body, message):
    f = write_sweep(tmp_path / "bad.toml", body)
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert message in err, err
    assert str(f) in err
    assert not out.exists(), "nothing may be created before the file is valid"


def test_base_seed_is_refused(tmp_path):
    f = write_sweep(tmp_path / "s.toml", "", base="[base]\nseed = 3\n")
    with pytest.raises(UsageError, match="base.seed=3: not allowed"):
        load_sweep(f)


@pytest.mark.parametrize("args,message", [
    (["--set", "rtt_ms=5"], "--set rtt_ms=5: rtt_ms is an axis of this sweep"),
    (["--set", "clients=1"], "clients=1: an integer >= 2"),
    (["--set", "seed=4"], "--set seed=4: the sweep's seed is the file's top-level seed"),
    (["--replications", "0"], "--replications=0: expected a whole number from 1 to 10000"),
    (["--jobs", "x"], "--jobs=x"),
    (["--flush", "-1"], "--flush=-1: expected seconds from 0 to 3600"),
    ([], "--out: required"),
])
def test_bad_command_line(tiny_sweep, capsys, args, message):
    argv = ["sweep", str(tiny_sweep), *args]
    if args:
        argv += ["--out", str(tiny_sweep.parent / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_set_changes_the_base_and_replications_override(tiny_sweep):
    spec = load_sweep(tiny_sweep, ["clients=30", "msg_rate_per_min=4"], replications=2)
    assert (spec.base.clients, spec.base.msg_rate_per_min, spec.replications) == (30, 4.0, 2)
    assert spec.axis_names == ("rtt_ms",)


def test_defaults_keep_every_summary_metric(tmp_path):
    from chatlab.sweep.adapter import COMPARE_METRICS, CRASH_METRICS

    assert load_sweep(write_sweep(tmp_path / "a.toml", "")).metrics == COMPARE_METRICS
    crash = load_sweep(write_sweep(tmp_path / "b.toml", 'kind = "crash"\npolicies = ["immediate", "full_jitter"]\n'))
    assert crash.metrics == CRASH_METRICS
    assert crash.axis_names == ("reconnect_policy",)


def test_base_scenario_file_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "base.toml").write_text("clients = 40\nrtt_ms = 33\n")
    f = write_sweep(tmp_path / "s.toml", 'scenario = "base.toml"\n', base="[base]\nrtt_ms = 44\n")
    spec = load_sweep(f)
    assert (spec.base.clients, spec.base.rtt_ms) == (40, 44.0)


def test_dry_run_lists_points(tiny_sweep, capsys):
    assert main(["sweep", str(tiny_sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 points x 2 transports x 3 replications = 12 runs" in out
    assert "point 1: rtt_ms=200.0" in out
