"""``chatlab loadgen``: real clients of one transport against a fresh reference-server
process, through a counting and delaying proxy; prints the summary with the names of
``chatlab compare --json`` (docs/VALIDATION.md)."""

from __future__ import annotations

import argparse

from .errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transport", default="websocket", help="short_polling, long_polling or websocket")
    p.add_argument("--scenario", metavar="FILE.toml", help="scenario file (docs/PARAMETERS.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="a simulation parameter (clients, msg_rate_per_min, rtt_ms, ...); repeatable")
    p.add_argument("--crash-at", default=None, metavar="S",
                   help="SIGKILL the server at S seconds and restart it (clients reconnect and resume)")
    p.add_argument("--redis-url", default=None, help="Redis for the server (default: embedded fakeredis)")
    p.add_argument("--json", action="store_true", help="print JSON ({scenario, results[, crash]})")
    p.add_argument("--out", metavar="DIR", help="also write messages.csv, classes.csv, bins.csv, summary.json")


def run(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from chatcore import TRANSPORTS

    from .validation import LOADGEN_DEFAULTS, dump_json, load_config, load_scenario

    if args.transport not in TRANSPORTS:
        raise UsageError(f"--transport={args.transport}: expected one of {', '.join(TRANSPORTS)}")
    crash = None
    if args.crash_at is not None:
        try:
            crash = float(args.crash_at)
        except ValueError:
            raise UsageError(f"--crash-at={args.crash_at}: expected a number of seconds") from None
    if args.redis_url is not None and not args.redis_url.startswith(("redis://", "rediss://")):
        raise UsageError(f"--redis-url={args.redis_url}: expected redis://host:port/db")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out={args.out}: exists and is not a directory")
    overrides = list(args.overrides) + ([f"crash_at_s={crash!r}"] if crash is not None else [])
    sc = load_scenario(LOADGEN_DEFAULTS, None, args.scenario, overrides)
    cfg = load_config(sc, args.transport, crash=crash is not None, redis_url=args.redis_url)

    from reference_server.loadgen import ServerFailed, result_json, run_load
    try:
        res = asyncio.run(asyncio.wait_for(run_load(cfg), cfg.duration_s + cfg.setup_timeout_s + 60))
    except asyncio.TimeoutError:
        print("error: the load run did not finish in time (server unresponsive?)")
        return 1
    except (ServerFailed, OSError) as exc:
        print(f"error: {exc}")
        return 1
    data = result_json(res)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        res.messages.to_csv(out / "messages.csv", index=False)
        res.classes.to_csv(out / "classes.csv", index=False)
        res.bins.to_csv(out / "bins.csv", index=False)
        (out / "summary.json").write_text(dump_json(data) + "\n")
    if args.json:
        print(dump_json(data))
        return 0
    s = res.summary
    lat = s["latency_ms"]
    print(f"{cfg.transport}: {cfg.clients} clients, rtt {cfg.rtt_ms:g} ms, window "
          f"[{cfg.warmup_s:g}, {cfg.duration_s:g}] s")
    rows = [("requests/s", s["requests_per_s"]), ("bytes per message", s["bytes_per_message"]),
            ("latency p50 (ms)", lat["p50"]), ("latency p95 (ms)", lat["p95"]),
            ("server CPU utilisation", s["server_cpu_utilization"]),
            ("load generator CPU", s["loadgen_cpu_utilization"]),
            ("open connections mean", s["open_connections_mean"]),
            ("messages sent / delivered", f"{s['messages_sent']} / {s['messages_delivered']}")]
    if res.crash:
        rows += [("downtime (s)", res.crash["downtime_s"]),
                 ("time to reconnect all (s)", res.crash["time_to_reconnect_all_s"]),
                 ("messages lost / duplicated", f"{res.crash['messages_lost']} / {res.crash['messages_duplicated']}")]
    for k, v in rows:
        print(f"  {k:<28} {v if isinstance(v, str) or v is None else f'{v:,.3f}'}")
    return 0
