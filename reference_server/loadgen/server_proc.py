"""The reference server as a separate process, so that its CPU is its own and can be
read from ``/proc/<pid>/stat`` and so that it can be killed (SIGKILL) and restarted.

``python -m reference_server.loadgen.server_proc --port 0 --data-dir D`` runs
:func:`reference_server.app.serve_forever` with a load-test configuration: the
per-user rate limit raised (a load generator's users send in bursts the limit would
refuse) and a cheap scrypt cost (registering hundreds of users would otherwise take
minutes; login is not measured). Everything else is the default configuration.
``--profile default`` runs the default configuration unchanged (``chatlab cluster``);
``--server-id`` and ``--db-url`` make it one server of a cluster (docs/server.md).
``--set NAME=VALUE`` (repeatable) overrides any other ``ServerConfig`` field after the
profile, e.g. ``--set admission=false --set rate_per_s=20`` (the storm and fault tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

# What used to live here (the parent's side), for callers that import it from this module.
from .process import ServerFailed, ServerProcess, cpu_seconds, die_with_parent

__all__ = ["ServerFailed", "ServerProcess", "cpu_seconds", "die_with_parent", "main"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--redis-prefix", default="chatlab")
    p.add_argument("--server-id", default="")
    p.add_argument("--db-url", default=None)
    p.add_argument("--profile", choices=("loadtest", "default"), default="loadtest")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a ServerConfig field (bool, int, float or str fields)")
    a = p.parse_args(argv)
    from reference_server.app import serve_forever
    from reference_server.config import ServerConfig
    config = ServerConfig(port=a.port, data_dir=Path(a.data_dir), redis_url=a.redis_url,
                          redis_prefix=a.redis_prefix, server_id=a.server_id, db_url=a.db_url)
    if a.profile == "loadtest":
        config = replace(config, scrypt_n=2, rate_per_s=1e6, rate_burst=1_000_000)
    try:
        config = replace(config, **dict(_setting(text) for text in a.set))
    except ValueError as exc:
        p.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(config))


def _setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` as a typed ServerConfig override; ValueError naming what is allowed."""
    from reference_server.config import ServerConfig

    name, sep, value = text.partition("=")
    kinds = {f.name: type(getattr(ServerConfig(), f.name)) for f in fields(ServerConfig)}
    kind = kinds.get(name)
    if not sep or kind not in (bool, int, float, str):
        allowed = ", ".join(n for n, k in kinds.items() if k in (bool, int, float, str))
        raise ValueError(f"--set {text!r}: expected NAME=VALUE with NAME one of {allowed}")
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "on", "off"):
                raise ValueError(value)
            return name, value.lower() in ("true", "1", "on")
        return name, kind(value)
    except ValueError:
        raise ValueError(f"--set {name}={value!r}: expected a {kind.__name__}") from None


if __name__ == "__main__":
    main()
