"""``chatlab sweep``: run a sweep file into a directory of tidy rows; ``chatlab sweep summarize DIR``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="FILE.toml | summarize",
                   help="the sweep file to run, or `summarize` followed by a sweep directory")
    p.add_argument("dir", nargs="?", metavar="DIR", help="(summarize) the sweep's --out directory")
    p.add_argument("--out", metavar="DIR", help="directory for the results (runs/*.parquet and sweep.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter of the base scenario (repeatable)")
    p.add_argument("--replications", metavar="N", help="replace the file's number of replications")
    p.add_argument("--jobs", default="auto", metavar="N", help="local worker processes (default: every core)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run on a Dask cluster (scheduler address, or local[:N] for a LocalCluster of N processes)")
    p.add_argument("--resume", action="store_true", help="run only the runs DIR does not hold yet")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run failed runs again too")
    p.add_argument("--flush", default="1", metavar="S",
                   help="write finished rows at least every S seconds (default 1; 0: each run at once)")
    p.add_argument("--dry-run", action="store_true", help="print the points and the number of runs; run nothing")
    p.add_argument("--metrics", metavar="A,B", help="(summarize) metrics to show (default: the sweep's)")
    p.add_argument("--csv", metavar="FILE", help="(summarize) also write the summary table to FILE (CSV)")


def _int(flag: str, value: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        n = lo - 1
    if not lo <= n <= hi:
        raise UsageError(f"{flag}={value}: expected a whole number from {lo} to {hi}")
    return n


def run(args: argparse.Namespace) -> int:
    if args.target == "summarize":
        return _summarize(args)
    if args.dir is not None:
        raise UsageError(f"{args.dir}: unexpected argument (did you mean --out {args.dir}?)")
    from .sweep import load_sweep
    from .sweep.design import design_points, plan

    reps = _int("--replications", args.replications, 1, 10_000) if args.replications else None
    spec = load_sweep(args.target, args.overrides, reps)
    if spec.kind == "validate":
        raise UsageError(f"{args.target}: kind=validate: a grid for the real server; run it with "
                         f"`chatlab validate --grid {args.target}`")
    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed: only with --resume")
    try:
        flush_s = float(args.flush)
    except ValueError:
        flush_s = -1.0
    if not 0 <= flush_s <= 3600:
        raise UsageError(f"--flush={args.flush}: expected seconds from 0 to 3600")
    runs = plan(spec)
    n_points = len(design_points(spec))
    head = (f"sweep {spec.name} ({spec.kind}): {n_points:,} points x {len(spec.base.transports)} transports x "
            f"{spec.replications} replications = {len(runs):,} runs; seed {spec.seed}")
    if args.dry_run:
        print(head)
        for i, values in enumerate(design_points(spec)[:50]):
            print(f"  point {i}: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "(the base scenario)"))
        if n_points > 50:
            print(f"  ... {n_points - 50:,} more")
        return 0
    if not args.out:
        raise UsageError("--out: required (a directory for the results)")
    executor, close = _backend(args)
    from .compare_cmd import _jobs
    from .sweep import run_sweep

    jobs = 1 if executor is not None else _jobs(args.jobs, len(runs))
    try:
        print(head + (f"; on {args.dask}" if executor is not None else f"; {jobs} local process(es)"), flush=True)
        report = run_sweep(spec, args.out, jobs=jobs, executor=executor, resume=args.resume,
                           retry_failed=args.retry_failed, progress=sys.stderr.isatty(), given_out=args.out,
                           flush_s=flush_s)
    finally:
        close()
    o = report.outcome
    have = report.already + o.done
    if report.already:
        print(f"{report.already:,} runs were already in {args.out}")
    if o.stopped:
        why = {"interrupted": f"interrupted ({signal.Signals(o.signum).name})" if o.signum else "interrupted",
               "worker died": "a worker process died (killed, or out of memory)"}[o.stopped]
        print(f"{why}: {have:,} of {report.planned:,} runs are in {args.out}/runs; finish with: chatlab sweep "
              f"{args.target} --out {args.out} --resume" + "".join(f" --set {s}" for s in args.overrides),
              file=sys.stderr)
        return 128 + o.signum if o.signum else 1
    print(f"{o.done:,} runs in {o.elapsed_s:,.1f} s; {have:,} of {report.planned:,} in {args.out}/runs (Parquet)")
    print(f"next: chatlab sweep summarize {args.out}")
    if o.failed:
        print(f"{o.failed:,} runs failed (recorded with their error); first: {o.errors[0]}", file=sys.stderr)
        return 1
    return 0


def _backend(args):
    """(executor or None, close function) for --dask."""
    if not args.dask:
        return None, lambda: None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("--dask: needs the cluster extra (pip install -e '.[cluster]')") from None
    addr = args.dask
    if addr == "local" or addr.startswith("local:"):
        n = _int("--dask", addr.split(":", 1)[1], 1, 1024) if ":" in addr else None
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()
        return client.get_executor(), close
    try:
        client = Client(addr, timeout=10)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"--dask={addr}: cannot connect to a Dask scheduler ({exc})") from None
    return client.get_executor(), client.close


def _summarize(args) -> int:
    import pandas as pd

    from .sweep import summarize
    from .sweep.store import Store

    if not args.dir:
        raise UsageError("summarize: give the sweep directory (chatlab sweep summarize DIR)")
    store = Store(args.dir)
    man = store.manifest()
    metrics = man["metrics"]
    if args.metrics:
        wanted = [m.strip() for m in args.metrics.split(",") if m.strip()]
        bad = [m for m in wanted if m not in metrics]
        if bad or not wanted:
            raise UsageError(f"--metrics={args.metrics}: a comma list from this sweep's metrics: " + ", ".join(metrics))
        metrics = wanted
    table = summarize(args.dir, metrics=metrics)
    if table.empty:
        print(f"{args.dir}: no finished runs yet")
        return 0
    if args.csv:
        try:
            Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv, index=False)
        except OSError as exc:
            raise UsageError(f"--csv={args.csv}: cannot write ({exc.strerror or exc})") from None
    shown = [m for m in metrics if f"{m}.mean" in table.columns][:6]
    axes = [a for a in man.get("axes", []) if a in table.columns]
    out = table[["point", *axes, "transport", "replications", "failed"]].copy()
    for m in shown:
        out[m] = [_pm(a, b) for a, b in zip(table[f"{m}.mean"], table[f"{m}.ci95"])]
    print(f"sweep {man['name']}: {len(table):,} rows (point x transport); mean +- 95% CI half-width over the "
          f"replications" + ("" if len(shown) == len(metrics) else
                             f"; showing {len(shown)} of {len(metrics)} metrics (--metrics, --csv for all)"))
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 500):
        print(out.to_string(index=False))
    if args.csv:
        print(f"wrote {args.csv}")
    return 0


def _pm(mean: float, half: float) -> str:
    if mean != mean:
        return "-"
    digits = 3 if abs(mean) < 10 else 1
    return f"{mean:,.{digits}f}" + ("" if half != half else f" +- {half:,.{digits}f}")
