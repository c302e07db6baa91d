"""Serial, process-pool and Dask runs give identical rows; a failing run is recorded, not fatal."""

import pandas as pd
import pytest

from chatlab.cli import main
from chatlab.sweep import load_runs, load_sweep, run_sweep
from chatlab.sweep.store import VOLATILE_COLUMNS


def _table(out):
    return load_runs(out).drop(columns=list(VOLATILE_COLUMNS))


def test_serial_pool_and_dask_give_identical_rows(tiny_sweep, tmp_path):
    spec = load_sweep(tiny_sweep)
    run_sweep(spec, tmp_path / "serial", jobs=1)
    run_sweep(spec, tmp_path / "pool", jobs=2)
    serial = _table(tmp_path / "serial")
    assert len(serial) == 12 and (serial["status"] == "ok").all()
    pd.testing.assert_frame_equal(serial, _table(tmp_path / "pool"))

    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        run_sweep(spec, tmp_path / "dask", executor=client.get_executor())
    pd.testing.assert_frame_equal(serial, _table(tmp_path / "dask"))


def test_rows_are_tidy_and_carry_provenance(tiny_sweep, tmp_path):
    from sim import PARAMETER_NAMES

    assert main(["sweep", str(tiny_sweep), "--out", str(tmp_path / "o"), "--jobs", "1"]) == 0
    df = load_runs(tmp_path / "o")
    for col in ("point", "replication", "seed", "transport", "run_id", "wall_s", "chatlab_version", "git_commit",
                "status", "error", "latency_ms_p95", *[p for p in PARAMETER_NAMES if p != "seed"]):
        assert col in df.columns, col
    assert df["wall_s"].gt(0).all()
    assert set(df["rtt_ms"]) == {20.0, 200.0}
    assert df.groupby("replication")["seed"].nunique().eq(1).all()
    assert len(list((tmp_path / "o" / "runs").glob("*.parquet"))) == 1, "parts are compacted at the end"


def _fail_on_high_rtt(scenario, transport, policy=None):
    from chatlab.sweep.adapter import run_compare

    if scenario.rtt_ms > 100:
        raise RuntimeError("the model broke at rtt 200")
    return run_compare(scenario, transport, policy)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_run_is_recorded_with_its_error(tiny_sweep, tmp_path, monkeypatch, capsys, jobs):
    from chatlab.sweep import adapter

    monkeypatch.setitem(adapter.RUNNERS, "compare", _fail_on_high_rtt)  # pool workers fork after this
    out = tmp_path / "o"
    assert main(["sweep", str(tiny_sweep), "--out", str(out), "--jobs", str(jobs)]) == 1
    assert "6 runs failed (recorded with their error); first: RuntimeError: the model broke at rtt 200" in \
        capsys.readouterr().err
    df = load_runs(out)
    bad = df[df["rtt_ms"] == 200.0]
    assert len(df) == 12 and (bad["status"] == "error").all() and bad["latency_ms_p95"].isna().all()
    assert (bad["error"] == "RuntimeError: the model broke at rtt 200").all()
    assert (df[df["rtt_ms"] == 20.0]["status"] == "ok").all()
    # --resume --retry-failed runs only the failed ones again (now fixed)
    monkeypatch.undo()
    assert main(["sweep", str(tiny_sweep), "--out", str(out), "--resume", "--retry-failed", "--jobs", "1"]) == 0
    assert "6 runs were already in" in capsys.readouterr().out
    assert (load_runs(out)["status"] == "ok").all()


def test_rerun_into_the_same_directory_needs_resume(tiny_sweep, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["sweep", str(tiny_sweep), "--out", out, "--jobs", "1"]) == 0
    assert main(["sweep", str(tiny_sweep), "--out", out, "--jobs", "1"]) == 2
    assert "already holds 12 finished runs; add --resume" in capsys.readouterr().err
    assert main(["sweep", str(tiny_sweep), "--out", out, "--resume", "--set", "clients=30"]) == 2
    assert "--resume: " in capsys.readouterr().err
    assert main(["sweep", str(tiny_sweep), "--out", out, "--resume", "--replications", "4", "--jobs", "1"]) == 0
    assert "4 runs in" in capsys.readouterr().out  # a grown sweep runs only its new replication
    assert len(load_runs(out)) == 16
