"""``make bench``: how fast the model simulates, measured against a bare SimPy loop.

For each transport: simulated client->server requests per wall second of the
full model, and of a bare SimPy loop that does the minimum events one request
needs (a timeout to the next request, a CPU request, a service timeout, a
release), in the same process and the same run, with the ratio (target: the
model costs at most 2x the bare loop per request). Then the wall time of the
default `chatlab compare` scenario (target < 30 s) and of 10,000 clients for
10 simulated minutes, all three transports (target < 60 s in total).

Every timing is the median of ``--repeat`` runs (the machine is shared and noisy).

    python -m benchmarks [--repeat 3] [--skip-large] [--json FILE]
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
from chatlab.parallel import default_jobs, run_many


def bare_loop(n_clients: int, interval_s: float, until_s: float, service_s: float, cores: int) -> int:
    """The least a request costs in SimPy: wait, take a core, serve, release."""
    env = simpy.Environment()
    cpu = simpy.Resource(env, cores)
    done = [0]

    def client(phase: float):
        yield env.timeout(phase)
        while True:
            req = cpu.request()
            yield req
            yield env.timeout(service_s)
            cpu.release(req)
            done[0] += 1
            yield env.timeout(interval_s)

    for i in range(n_clients):
        env.process(client(i * interval_s / n_clients))
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
    base = sim.Scenario().with_overrides({"clients": 2000, "duration_s": 120, "warmup_s": 0.001})
    rows = []
    for transport in sim.Scenario().transports:
        sc = base
        wall, r = _median_time(lambda: sim.run(sc, transport), repeat)
        requests = sum(int(x) for x in r.bins["requests_up"]) + sum(
            int(x) for x in r.classes["messages_down"])  # every request and every pushed frame
        # the bare loop, same number of simulated requests, same run
        interval = sc.clients * sc.duration_s / max(requests, 1)
        b_wall, b_requests = _median_time(
            lambda: bare_loop(sc.clients, interval, sc.duration_s, sc.cpu_poll_ms / 1000, sc.server_cores), repeat)
        model_rate, bare_rate = requests / wall, b_requests / b_wall
        rows.append({"transport": transport, "simulated_requests": requests,
                     "model_requests_per_wall_s": model_rate, "bare_requests_per_wall_s": bare_rate,
                     "cost_ratio": bare_rate / model_rate})
    return rows


def whole_runs(repeat: int, skip_large: bool) -> list[dict]:
    cases = [("default scenario (make demo)", sim.Scenario(), 30.0)]
    if not skip_large:
        cases.append(("10,000 clients x 10 simulated min", sim.Scenario().with_overrides(
            {"clients": 10_000, "duration_s": 600, "warmup_s": 30}), 60.0))
    rows = []
    for name, sc, target in cases:
        jobs = default_jobs(len(sc.transports))
        tasks = [(sc, t) for t in sc.transports]
        wall, _ = _median_time(lambda: run_many(tasks, jobs), repeat if not name.startswith("10,000") else 1)
        per_t = {}
        for t in sc.transports:
            w, _ = _median_time(lambda: sim.run(sc, t), 1)
            per_t[t] = w
        rows.append({"case": name, "jobs": jobs, "wall_s": wall, "target_s": target, "meets_target": wall < target,
                     "serial_wall_s_per_transport": per_t})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="skip the 10,000-client case")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args(argv)
    meta = {"python": platform.python_version(), "simpy": simpy.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "cores": default_jobs(99)}
    print(f"# model speed   (median of {a.repeat}; Python {meta['python']}, SimPy {meta['simpy']}, "
          f"{meta['cores']} cores)")
    rows = per_request(a.repeat)
    print(f"{'transport':<15}{'model req/s':>14}{'bare req/s':>14}{'cost ratio':>12}   (target <= 2.0)")
    for r in rows:
        print(f"{r['transport']:<15}{r['model_requests_per_wall_s']:>14,.0f}{r['bare_requests_per_wall_s']:>14,.0f}"
              f"{r['cost_ratio']:>12.2f}")
    runs = whole_runs(a.repeat, a.skip_large)
    print()
    for r in runs:
        per = ", ".join(f"{k} {v:.1f} s" for k, v in r["serial_wall_s_per_transport"].items())
        print(f"{r['case']}: {r['wall_s']:.1f} s wall with {r['jobs']} processes "
              f"(target < {r['target_s']:.0f} s: {'met' if r['meets_target'] else 'MISSED'}); serial: {per}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "per_request": rows, "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
