"""``chatlab compare``: the three transports on one workload, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UsageError
from .scenario_args import add_scenario_arguments, scenario_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_scenario_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", metavar="DIR", help="also write CSV tables and PNG figures into DIR")
    p.add_argument("--replications", default="1", metavar="N",
                   help="independent replications (seeds derived from seed); N > 1 adds 95%% confidence intervals")
    p.add_argument("--jobs", default="auto", metavar="N",
                   help="transports simulated in parallel processes (default: one per core, up to 3)")


def _replications(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 1000:
        raise UsageError(f"--replications={value}: expected a whole number from 1 to 1000")
    return n


def _jobs(value: str, n: int) -> int:
    from .parallel import default_jobs

    if value == "auto":
        return default_jobs(n)
    try:
        j = int(value)
    except ValueError:
        j = 0
    if j < 1:
        raise UsageError(f"--jobs={value}: expected a whole number >= 1 or 'auto'")
    return j


def run(args: argparse.Namespace) -> int:
    import sim

    from . import report
    from .parallel import run_many, transports_tasks

    scenario = scenario_from_args(args)
    warnings = sim.window_warnings(scenario)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    reps = _replications(args.replications)
    scenarios = sim.replicate_scenarios(scenario, reps)
    jobs = _jobs(args.jobs, len(scenario.transports) * reps)
    out = Path(args.out) if args.out else None
    if out is not None:
        from .report import check_out_dir

        check_out_dir(out, args.out)
    tasks = [task for sc in scenarios for task in transports_tasks(sc, sc.transports)]
    runs = run_many(tasks, jobs, progress=sys.stderr.isatty() and not args.json)
    k = len(scenario.transports)
    cmps = [sim.compare(sc, runs[i * k:(i + 1) * k]) for i, sc in enumerate(scenarios)]
    if reps == 1:
        print(report.json_text(cmps[0], warnings) if args.json else report.text_table(cmps[0]))
    else:
        print(report.replications_json(scenario, cmps, warnings) if args.json
              else report.replications_table(scenario, cmps))
    if out is not None:
        try:
            written = report.write_outputs(cmps[0], out)
            if reps > 1:
                written += report.write_replications(cmps, out)
        except OSError as exc:
            raise UsageError(f"--out={args.out}: cannot write ({exc.strerror or exc})") from None
        if not args.json:
            print(f"\nwrote {len(written)} files to {out}/: " + ", ".join(p.name for p in written))
    return 0
