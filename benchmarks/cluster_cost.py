"""``make bench-cluster``: what a cluster costs on one machine (docs/PERFORMANCE.md,
"A cluster on one machine").

The same fixed load (WebSocket clients of the load generator, one-to-one chats, the
validation workload) against three set-ups, one after another in one run:

* ``1 process``: the default server, SQLite and embedded fakeredis in one process;
* ``1 behind HAProxy``: one server process, HAProxy in front, Redis and PostgreSQL;
* ``N behind HAProxy``: N server processes, the same HAProxy, Redis and PostgreSQL.

For each: CPU seconds per delivered message, of the servers and of everything the set-up
runs (servers, HAProxy, Redis, every PostgreSQL process), and the latency percentiles of
the messages sent in the window. Redis and PostgreSQL are private ones started for the run.
The load generator (clients and the counting proxy) runs in this process and is not counted.

    python -m benchmarks.cluster_cost [--clients 100] [--rate 20] [--servers 4] [--duration 30] [--repeat 1]
                                      [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

from reference_server.cluster import ClusterSpec, ClusterTarget, LocalCluster
from reference_server.loadgen import LoadConfig, ServerProcess, run_load
from reference_server.loadgen.server_proc import _TICKS


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of *pid*, its reaped children (cutime, cstime) and its live children:
    PostgreSQL's postmaster and its backends."""
    def stat(p: int) -> list[str]:
        text = Path(f"/proc/{p}/stat").read_text()
        return text[text.rindex(")") + 2:].split()

    f = stat(pid)
    total = sum(int(x) for x in f[11:15])  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                c = stat(int(entry))
            except OSError:
                continue
            if int(c[1]) == pid:
                total += int(c[11]) + int(c[12])
    return total / _TICKS


def _cpu_of(cluster: LocalCluster | None, server: ServerProcess | None) -> dict[str, float]:
    if server is not None:
        return {"servers": server.cpu_seconds(), "haproxy": 0.0, "redis": 0.0, "postgres": 0.0}
    assert cluster is not None and cluster.haproxy is not None and cluster.haproxy.child.proc is not None
    assert cluster.redis is not None and cluster.postgres is not None
    assert cluster.redis.child.proc is not None and cluster.postgres.child.proc is not None
    return {"servers": cluster.cpu_seconds(), "haproxy": cluster.cpu_seconds("haproxy"),
            "redis": process_tree_cpu(cluster.redis.child.proc.pid),
            "postgres": process_tree_cpu(cluster.postgres.child.proc.pid)}


def load_config(clients: int, rate: float, duration: float, seed: int) -> LoadConfig:
    return LoadConfig.from_params({"clients": clients, "duration_s": duration, "warmup_s": 5.0,
                                   "connect_ramp_s": 3.0, "rtt_ms": 0.0, "msg_rate_per_min": rate,
                                   "group_size": 2, "payload_bytes": 100, "read_delay_s": 3.0,
                                   "receipts": True, "seed": seed}, transport="websocket")


async def one(setup: str, servers: int, cfg: LoadConfig) -> dict[str, Any]:
    """One set-up under *cfg*'s load: CPU per delivered message and latency percentiles."""
    with tempfile.TemporaryDirectory(prefix="chatlab-bench-") as tmp:
        cluster = server = None
        if servers == 0:
            server = ServerProcess(Path(tmp) / "server", redis_prefix=f"bench-{uuid.uuid4().hex[:8]}")
            await server.start()
            target: Any = server
        else:
            cluster = LocalCluster(ClusterSpec(servers=servers, profile="loadtest", work_dir=Path(tmp) / "c"))
            await cluster.start()
            target = ClusterTarget(cluster)
        try:
            before = _cpu_of(cluster, server)
            res = await run_load(cfg, target)
            after = _cpu_of(cluster, server)
        finally:
            if server is not None:
                await server.stop()
            if cluster is not None:
                await cluster.stop()
    s = res.summary
    # CPU over the whole run (start-up excluded) per message delivered over the whole run
    delivered = len(res.messages)
    cpu = {k: after[k] - before[k] for k in before}
    lat = s["latency_ms"]
    return {"setup": setup, "servers": max(servers, 1), "clients": cfg.clients, "delivered": delivered,
            "cpu_ms_per_message_servers": 1000 * cpu["servers"] / delivered if delivered else None,
            "cpu_ms_per_message_total": 1000 * sum(cpu.values()) / delivered if delivered else None,
            "cpu_s": cpu, "p50_ms": lat["p50"], "p95_ms": lat["p95"], "p99_ms": lat["p99"],
            "server_cpu_utilization_window": s["server_cpu_utilization"],
            "loadgen_cpu_utilization": s["loadgen_cpu_utilization"], "send_failures": s["send_failures"],
            "loadgen_loop_lag_p95_ms": s["loadgen_loop_lag_ms"]["p95"]}


def _median_rows(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for k in ("cpu_ms_per_message_servers", "cpu_ms_per_message_total", "p50_ms", "p95_ms", "p99_ms"):
        vals = [r[k] for r in runs if r[k] is not None]
        out[k] = statistics.median(vals) if vals else None
    out["runs"] = len(runs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster_cost")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rate", type=float, default=20.0, help="messages per minute per client")
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the three set-ups (medians reported)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    setups = [("1 process (SQLite, fakeredis)", 0), ("1 behind HAProxy", 1), (f"{a.servers} behind HAProxy", a.servers)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in setups}
    for k in range(a.repeat):  # interleaved, so that the machine's drift hits every set-up alike
        for name, n in setups:
            print(f"round {k + 1}: {name} ...", flush=True)
            runs[name].append(asyncio.run(one(name, n, load_config(a.clients, a.rate, a.duration, seed=1 + k))))
    rows = [_median_rows(runs[name]) for name, _ in setups]
    print(f"\n{a.clients} WebSocket clients, {a.rate:g} msg/min each, one-to-one, receipts on, rtt 0; "
          f"{a.duration:g} s runs; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
          f"median of {a.repeat} round(s)")
    head = (f"{'set-up':<32}{'CPU ms/msg servers':>20}{'CPU ms/msg all':>16}{'p50 ms':>9}{'p95 ms':>9}"
            f"{'p99 ms':>9}{'failed sends':>14}")
    print(head)
    for r in rows:
        print(f"{r['setup']:<32}{r['cpu_ms_per_message_servers']:>20.3f}{r['cpu_ms_per_message_total']:>16.3f}"
              f"{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{sum(x['send_failures'] for x in runs[r['setup']]):>14}")
    base = rows[0]["cpu_ms_per_message_total"]
    for r in rows[1:]:
        print(f"{r['setup']}: {r['cpu_ms_per_message_total'] / base:.2f}x the CPU per message of one process")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "runs": runs}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
