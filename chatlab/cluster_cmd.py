"""``chatlab cluster``: N reference servers behind HAProxy, on a shared Redis and PostgreSQL
(docs/server.md, "A cluster"). Prints the one URL to open; Ctrl-C or SIGTERM stops
everything. The components are real programs from the machine's packages; a missing one is
one line naming the package, exit status 2.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .errors import UsageError
from .serve_cmd import _HOST, _valid_numeric_host, _without_password


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--servers", default="4", help="connection servers, 1-16 (default 4)")
    parser.add_argument("--host", default="127.0.0.1", help="address HAProxy binds (default 127.0.0.1)")
    parser.add_argument("--port", default="8080",
                        help="HAProxy's port, the one URL to open (default 8080; 0: any free port)")
    parser.add_argument("--redis-url", default=None,
                        help="a running Redis to share, e.g. redis://127.0.0.1:6379/0 (default: start a private one)")
    parser.add_argument("--db", default=None,
                        help="a PostgreSQL database to share, postgresql://user@host:port/db "
                             "(default: start a private PostgreSQL)")
    parser.add_argument("--work-dir", default=None,
                        help="keep logs, HAProxy's configuration and private databases here "
                             "(default: a temporary directory, deleted at exit)")


def _servers(text: str) -> int:
    from reference_server.cluster.local import MAX_SERVERS

    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_SERVERS:
        raise UsageError(f"--servers={text}: expected an integer 1-{MAX_SERVERS}")
    return int(text)


def check_args(args: argparse.Namespace) -> dict:
    """The validated arguments as ClusterSpec fields; UsageError on the first bad one."""
    servers = _servers(str(args.servers))
    port = str(args.port)
    if not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--port={port}: expected an integer 0-65535 (0: any free port)")
    if not _HOST.match(args.host) or not _valid_numeric_host(args.host):
        raise UsageError(f"--host={args.host}: expected an IP address or host name")
    if args.redis_url is not None and not re.match(r"^rediss?://[^/\s]+", args.redis_url):
        raise UsageError(f"--redis-url={args.redis_url}: expected redis://host:port/db")
    if args.db is not None and not re.match(r"^postgres(ql)?://[^\s]+/[^/\s]+$", args.db):
        raise UsageError(f"--db={_without_password(args.db)}: expected postgresql://user@host:port/database "
                         "(a cluster shares one PostgreSQL database; SQLite is one process's)")
    work_dir = Path(args.work_dir) if args.work_dir else None
    if work_dir is not None and work_dir.exists() and not work_dir.is_dir():
        raise UsageError(f"--work-dir={args.work_dir}: exists and is not a directory")
    return {"servers": servers, "host": args.host, "port": int(port), "redis_url": args.redis_url,
            "db_url": args.db, "work_dir": work_dir}


async def _preflight(spec) -> None:
    """Refuse, as one line, what would make the start fail: the port taken, a given Redis
    or PostgreSQL that does not answer, a program that is not installed."""
    import socket

    from reference_server.cluster.components import find_program, pg_bindir

    find_program("haproxy", "haproxy", "CHATLAB_HAPROXY", ("/usr/sbin", "/usr/local/sbin"))
    if spec.redis_url is None:
        find_program("redis-server", "redis-server", "CHATLAB_REDIS_SERVER")
    if spec.db_url is None:
        pg_bindir()
    with socket.socket(socket.AF_INET6 if ":" in spec.host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((spec.host, spec.port))
        except OSError as exc:
            raise UsageError(f"--host={spec.host} --port={spec.port}: {exc.strerror or exc}") from None
    if spec.redis_url is not None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(spec.redis_url, socket_connect_timeout=3)
        try:
            await client.ping()
        except Exception as exc:
            raise UsageError(f"--redis-url={spec.redis_url}: Redis does not answer ({exc})") from None
        finally:
            await client.aclose()
    if spec.db_url is not None:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(spec.db_url, connect_timeout=3)
        except Exception as exc:
            raise UsageError(f"--db={_without_password(spec.db_url)}: PostgreSQL refused: "
                             f"{str(exc).strip().splitlines()[0][:160]}") from None
        await conn.close()


def banner(cluster) -> str:
    """What the user reads once the cluster is up."""
    lines = [f"chat cluster on {cluster.url}/   <- open this one (HAProxy, sticky by the SERVERID cookie)"]
    for s in cluster.servers:
        lines.append(f"  {s.server_id}: pid {s.pid}, {s.url}   metrics: {cluster.url}/servers/{s.server_id}/metrics")
    h = cluster.haproxy
    lines.append(f"  HAProxy: pid {h.child.proc.pid}, stats {h.stats_url} (Prometheus: {h.stats_url}metrics)")
    private = " (private)"
    lines.append(f"  Redis {cluster.redis_url}{private if cluster.redis else ''}, PostgreSQL "
                 f"{_without_password(cluster.db_url)}{private if cluster.postgres else ''}")
    lines.append(f"  logs and configuration: {cluster.work_dir}")
    lines.append("Kill a server (kill -9 <pid>) and its clients move to the others. "
                 "Ctrl-C or SIGTERM stops everything.")
    return "\n".join(lines)


async def _run(spec) -> int:
    import asyncio
    import contextlib
    import signal

    from reference_server.cluster import LocalCluster

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cluster = LocalCluster(spec)
    starting = asyncio.create_task(cluster.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # stopped while starting: start() cleans up what it began
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            return 130
        starting.result()  # raises what made the start fail (after its own clean-up)
        print(banner(cluster), flush=True)
        reported: set[str] = set()
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for s in cluster.servers:
                if s.proc is not None and s.proc.returncode is not None and s.server_id not in reported:
                    reported.add(s.server_id)
                    print(f"{s.server_id} exited (status {s.proc.returncode}); HAProxy sends its clients "
                          "to the others", flush=True)
        print("stopping ...", flush=True)
        return 0
    finally:
        stopping.cancel()
        await cluster.stop()


def run(args: argparse.Namespace) -> int:
    import asyncio

    from reference_server.cluster import ClusterSpec, ComponentFailed, MissingComponent
    from reference_server.loadgen import ServerFailed

    spec = ClusterSpec(**check_args(args))
    try:
        asyncio.run(_preflight(spec))
    except MissingComponent as exc:
        raise UsageError(str(exc)) from None
    try:
        return asyncio.run(_run(spec))
    except MissingComponent as exc:
        raise UsageError(str(exc)) from None
    except (ComponentFailed, ServerFailed, OSError) as exc:
        import sys

        print(f"error: the cluster did not start: {exc}", file=sys.stderr)
        return 1
