"""``chatlab serve``: run the reference chat server (docs/server.md).

Defaults need nothing installed: embedded fakeredis and SQLite under ``./var``.
aiohttp and the server package are imported inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .errors import UsageError

_HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,253}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", default="8080", help="TCP port, 1-65535 (default 8080)")
    parser.add_argument("--redis-url", default=None,
                        help="e.g. redis://127.0.0.1:6379/0 (default: embedded fakeredis, in memory)")
    parser.add_argument("--data-dir", default="var", help="directory for the SQLite file (default ./var)")
    parser.add_argument("--db", default=None,
                        help="SQLite file (default <data-dir>/chat.sqlite3), or postgresql://user@host:port/db")
    parser.add_argument("--server-id", default="",
                        help="this server's name in a cluster (needs --redis-url and --db postgresql://...)")
    parser.add_argument("--instructor-key", default="", metavar="KEY",
                        help="enable the workshop outage switch (POST /api/instructor/outage, the page's "
                             "#instructor panel) for whoever has KEY: 8-128 letters, digits, - or _ "
                             "(docs/WORKSHOP.md)")
    parser.add_argument("--ws-compression", action="store_true",
                        help="offer permessage-deflate on WebSockets (off by default: it costs throughput)")
    parser.add_argument("--ws-allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a browser origin besides the server's own that may open /ws, e.g. "
                             "https://chat.example.com (repeatable; clients that send no Origin are always allowed)")


def allowed_origins(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--ws-allow-origin`` values, each ``scheme://host[:port]`` as a browser sends it."""
    from reference_server.config import is_origin

    for origin in args.ws_allow_origin or ():
        if not is_origin(origin):
            raise UsageError(f"--ws-allow-origin={origin}: expected scheme://host[:port], "
                             "e.g. https://chat.example.com (no path, no trailing slash)")
    return tuple(args.ws_allow_origin or ())


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"--port={text}: expected an integer 1-65535")
    return int(text)


def _valid_numeric_host(host: str) -> bool:
    """A host made of digits and dots must be a real IPv4 address (999.1.1.1 is not), so the
    mistake is reported before anything is created on disk."""
    import ipaddress

    if not all(ch.isdigit() or ch == "." for ch in host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    port = _port(str(args.port))
    origins = allowed_origins(args)
    if not _HOST.match(args.host) or not _valid_numeric_host(args.host):
        raise UsageError(f"--host={args.host}: expected an IP address or host name")
    if args.redis_url is not None and not re.match(r"^rediss?://", args.redis_url):
        raise UsageError(f"--redis-url={args.redis_url}: expected redis://host:port/db or rediss://...")
    data_dir = Path(args.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data-dir={args.data_dir}: exists and is not a directory")
    db_url = args.db if args.db and args.db.startswith(("postgresql://", "postgres://")) else None
    db = Path(args.db) if args.db and db_url is None else None
    if db is not None and db.is_dir():
        raise UsageError(f"--db={args.db}: is a directory, expected a file path")

    import asyncio
    import logging

    from reference_server.app import serve_forever
    from reference_server.config import ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServerConfig(host=args.host, port=port, redis_url=args.redis_url, data_dir=data_dir,
                              db_path=db, db_url=db_url, server_id=args.server_id,
                              ws_compression=bool(args.ws_compression), instructor_key=args.instructor_key,
                              ws_allowed_origins=origins)
    except ValueError as exc:  # ServerConfig's own one-line message: "name=value: expected ..."
        raise UsageError(f"--{str(exc).replace('_', '-', 1)}") from None
    try:
        asyncio.run(serve_forever(config))
    except OSError as exc:  # port in use, permission denied, unwritable data dir
        raise UsageError(f"--host={args.host} --port={port}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # Redis does not answer
        raise UsageError(str(exc)) from None
    except Exception as exc:  # PostgreSQL does not answer, or refuses the login
        if type(exc).__module__.startswith("psycopg"):
            raise UsageError(f"--db={_without_password(args.db)}: PostgreSQL refused: "
                             f"{str(exc).strip().splitlines()[0][:160]}") from None
        raise
    return 0


def _without_password(url: str) -> str:
    """The URL to print: a password in it is replaced by ***."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
