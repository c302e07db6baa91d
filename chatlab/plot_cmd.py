"""``chatlab plot DIR --x rtt_ms --y latency_ms_p95 --hue transport``: a sweep's metric against an axis."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="a sweep's --out directory")
    p.add_argument("--x", required=True, metavar="NAME", help="parameter on the x axis")
    p.add_argument("--y", required=True, metavar="METRIC", help="metric on the y axis (a summary column)")
    p.add_argument("--hue", metavar="NAME", help="one line per value of this parameter (default: transport)")
    p.add_argument("--col", metavar="NAME", help="one panel per value of this parameter")
    p.add_argument("--where", action="append", default=[], metavar="NAME=VALUE",
                   help="keep only runs with this value (repeatable); needed for every other varying parameter")
    p.add_argument("--logx", action="store_true", help="logarithmic x axis")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")
    p.add_argument("--title", help="figure title (default: sweep name, metric and axis)")
    p.add_argument("--out", metavar="FILE", help="output path without or with suffix "
                   "(default: DIR/plots/<y>-vs-<x>[-by-<hue>])")
    p.add_argument("--format", default="png,svg", metavar="png,svg", help="formats to write (default: png,svg)")


def run(args: argparse.Namespace) -> int:
    from .sweep.plot import plot_metric, save

    where = {}
    for w in args.where:
        k, eq, v = w.partition("=")
        if not eq or not k.strip():
            raise UsageError(f"--where {w}: NAME=VALUE")
        where[k.strip()] = v.strip()
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    if not formats or any(f not in ("png", "svg", "pdf") for f in formats):
        raise UsageError(f"--format={args.format}: a comma list from png, svg, pdf")
    if not Path(args.dir).is_dir():
        raise UsageError(f"{args.dir}: not a directory (a sweep's --out directory)")
    fig = plot_metric(args.dir, x=args.x, y=args.y, hue=args.hue, col=args.col, where=where, logx=args.logx,
                      logy=args.logy, title=args.title)
    if args.out:
        base = Path(args.out)
        if base.suffix.lower() in (".png", ".svg", ".pdf"):
            base = base.with_suffix("")
    else:
        stem = f"{args.y}-vs-{args.x}" + (f"-by-{args.hue}" if args.hue else "") + (f"-per-{args.col}" if args.col else "")
        stem += "".join(f"-{k}={v}" for k, v in where.items())
        base = Path(args.dir) / "plots" / stem
    try:
        paths = save(fig, base, formats)
    except OSError as exc:
        raise UsageError(f"--out={args.out or base}: cannot write ({exc.strerror or exc})") from None
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
