"""An interrupted sweep (SIGTERM, SIGKILL, a killed worker) keeps every finished row, and
``--resume`` completes it to exactly the table an uninterrupted sweep gives."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from chatlab.sweep import load_runs, load_sweep, run_sweep
from chatlab.sweep.store import VOLATILE_COLUMNS

from .conftest import write_sweep

ROOT = Path(__file__).resolve().parents[2]

#: 3 points x 2 transports x 3 replications = 18 runs of about 0.1 s: a few seconds on 2 processes.
BODY = """
name = "kill-me"
seed = 5
replications = 3
metrics = ["latency_ms_p50", "latency_ms_p99", "requests_per_s", "server_cpu_utilization"]
[grid]
rtt_ms = [10, 100, 400]
"""
BASE = '[base]\nclients = 500\nduration_s = 40\nwarmup_s = 6\nconnect_ramp_s = 3\ntransports = ["long_polling", "websocket"]\n'


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted table (a process pool, batched writes)."""
    d = tmp_path_factory.mktemp("ref")
    f = write_sweep(d / "s.toml", BODY, BASE)
    run_sweep(load_sweep(f), d / "out", jobs=2)
    return _table(d / "out")


def _table(out) -> pd.DataFrame:
    return load_runs(out).drop(columns=list(VOLATILE_COLUMNS))


def _start(f: Path, out: Path, *extra: str) -> subprocess.Popen:
    # --flush 0: each row is written as its run finishes, so the kill lands early in the sweep
    return subprocess.Popen([sys.executable, "-m", "chatlab.cli", "sweep", str(f), "--out", str(out), "--jobs", "2",
                             "--flush", "0", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_parts(out: Path, n: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while len(list((out / "runs").glob("part-*.parquet"))) < n:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "worker"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, reference, how):
    f = write_sweep(tmp_path / "s.toml", BODY, BASE)
    out = tmp_path / "out"
    proc = _start(f, out)
    _wait_for_parts(out, 3, proc)
    if how == "worker":
        workers = _children(proc.pid)
        assert workers, "the pool's workers are children of the sweep"
        os.kill(workers[0], signal.SIGKILL)
    else:
        proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=60)
    kept = load_runs(out)
    assert 3 <= len(kept) < len(reference), "finished rows are kept, and the sweep did stop"
    if how == "SIGTERM":
        assert proc.returncode == 128 + signal.SIGTERM
        assert "interrupted (SIGTERM)" in err and "--resume" in err
    elif how == "worker":
        assert proc.returncode == 1 and "a worker process died" in err and "--resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    # every kept row is exactly the reference's row
    ref = reference.set_index("run_id")
    got = _table(out).set_index("run_id")
    pd.testing.assert_frame_equal(got, ref.loc[got.index])

    resumed = _start(f, out, "--resume")
    so, se = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, se
    assert f"{len(kept)} runs were already in" in so
    pd.testing.assert_frame_equal(_table(out), reference)


def test_orphaned_workers_exit_after_sigkill(tmp_path):
    f = write_sweep(tmp_path / "s.toml", BODY, BASE)
    out = tmp_path / "out"
    proc = _start(f, out)
    _wait_for_parts(out, 1, proc)
    workers = _children(proc.pid)
    proc.kill()
    proc.communicate(timeout=10)  # reaps it and closes its pipes
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() and "Z" not in _state(w) for w in workers):
        assert time.monotonic() < deadline, "pool workers outlived their killed parent"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (OSError, IndexError):
        return "Z"
