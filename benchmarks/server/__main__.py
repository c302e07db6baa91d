"""``make bench-server``: the reference server's throughput side by side with Socket.IO 4.8 and
a bare aiohttp relay, on one 1:1 chat workload (docs/PERFORMANCE.md, "Server throughput").

    python -m benchmarks.server [--quick] [--servers ours,socketio] [--levels 1000,5000]
                                [--measure-s 8] [--no-write] ...

Prints the tables; the full run (no --quick) also writes them into docs/PERFORMANCE.md
between marker comments and the raw results into data/bench-server.json. Exit status 0,
1 when a server or the load generator failed to run, 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from chatlab.errors import UsageError

from .orchestrate import SERVER_KEYS, BenchConfig, run_all
from .procs import ChildFailed
from .report import render, update_doc
from .targets import REPO

QUICK = dict(levels=(1000, 5000, 20000), warmup_s=1.0, measure_s=3.0, drain_s=3.0, longpoll_levels=(200,),
             memory_connections=2000, quiet_wait_s=5.0, retry_disturbed=0)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _ints(name: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())
        except ValueError:
            raise UsageError(f"python -m benchmarks.server: {name}={text}: expected comma-separated integers") from None
    return parse


def _names(name: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())
    return parse


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = _Parser(prog="python -m benchmarks.server", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a faster look: levels 1000,5000,20000, 1 s warm-up, 3 s windows, one long-poll level, "
                        "2,000 memory connections; writes nothing unless --write")
    p.add_argument("--servers", type=_names("--servers"), help=f"subset of {','.join(SERVER_KEYS)} (default all)")
    p.add_argument("--sections", type=_names("--sections"), help="subset of websocket,longpoll,memory (default all)")
    p.add_argument("--levels", type=_ints("--levels"), help=f"offered msgs/s (default {','.join(map(str, d.levels))})")
    p.add_argument("--clients", type=int, help=f"WebSocket clients (default {d.clients})")
    p.add_argument("--warmup-s", type=float, help=f"seconds before each measured window (default {d.warmup_s:g})")
    p.add_argument("--measure-s", type=float, help=f"measured window per level (default {d.measure_s:g})")
    p.add_argument("--drain-s", type=float, help=f"longest wait for late deliveries (default {d.drain_s:g})")
    p.add_argument("--seed", type=int, help=f"workload seed (default {d.seed})")
    p.add_argument("--payload-bytes", type=int, help=f"message body size (default {d.payload_bytes})")
    p.add_argument("--longpoll-clients", type=int, help=f"default {d.longpoll_clients}")
    p.add_argument("--longpoll-levels", type=_ints("--longpoll-levels"),
                   help=f"default {','.join(map(str, d.longpoll_levels))}")
    p.add_argument("--memory-connections", type=int, help=f"default {d.memory_connections}")
    p.add_argument("--quiet-wait-s", type=float,
                   help=f"before each measurement, wait up to this long for idle CPUs (default {d.quiet_wait_s:g})")
    p.add_argument("--retry-disturbed", type=int,
                   help=f"measure a level again this many times when other processes disturbed it "
                        f"(default {d.retry_disturbed})")
    p.add_argument("--redis-url", help=f"the real Redis of ours_redis (default {d.redis_url})")
    p.add_argument("--json", type=Path, help="raw results (default data/bench-server.json on a full run)")
    p.add_argument("--docs", type=Path, help="Markdown file to update (default docs/PERFORMANCE.md on a full run)")
    p.add_argument("--write", action="store_true", help="write --json and --docs even with --quick or options")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def config_from(a: argparse.Namespace) -> BenchConfig:
    cfg = replace(BenchConfig(), **QUICK) if a.quick else BenchConfig()
    over = {k: v for k, v in {
        "servers": a.servers, "sections": a.sections, "levels": a.levels, "clients": a.clients,
        "warmup_s": a.warmup_s, "measure_s": a.measure_s, "drain_s": a.drain_s, "seed": a.seed,
        "payload_bytes": a.payload_bytes, "longpoll_clients": a.longpoll_clients,
        "longpoll_levels": a.longpoll_levels, "memory_connections": a.memory_connections,
        "redis_url": a.redis_url, "quiet_wait_s": a.quiet_wait_s,
        "retry_disturbed": a.retry_disturbed}.items() if v is not None}
    try:
        return replace(cfg, **over)
    except ValueError as exc:  # "name=value: expected ...": name it as the option
        name, rest = str(exc).split("=", 1)
        raise UsageError(f"python -m benchmarks.server: --{name.replace('_', '-')}={rest}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a = build_parser().parse_args(argv)
        if a.write and a.no_write:
            raise UsageError("python -m benchmarks.server: --write and --no-write exclude each other")
        cfg = config_from(a)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # A full default run writes; a partial or quick one only when asked.
    full = not argv or argv == ["--write"]
    write = not a.no_write and (a.write or full or a.json is not None or a.docs is not None)
    json_path = a.json or (REPO / "data" / "bench-server.json")
    docs_path = a.docs or (REPO / "docs" / "PERFORMANCE.md")
    command = "make bench-server" if not argv else "python -m benchmarks.server " + " ".join(argv)

    async def go() -> dict:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_all(cfg, log=lambda s: print(s, flush=True))

    try:
        report = asyncio.run(go())
    except ChildFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every child process was stopped", file=sys.stderr)
        return 130
    report = {"command": command, **report}
    print()
    print(render(report, md=False))
    if write:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        update_doc(docs_path, render(report, md=True))
        print(f"wrote {json_path} and the section of {docs_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
