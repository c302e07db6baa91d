"""``chatlab crash``: a fault, the reconnect storm, and what was lost, per transport x policy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UsageError
from .scenario_args import add_scenario_arguments, scenario_from_args

COLUMNS = [  # (label, summary key, format)
    ("affected", "affected_clients", "{:,}"),
    ("peak attempts/s", "reconnect_peak_per_s", "{:,.0f}"),
    ("all back (s)", "time_to_reconnect_all_s", "{:,.1f}"),
    ("timed out", "connects_timed_out", "{:,}"),
    ("refused", "connects_rejected", "{:,}"),
    ("wasted", "wasted_connects", "{:,}"),
    ("lost", "messages_lost", "{:,}"),
    ("dup", "messages_duplicated", "{:,}"),
    ("recovered", "messages_recovered", "{:,}"),
    ("flaps", "presence_flaps", "{:,}"),
    ("p99 incident (ms)", "p99_incident_latency_ms", "{:,.0f}"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_scenario_arguments(p)
    p.add_argument("--policies", metavar="A,B,...",
                   help="reconnect policies to compare on the same seed (default: the scenario's reconnect_policy)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", metavar="DIR", help="also write CSV tables and PNG figures into DIR")
    p.add_argument("--jobs", default="auto", metavar="N", help="runs in parallel processes (default: one per core)")


def _policies(text: str | None, default: str) -> list[str]:
    from chatcore.backoff import POLICIES

    if text is None:
        return [default]
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in POLICIES]
    if not names or bad or len(set(names)) != len(names):
        raise UsageError(f"--policies={text}: a comma list of distinct names from {','.join(POLICIES)}")
    return names


def _fmt(template: str, v) -> str:
    from chatcore.tables import fmt

    return fmt(template, v, missing="never")


def _table(scenario, results) -> str:
    sc = scenario
    fault = {"servers": f"{sc.crashed_servers} of {sc.servers} connection servers crash ({sc.crash_mode})",
             "delivery": "the delivery service crashes",
             "partition": f"{sc.partition_fraction:.0%} of clients partitioned"}[sc.fault]
    down = "for good" if sc.downtime_s == float("inf") else f"for {sc.downtime_s:g} s"
    head = (f"{sc.clients:,} clients, {fault} at {sc.crash_at_s:g} s {down}; delivery design {sc.delivery_design}; "
            f"connect {sc.connect_cpu_ms:g} ms CPU, timeout {sc.connect_timeout_s:g} s, "
            f"admission {sc.max_connects_per_s:g}/s per server (0 = none); seed {sc.seed}")
    rows = [["transport", "policy", *[c[0] for c in COLUMNS]]]
    for r in results:
        rows.append([r.transport, r.reconnect_policy, *[_fmt(f, r.summary[k]) for _, k, f in COLUMNS]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for j, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _run_one(task):
    from sim.crash import run_crash

    return run_crash(*task)


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ProcessPoolExecutor

    from .compare_cmd import _jobs
    from chatcore.tables import jsonable

    import sys

    from sim.checks import window_warnings

    scenario = scenario_from_args(args)
    warnings = window_warnings(scenario, crash=True)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    policies = _policies(args.policies, scenario.reconnect_policy)
    tasks = [(scenario, t, p) for t in scenario.transports for p in policies]
    jobs = _jobs(args.jobs, len(tasks))
    out = Path(args.out) if args.out else None
    if out is not None:
        from .report import check_out_dir

        check_out_dir(out, args.out)
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_run_one, tasks))
    else:
        results = [_run_one(t) for t in tasks]
    if args.json:
        doc = {"scenario": scenario.to_dict(), "results": [jsonable(r.summary) for r in results]}
        if warnings:
            doc["warnings"] = warnings
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        print(_table(scenario, results))
    if out is not None:
        try:
            written = _write(results, out)
        except OSError as exc:
            raise UsageError(f"--out={args.out}: cannot write ({exc.strerror or exc})") from None
        if not args.json:
            print(f"\nwrote {len(written)} files to {out}/: " + ", ".join(p.name for p in written))
    return 0


def _write(results, out: Path) -> list[Path]:
    import pandas as pd

    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("bins", "messages"):
        p = out / f"crash_{name}.csv"
        pd.concat([getattr(r, name) for r in results], ignore_index=True).to_csv(p, index=False)
        paths.append(p)
    p = out / "crash_summary.csv"
    pd.DataFrame([{k: v for k, v in r.summary.items() if not isinstance(v, (dict, list))} for r in results]) \
        .to_csv(p, index=False)
    paths.append(p)
    for name, fig in (("crash_reconnects.png", plots.crash_reconnects(results)),
                      ("crash_backlog.png", plots.crash_backlog(results))):
        fig.savefig(out / name, dpi=110)
        paths.append(out / name)
    return paths

