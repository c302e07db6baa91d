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
    p.add_argument("--jobs", default="auto", metavar="N",
                   help="transports simulated in parallel processes (default: one per core, up to 3)")


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
    jobs = _jobs(args.jobs, len(scenario.transports))
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out={args.out}: exists and is not a directory")
    runs = run_many(transports_tasks(scenario, scenario.transports), jobs,
                    progress=sys.stderr.isatty() and not args.json)
    cmp = sim.compare(scenario, runs)
    print(report.json_text(cmp) if args.json else report.text_table(cmp))
    if out is not None:
        try:
            written = report.write_outputs(cmp, out)
        except OSError as exc:
            raise UsageError(f"--out={args.out}: cannot write ({exc.strerror or exc})") from None
        if not args.json:
            print(f"\nwrote {len(written)} files to {out}/: " + ", ".join(p.name for p in written))
    return 0
