"""``make bench``: how fast the model simulates, measured against a bare SimPy loop.

Sweeps and capacity planning: see ``benchmarks/sweeps.py`` (``--only sweeps``).

For each transport: simulated requests per wall second of the full model, and
of bare SimPy loops that do the minimum events one request of each kind needs
(see ``KIND_OF_CLASS``), run on the same mix of request kinds in the same
process and the same run, with the ratio (target: the model costs at most 2x
the bare loop per request). A second baseline runs the same bare loops on the
model's own CPU class (``sim.cpu.Cpu``, which schedules up to two fewer events per CPU
use than a plain ``simpy.Resource``), so the table separates what the CPU class
saves from what the model's bookkeeping costs. Then the wall time of the
default `chatlab compare` scenario (target < 30 s), of 10,000 clients for
10 simulated minutes, all three transports (target < 60 s in total), and of a
10,000-client crash scenario (reported).

Every timing is the median of ``--repeat`` runs (the machine is shared and noisy).

    python -m benchmarks [--repeat 3] [--skip-large] [--only model|sweeps] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import simpy

import sim
from chatlab.parallel import default_jobs
from sim.cpu import Cpu


#: The least a request of each kind costs in SimPy events:
#:   poll      wait for the slot, take a core, serve, release                      (4 events)
#:   longpoll  arrive, core+serve+release (hold), wait, core+serve+release, return  (9 events)
#:   post      arrive, core+serve+release, durable append                          (5 events)
#:   push      core+serve+release, then the next push                             (4 events)
KIND_OF_CLASS = {"poll": "poll", "longpoll": "longpoll", "send": "post", "receipt": "post",
                 "ws_send": "post", "ws_receipt": "post", "handshake": "post", "ws_event": "push", "ping": "push"}


def _timed_run(task):
    t = time.perf_counter()
    sim.run(*task)
    return time.perf_counter() - t


def bare_loop(kind: str, n_clients: int = 2000, until_s: float = 60.0, cores: int = 2,
              same_cpu: bool = False) -> int:
    """Requests of one *kind* completed by a bare SimPy loop (no bookkeeping at all).

    The CPU is a plain ``simpy.Resource`` (request, yield, serve, release), or with
    *same_cpu* the model's own :class:`sim.cpu.Cpu`, which skips the two events nobody
    waits on: the second baseline isolates what the model's bookkeeping costs."""
    env = simpy.Environment()
    cpu = Cpu(env, cores) if same_cpu else simpy.Resource(env, cores)
    done = [0]
    service, gap = 0.0003, 1.0

    def serve():
        if same_cpu:
            req = cpu.acquire()
            if req is not None:
                yield req
            yield env.timeout(service)
            cpu.free(req)
            return
        req = cpu.request()
        yield req
        yield env.timeout(service)
        cpu.release(req)

    def client(phase: float):
        yield env.timeout(phase)
        while True:
            if kind == "poll":
                yield env.timeout(gap)
                yield from serve()
            elif kind == "longpoll":
                yield env.timeout(0.05)
                yield from serve()
                yield env.timeout(gap)  # held until an event or the timeout
                yield from serve()
                yield env.timeout(0.05)
            elif kind == "post":
                yield env.timeout(gap)
                yield from serve()
                yield env.timeout(0.0012)
            else:  # push
                yield from serve()
                yield env.timeout(gap)
            done[0] += 1

    for i in range(n_clients):
        env.process(client(i * gap / n_clients))
    env.run(until=until_s)
    return done[0]


def _median_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def per_request(repeat: int) -> list[dict]:
    """Model requests per wall second vs the bare loops doing the same mix of request kinds
    (on a plain ``simpy.Resource``, and on the model's own CPU class)."""
    bare_rate, same_rate = {}, {}
    for kind in ("poll", "longpoll", "post", "push"):
        wall, n = _median_time(lambda: bare_loop(kind), repeat)
        bare_rate[kind] = n / wall
        wall, n = _median_time(lambda: bare_loop(kind, same_cpu=True), repeat)
        same_rate[kind] = n / wall
    base = sim.Scenario().with_overrides({"clients": 2000, "duration_s": 120, "warmup_s": 0.001})
    rows = []
    for transport in sim.Scenario().transports:
        wall, r = _median_time(lambda: sim.run(base, transport), repeat)
        c = r.classes.set_index("class")
        counts = {}
        for cls, kind in KIND_OF_CLASS.items():
            if cls in c.index:
                n = c.at[cls, "messages_down"] if kind == "push" else c.at[cls, "messages_up"]
                counts[kind] = counts.get(kind, 0) + int(n)
        requests = sum(counts.values())
        bare_wall = sum(n / bare_rate[k] for k, n in counts.items())
        same_wall = sum(n / same_rate[k] for k, n in counts.items())
        rows.append({"transport": transport, "simulated_requests": requests, "mix": counts,
                     "model_requests_per_wall_s": requests / wall,
                     "bare_requests_per_wall_s": requests / bare_wall,
                     "cost_ratio": wall / bare_wall,
                     "bare_same_cpu_requests_per_wall_s": requests / same_wall,
                     "cost_ratio_same_cpu": wall / same_wall})
    return rows


def whole_runs(repeat: int, skip_large: bool) -> list[dict]:
    """Wall time of whole comparisons, the transports in parallel processes as
    `chatlab compare` runs them; also each transport's own wall time."""
    from concurrent.futures import ProcessPoolExecutor

    cases = [("default scenario (make demo)", sim.Scenario(), 30.0, repeat)]
    if not skip_large:
        cases.append(("10,000 clients x 10 simulated min", sim.Scenario().with_overrides(
            {"clients": 10_000, "duration_s": 600, "warmup_s": 30}), 60.0, 1))
    rows = []
    for name, sc, target, reps in cases:
        jobs = default_jobs(len(sc.transports))
        tasks = [(sc, t) for t in sc.transports]
        walls, per_t = [], {}
        for _ in range(reps):
            t0 = time.perf_counter()
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                each = list(pool.map(_timed_run, tasks))
            walls.append(time.perf_counter() - t0)
            per_t = dict(zip(sc.transports, each))
        wall = statistics.median(walls)
        rows.append({"case": name, "jobs": jobs, "wall_s": wall, "target_s": target, "meets_target": wall < target,
                     "wall_s_per_transport": per_t})
    return rows


def _timed_crash(task):
    from sim.crash import run_crash

    t = time.perf_counter()
    r = run_crash(*task)
    return time.perf_counter() - t, r.summary["time_to_reconnect_all_s"]


def crash_runs() -> dict:
    """Wall time of a 10,000-client crash scenario (1 of 4 servers crashes at 60 s for 30 s,
    180 simulated seconds), each transport with the default policy, in parallel processes."""
    from concurrent.futures import ProcessPoolExecutor

    sc = sim.Scenario().with_overrides({"clients": 10_000})
    tasks = [(sc, t, sc.reconnect_policy) for t in sc.transports]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=default_jobs(len(tasks))) as pool:
        each = list(pool.map(_timed_crash, tasks))
    return {"case": "10,000-client crash scenario", "wall_s": time.perf_counter() - t0,
            "wall_s_per_transport": {t: w for t, (w, _) in zip(sc.transports, each)},
            "time_to_reconnect_all_s": {t: r for t, (_, r) in zip(sc.transports, each)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="skip the 10,000-client case")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--only", choices=("model", "sweeps"), help="run one part: the model's speed, or the sweep "
                    "machinery and chatlab capacity (benchmarks/sweeps.py)")
    a = ap.parse_args(argv)
    meta = {"python": platform.python_version(), "simpy": simpy.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "cores": default_jobs(99)}
    rows = runs = crash = sweeps = capacity = None
    if a.only != "sweeps":
        rows, runs, crash = model_speed(a)
    if a.only != "model":
        from .sweeps import capacity_50m, report, sweep_speed

        print(f"\n# sweep machinery   (median of {a.repeat})")
        sweeps = sweep_speed(a.repeat)
        capacity = None if a.skip_large else capacity_50m()
        report(sweeps, capacity)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "per_request": rows, "runs": runs, "crash": crash, "sweeps": sweeps,
                       "capacity": capacity}, f, indent=2)
    return 0


def model_speed(a):
    print(f"# model speed   (median of {a.repeat}; Python {platform.python_version()}, SimPy {simpy.__version__}, "
          f"{default_jobs(99)} cores)")
    rows = per_request(a.repeat)
    print(f"{'transport':<15}{'model req/s':>14}{'bare req/s':>14}{'cost ratio':>12}   (target <= 2.0)"
          f"{'bare, model CPU':>18}{'ratio':>8}")
    for r in rows:
        print(f"{r['transport']:<15}{r['model_requests_per_wall_s']:>14,.0f}{r['bare_requests_per_wall_s']:>14,.0f}"
              f"{r['cost_ratio']:>12.2f}{'':18}{r['bare_same_cpu_requests_per_wall_s']:>18,.0f}"
              f"{r['cost_ratio_same_cpu']:>8.2f}")
    runs = whole_runs(a.repeat, a.skip_large)
    print()
    for r in runs:
        per = ", ".join(f"{k} {v:.1f} s" for k, v in r["wall_s_per_transport"].items())
        print(f"{r['case']}: {r['wall_s']:.1f} s wall with {r['jobs']} processes "
              f"(target < {r['target_s']:.0f} s: {'met' if r['meets_target'] else 'MISSED'}); each: {per}")
    crash = None
    if not a.skip_large:
        crash = crash_runs()
        per = ", ".join(f"{k} {v:.1f} s" for k, v in crash["wall_s_per_transport"].items())
        print(f"{crash['case']}: {crash['wall_s']:.1f} s wall; each: {per}")
    return rows, runs, crash


if __name__ == "__main__":
    sys.exit(main())
