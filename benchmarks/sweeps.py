"""Sweep machinery speed (``make bench``, or ``python -m benchmarks --only sweeps``).

* **Parallel speed-up**: a 40-run sweep of small scenarios (5 points x 2 transports x 4
  replications, about 0.3 s a run) with ``--jobs 1`` and with one process per core; the
  speed-up is the ratio of their wall times, pool start-up and Parquet writes included
  (target >= 1.8 on 2 cores).
* **Per-run overhead**: the same 40 runs called directly (``sim.run`` in a loop, nothing
  else, under the adapter's garbage-collector pause) against ``run_sweep(jobs=1)`` (plan,
  task, adapter, a Parquet part per run, compaction); overhead = sweep / direct - 1 (target
  < 5 %). Plain ``sim.run`` calls with the collector running are timed too: the pause's gain.
* **Dask**: the same sweep on a ``LocalCluster`` of one single-threaded worker process per
  core, with and without the cluster's start-up.
* **Capacity**: ``chatlab capacity`` on the 50-million-user question (10 % online at the
  peak), all transports and WebSocket alone, with the default settings (target < 2 min).

Every timing is the median of ``repeat`` runs, measured in one process, so the ratios
compare like with like on this shared machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

SWEEP = """
name = "bench-40"
seed = 40
replications = 4
[base]
clients = 1200
duration_s = 40
warmup_s = 10
connect_ramp_s = 5
transports = ["long_polling", "websocket"]
[grid]
rtt_ms = [20, 50, 100, 200, 400]
"""


def _spec(tmp: Path):
    from chatlab.sweep import load_sweep

    f = tmp / "bench.toml"
    f.write_text(SWEEP, encoding="utf-8")
    return load_sweep(f)


def _direct(spec, pause_gc: bool) -> float:
    """The 40 runs as plain model calls: what a researcher's own loop would do; with
    *pause_gc*, each call under the same garbage-collector pause as the sweep's adapter."""
    import contextlib

    import sim
    from chatlab.sweep import plan
    from chatlab.sweep.adapter import paused_gc

    runs = plan(spec)
    t0 = time.perf_counter()
    for r in runs:
        with paused_gc() if pause_gc else contextlib.nullcontext():
            sim.run(r.scenario, r.transport).summary
    return time.perf_counter() - t0


def _sweep(spec, tmp: Path, **kw) -> float:
    from chatlab.sweep import run_sweep

    out = Path(tempfile.mkdtemp(dir=tmp))
    t0 = time.perf_counter()
    rep = run_sweep(spec, out, **kw)
    wall = time.perf_counter() - t0
    assert rep.outcome.done == 40 and rep.outcome.failed == 0
    return wall


def sweep_speed(repeat: int) -> dict:
    import os

    from chatlab.sweep.execute import default_jobs

    jobs = default_jobs()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec = _spec(tmp)
        plain, direct, serial, parallel = [], [], [], []
        for _ in range(repeat):  # interleaved, so drifts in the machine's load hit all alike
            plain.append(_direct(spec, pause_gc=False))
            direct.append(_direct(spec, pause_gc=True))
            serial.append(_sweep(spec, tmp, jobs=1))
            parallel.append(_sweep(spec, tmp, jobs=jobs))
        res = {"runs": 40, "jobs": jobs, "plain_s": statistics.median(plain), "direct_s": statistics.median(direct),
               "serial_s": statistics.median(serial), "parallel_s": statistics.median(parallel)}
        res["speedup"] = res["serial_s"] / res["parallel_s"]
        res["overhead"] = res["serial_s"] / res["direct_s"] - 1.0
        res["gc_gain"] = 1.0 - res["direct_s"] / res["plain_s"]
        res["pairs"] = {"plain": plain, "direct": direct, "serial": serial, "parallel": parallel}
        res["load_average"] = [load_before, os.getloadavg()[0]]
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            return res
        walls, with_start = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
                    Client(cl) as client:
                walls.append(_sweep(spec, tmp, executor=client.get_executor()))
            with_start.append(time.perf_counter() - t0)
        res["dask_s"] = statistics.median(walls)
        res["dask_with_startup_s"] = statistics.median(with_start)
        res["dask_speedup"] = res["serial_s"] / res["dask_s"]
    return res


def capacity_50m() -> list[dict]:
    """Wall time of the 50-million-user question, as a user would type it."""
    import os
    import subprocess
    import sys

    rows = []
    for label, extra in (("all transports", []), ("websocket", ["--transport", "websocket"])):
        cmd = [sys.executable, "-m", "chatlab.cli", "capacity", "--users", "50000000", *extra]
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        answer = [line.strip() for line in p.stdout.splitlines() if "servers" in line and "clients each" in line]
        rows.append({"case": label, "wall_s": wall, "exit": p.returncode, "answer": answer, "target_s": 120.0,
                     "load_average_before": load})
    return rows


def report(res: dict, cap: list[dict] | None) -> None:
    print(f"(1-minute load average before / after: {res['load_average'][0]:.1f} / {res['load_average'][1]:.1f} "
          f"on {res['jobs']} cores: other processes share them, and a speed-up needs idle cores)")
    print(f"40-run sweep, {res['jobs']} processes: {res['parallel_s']:.1f} s vs --jobs 1 {res['serial_s']:.1f} s: "
          f"speed-up {res['speedup']:.2f}x (target >= 1.8: {'met' if res['speedup'] >= 1.8 else 'MISSED'})")
    print(f"per-run overhead: --jobs 1 sweep {res['serial_s']:.2f} s vs the model called directly "
          f"{res['direct_s']:.2f} s (same GC pause): {res['overhead']:+.1%} (target < 5 %: "
          f"{'met' if res['overhead'] < 0.05 else 'MISSED'}); the GC pause itself saves {res['gc_gain']:.1%} "
          f"(plain calls {res['plain_s']:.2f} s)")
    if "dask_s" in res:
        print(f"Dask LocalCluster ({res['jobs']} worker processes): {res['dask_s']:.1f} s "
              f"(speed-up {res['dask_speedup']:.2f}x), {res['dask_with_startup_s']:.1f} s with cluster start-up")
    for r in cap or []:
        print(f"chatlab capacity --users 50000000 ({r['case']}): {r['wall_s']:.0f} s (target < 120 s: "
              f"{'met' if r['wall_s'] < 120 else 'MISSED'}); exit {r['exit']}; load average before "
              f"{r['load_average_before']:.1f}")
        for a in r["answer"]:
            print(f"    {a}")
