"""``chatlab calibrate``: measure the reference server's CPU per operation and its real
header sizes, and write them as a scenario file the simulation takes
(``chatlab compare --scenario data/calibration.toml``), with the machine's metadata in
a JSON file beside it (docs/VALIDATION.md, "Calibration")."""

from __future__ import annotations

import argparse

from .errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/calibration.toml", metavar="FILE.toml",
                   help="scenario file to write (default data/calibration.toml; metadata in FILE.json)")
    p.add_argument("--scale", default="1", help="repetitions factor, 0.05-10 (default 1, about 15 s)")
    p.add_argument("--redis-url", default=None, help="Redis for the server (default: embedded fakeredis)")
    p.add_argument("--json", action="store_true", help="print the parameters and details as JSON")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile
    from pathlib import Path

    from .validation import dump_json, machine_metadata, progress

    try:
        scale = float(args.scale)
    except ValueError:
        scale = -1.0
    if not 0.05 <= scale <= 10:
        raise UsageError(f"--scale={args.scale}: expected a number 0.05-10")
    out = Path(args.out)
    if out.suffix != ".toml":
        raise UsageError(f"--out={args.out}: expected a .toml file name")
    if out.is_dir() or (out.parent != Path("") and out.parent.exists() and not out.parent.is_dir()):
        raise UsageError(f"--out={args.out}: not a writable file path")
    if args.redis_url is not None and not args.redis_url.startswith(("redis://", "rediss://")):
        raise UsageError(f"--redis-url={args.redis_url}: expected redis://host:port/db")

    from reference_server.loadgen import ServerFailed
    from reference_server.loadgen.calibrate import calibrate

    log = progress(args.json)
    log("calibrating the reference server (a separate process; CPU from /proc)")
    try:
        with tempfile.TemporaryDirectory(prefix="chatlab-cal-") as tmp:
            result = asyncio.run(asyncio.wait_for(calibrate(Path(tmp) / "server", scale, args.redis_url, log),
                                                  300))
    except asyncio.TimeoutError:
        print("error: calibration did not finish within 300 s (server unresponsive?)")
        return 1
    except (ServerFailed, OSError, RuntimeError) as exc:
        print(f"error: {exc}")
        return 1
    params = result["parameters"]
    meta = {"command": f"chatlab calibrate --scale {scale:g}" + (f" --redis-url {args.redis_url}"
                                                                 if args.redis_url else ""),
            "redis": args.redis_url or "embedded fakeredis", "machine": machine_metadata(), **result}
    lines = ["# Reference-server calibration, written by `chatlab calibrate` (docs/VALIDATION.md).",
             f"# Machine: {meta['machine']['cpu_model']}, {meta['machine']['cpus']} CPUs, "
             f"Python {meta['machine']['python']}, {meta['machine']['date']}; details in {out.with_suffix('.json').name}.",
             "# CPU times are server-process CPU per operation (everything it does for it, fan-out included);",
             "# a write's (send, receipt, frame in) without its group commit, cpu_commit_batch_ms once per batch;",
             "# server_cores = 1: the server is one asyncio event loop.", "[scenario]"]
    for k, v in params.items():
        lines.append(f"{k} = {v}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(dump_json(meta) + "\n", encoding="utf-8")
    if args.json:
        print(dump_json(meta))
    else:
        for k, v in params.items():
            print(f"{k} = {v}")
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
