"""``chatlab capacity``: the most clients one connection server holds within an SLO, per
transport, and the servers a user base needs."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from .errors import UsageError
from .scenario_args import add_scenario_arguments, scenario_from_args

#: Peak concurrent connections as a share of daily users: the usual system-design-interview
#: assumption (e.g. 50 M DAU -> 5 M concurrent), not a measurement. docs/SWEEPS.md cites it.
DEFAULT_CONCURRENCY = 0.10

_COST_RANK = {"websocket": 0, "long_polling": 1, "short_polling": 2}

ASSUMPTIONS = [
    "users are independent across connection servers: the sticky load balancer keeps each user on one server "
    "and the servers share nothing the model limits, so one server's share of the users is simulated alone",
    "one connection per online user (one device); servers = ceil(users online at the peak / clients per server)",
    "steady state only: the connect storm of a (re)start is the crash model's question (chatlab crash); "
    "WebSocket probes count no handshake CPU (each client connects once, before the window)",
    "the server's CPU costs are the scenario's (provisional until `chatlab calibrate` measures them); "
    "memory, file descriptors and the network are unlimited unless an SLO names them",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .sweep.capacity import DEFAULT_SLO

    add_scenario_arguments(p)
    p.add_argument("--users", metavar="N", help="daily users to serve (e.g. 50000000); omit for clients per server only")
    p.add_argument("--concurrency", default=str(DEFAULT_CONCURRENCY), metavar="F",
                   help=f"share of daily users online at the peak (default {DEFAULT_CONCURRENCY}: the usual "
                        "interview assumption, not a measurement)")
    p.add_argument("--transport", metavar="A,B", help="transports to size (default: the scenario's transports)")
    p.add_argument("--slo", default=DEFAULT_SLO, metavar="EXPR",
                   help=f"constraints METRIC<=N,... on summary columns (default: {DEFAULT_SLO})")
    p.add_argument("--replications", default="3", metavar="N", help="independent searches per transport (default 3)")
    p.add_argument("--tolerance", default="0.02", metavar="F",
                   help="stop when the bracket is narrower than this share of its lower end (default 0.02)")
    p.add_argument("--window", default="5", metavar="S", help="measured seconds per probe after the warm-up (default 5)")
    p.add_argument("--max-clients", default="2000000", metavar="N", help="largest client count tried (default 2,000,000)")
    p.add_argument("--verify", action="store_true",
                   help="re-run each answer with a 6x longer window and real handshake CPU, and report it")
    p.add_argument("--jobs", default="auto", metavar="N", help="searches in parallel processes (default: every core)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def _num(flag: str, value: str, lo: float, hi: float, integer: bool = False) -> float:
    try:
        x = float(value.replace("_", "")) if not integer else int(value.replace("_", "").replace(",", ""))
    except ValueError:
        x = math.nan
    if not (lo <= x <= hi):
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"{flag}={value}: expected {kind} from {lo:g} to {hi:g}")
    return x


def _task(task: tuple) -> dict:
    """A worker: one search (one transport, one replication)."""
    from .sweep.capacity import parse_slo, search

    key, base, transport, slo, tolerance, window, n_max = task
    res = search(base, transport, parse_slo(slo), tolerance=tolerance, window_s=window, n_max=n_max)
    return {"run_id": key, "result": res}


def _verify_task(task: tuple) -> dict:
    """A worker: one long run at an answer (real handshake CPU, 6x the window)."""
    from .sweep.adapter import run_compare
    from .sweep.capacity import probe_scenario

    key, base, transport, n, window = task
    sc = probe_scenario(base, transport, n, window).with_overrides({"cpu_handshake_ms": base.cpu_handshake_ms})
    if transport == "websocket":  # its connects now cost CPU: give them the polling transports' ramp rule
        from .sweep.capacity import CONNECT_SHARE, SETTLE_SHARE, SETTLE_S

        ramp = max(sc.connect_ramp_s, n * base.cpu_handshake_ms / 1000.0 / (CONNECT_SHARE * base.server_cores))
        warm = ramp + max(SETTLE_S, SETTLE_SHARE * ramp)
        sc = sc.with_overrides({"connect_ramp_s": ramp, "warmup_s": warm, "duration_s": warm + window})
    return {"run_id": key, "metrics": run_compare(sc, transport)}


def run(args: argparse.Namespace) -> int:
    from .compare_cmd import _jobs
    from .sweep.capacity import parse_slo
    from .sweep.design import run_seed
    from .sweep.execute import map_tasks

    t_start = time.perf_counter()
    base = scenario_from_args(args)
    constraints = parse_slo(args.slo)
    reps = int(_num("--replications", args.replications, 1, 1000, integer=True))
    tol = _num("--tolerance", args.tolerance, 0.001, 0.5)
    window = _num("--window", args.window, 1, 3600)
    n_max = int(_num("--max-clients", args.max_clients, 2, 100_000_000, integer=True))
    conc = _num("--concurrency", args.concurrency, 1e-6, 1.0)
    users = int(_num("--users", args.users, 1, 1e13, integer=True)) if args.users else None
    transports = list(base.transports)
    if args.transport:
        from chatcore.wire import TRANSPORTS

        transports = [t.strip() for t in args.transport.split(",") if t.strip()]
        if not transports or any(t not in TRANSPORTS for t in transports) or len(set(transports)) != len(transports):
            raise UsageError(f"--transport={args.transport}: a comma list of distinct names from "
                             + ",".join(TRANSPORTS))
    seeds = [run_seed(base.seed, r) for r in range(reps)]
    # longest first (WebSocket servers hold the most clients, so their probes cost the most), so
    # that the cheaper searches fill the cores while the last long ones finish
    order = sorted(transports, key=lambda t: _COST_RANK.get(t, 0))
    tasks = [((t, r), base.with_overrides({"seed": seeds[r]}), t, args.slo, tol, window, n_max)
             for t in order for r in range(reps)]
    jobs = _jobs(args.jobs, len(tasks))
    results: dict = {}
    out = map_tasks(tasks, lambda res: results.__setitem__(res["run_id"], res), jobs=jobs, fn=_task,
                    progress=sys.stderr.isatty() and not args.json, desc="capacity searches")
    if out.stopped:
        print(f"capacity: {out.stopped}; no answer", file=sys.stderr)
        return 128 + out.signum if out.signum else 1
    failed = [r for r in results.values() if r.get("error")]
    if failed:
        raise UsageError(f"capacity: a search failed: {failed[0]['error']}")
    answers = {t: _answer(t, [results[(t, r)]["result"] for r in range(reps)], users, conc) for t in transports}
    verified: dict = {}
    if args.verify:
        vt = [((t, r), base.with_overrides({"seed": seeds[r]}), t, int(answers[t]["clients_mean"]), 6 * window)
              for t in transports if answers[t]["clients_mean"] >= base.group_size for r in range(reps)]
        vres: dict = {}
        map_tasks(vt, lambda res: vres.__setitem__(res["run_id"], res), jobs=_jobs(args.jobs, len(vt)),
                  fn=_verify_task, progress=sys.stderr.isatty() and not args.json, desc="verifying")
        for t in transports:
            rows = [vres[(t, r)]["metrics"] for r in range(reps) if (t, r) in vres and not vres[(t, r)].get("error")]
            if rows:
                verified[t] = _verify_summary(rows, constraints, int(answers[t]["clients_mean"]), 6 * window)
    elapsed = out.elapsed_s
    total = time.perf_counter() - t_start
    if args.json:
        print(json.dumps({"scenario": base.to_dict(), "slo": [str(c) for c in constraints], "replications": reps,
                          "seeds": seeds, "tolerance": tol, "window_s": window, "users": users,
                          "concurrency": conc, "assumptions": ASSUMPTIONS, "answers": answers,
                          "verified": verified, "search_s": elapsed, "elapsed_s": total}, indent=2, allow_nan=False, default=_json))
        return 0
    print(_report(base, constraints, transports, results, answers, verified, reps, seeds, tol, window, users,
                  conc, elapsed, total))
    return 0


def _answer(transport: str, res: list, users: int | None, conc: float) -> dict:
    from .sweep.summary import mean_ci

    caps = [r.capacity for r in res]
    mean, sd, half, n = mean_ci(caps)
    known = half == half  # one search: no interval
    deciding = [r.deciding for r in res if r.deciding]
    a = {"transport": transport, "clients_per_replication": caps, "clients_mean": mean,
         "clients_ci95": [mean - half, mean + half] if known else None,
         "deciding": max(sorted(set(deciding)), key=deciding.count)
         if deciding else None, "feasible": mean > 0, "bracketed": all(r.bracket_high for r in res),
         "probes": [len(r.probes) for r in res]}
    if users is not None:
        online = math.ceil(users * conc)
        a["online_at_peak"] = online
        if mean > 0:
            a["servers"] = math.ceil(online / mean)
            a["servers_ci95"] = None
            if known:
                low = mean - half
                a["servers_ci95"] = [math.ceil(online / (mean + half)), math.ceil(online / low) if low > 0 else None]
    return a


def _verify_summary(rows: list[dict], constraints, n: int, window: float) -> dict:
    from .sweep.summary import mean_ci

    out: dict[str, Any] = {"clients": n, "window_s": window, "metrics": {}}
    for c in constraints:
        mean, _, half, k = mean_ci([r.get(c.metric) for r in rows])
        out["metrics"][c.metric] = {"mean": mean, "ci95": half, "ok": c.ok(mean), "constraint": str(c)}
    return out


def _fmt(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3f}"


def _report(base, constraints, transports, results, answers, verified, reps, seeds, tol, window, users, conc,
            elapsed, total) -> str:
    from .plots import LABELS

    sc = base
    lines = [f"Capacity of one connection server ({sc.server_cores} cores) within " + ", ".join(map(str, constraints)),
             f"per online user: {sc.msg_rate_per_min:g} msg/min, group {sc.group_size}, rtt {sc.rtt_ms:g} ms, "
             f"poll every {sc.poll_interval_s:g} s, receipts {'on' if sc.receipts else 'off'}; "
             f"{reps} independent searches per transport (seeds {', '.join(map(str, seeds[:3]))}"
             f"{', ...' if reps > 3 else ''}), tolerance {tol:.0%}, {window:g} s measured per probe", ""]
    for t in transports:
        a = answers[t]
        lines.append(f"{LABELS.get(t, t)}: the search (clients -> " + ", ".join(c.metric for c in constraints) + ")")
        for r in range(reps):
            res = results[(t, r)]["result"]
            steps = []
            for p in res.probes:
                vals = " ".join(_fmt(p.values[c.metric]) for c in constraints)
                steps.append(f"{p.clients:,} [{vals}] {'ok' if p.ok else 'FAIL'}")
            lines.append(f"  #{r + 1}: " + " -> ".join(steps))
        if not a["feasible"]:
            lines.append(f"  => no client count meets the target (smallest tried fails {a['deciding']})")
        else:
            more = "" if a["bracketed"] else " (at least: no failure up to the largest count tried)"
            ci = a["clients_ci95"]
            ci_text = f"95% CI {ci[0]:,.0f} to {ci[1]:,.0f}; " if ci else ""
            lines.append(f"  => {a['clients_mean']:,.0f} clients per server{more} ({ci_text}"
                         f"searches: {', '.join(f'{c:,}' for c in a['clients_per_replication'])}); deciding "
                         f"constraint: {a['deciding'] or 'none reached'}")
        if t in verified:
            v = verified[t]
            parts = [f"{m} {_fmt(x['mean'])} +- {_fmt(x['ci95'])} {'ok' if x['ok'] else 'FAIL'}"
                     for m, x in v["metrics"].items()]
            lines.append(f"  verify at {v['clients']:,} clients, {v['window_s']:g} s window, real handshake CPU: "
                         + "; ".join(parts))
        lines.append("")
    if users is not None:
        online = math.ceil(users * conc)
        lines.append(f"Servers for {users:,} daily users x {conc:g} online at the peak = {online:,} concurrent "
                     "connections:")
        w = max(len(LABELS.get(t, t)) for t in transports)
        for t in transports:
            a = answers[t]
            if "servers" in a:
                ci = a["servers_ci95"]
                ci_text = "" if ci is None else f" (95% CI {ci[0]:,} to " + (f"{ci[1]:,})" if ci[1] else "unbounded)")
                lines.append(f"  {LABELS.get(t, t).ljust(w)}  {a['servers']:>9,} servers{ci_text} at "
                             f"{a['clients_mean']:,.0f} clients each")
            else:
                lines.append(f"  {LABELS.get(t, t).ljust(w)}  no server size meets the target")
        lines.append("")
    lines.append("Assumptions:")
    lines += [f"  - {a}" for a in ASSUMPTIONS]
    if users is not None and abs(conc - DEFAULT_CONCURRENCY) < 1e-12:
        lines.append(f"  - {DEFAULT_CONCURRENCY:.0%} of daily users online at the peak: the usual system-design "
                     "interview figure, not a measurement (set --concurrency)")
    lines.append(f"({total:,.0f} s, of which the searches {elapsed:,.0f} s)")
    return "\n".join(lines)


def _json(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)
