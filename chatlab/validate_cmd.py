"""``chatlab validate``: for each transport and load level, start a fresh server process,
run the load generator, run the simulation on the same parameters with the calibrated
costs, and print one table (metric, simulated, measured, relative error, tolerance,
pass); then a crash run (SIGKILL, restart, reconnect) against the crash model; with
``--cluster N``, also a crash on N servers behind HAProxy (SIGKILL one, its clients move to
the others, restart it after the downtime) against the crash model's cluster.
With ``--grid FILE.toml`` (a sweep file of ``kind = "validate"``, docs/VALIDATION.md "The
grid"), the same comparison at every point of the file's grid, one configuration at a time.
Exit status 0 whether targets are met or not (the table says which); 1 if a run failed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", default=None, metavar="FILE.toml",
                   help="calibrated scenario (default data/calibration.toml)")
    p.add_argument("--scenario", metavar="FILE.toml", help="scenario file applied after the calibration")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter (repeatable)")
    p.add_argument("--grid", metavar="FILE.toml",
                   help="validate at every point of this sweep file (kind = \"validate\"); transports, levels, "
                        "repeats and the crash runs come from the file")
    p.add_argument("--transports", default=None,
                   help="comma list, or 'none' (no per-load cases; default all three)")
    p.add_argument("--levels", default=None,
                   help="comma list of light, medium, high (target server CPU 10/30/60 %%; default all)")
    p.add_argument("--max-clients", default="300", help="most clients in one run (default 300)")
    p.add_argument("--crash-transport", default="websocket",
                   help="transport of the crash run, or 'none' (default websocket)")
    p.add_argument("--crash-clients", default="100", help="clients in the crash run (default 100)")
    p.add_argument("--repeat", default=None,
                   help="runs per case, seeds seed, seed+1, ...; pooled (default 1; data/ uses 3)")
    p.add_argument("--redis-url", default=None,
                   help="Redis for the server (default: embedded fakeredis; a private one for --cluster)")
    p.add_argument("--cluster", default="0",
                   help="also crash one of this many servers behind HAProxy, 2-16 (default 0: no cluster run)")
    p.add_argument("--cluster-clients", default="200", help="clients in the cluster crash run (default 200)")
    p.add_argument("--cluster-msg-rate", default="10",
                   help="messages per minute per client in the cluster crash run (default 10)")
    p.add_argument("--cluster-downtime", default="5",
                   help="seconds between the SIGKILL and the restart in the cluster run (default 5)")
    p.add_argument("--db", default=None,
                   help="an empty PostgreSQL database for the cluster run, one run only "
                        "(default: a private PostgreSQL per run)")
    p.add_argument("--merge", action="store_true",
                   help="with --out: keep the rows of DIR/validation.json this run does not redo, and add "
                        "this run's panels below the existing figure")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--out", metavar="DIR", help="write validation.csv, validation.json and validation.png")


def _int(flag: str, text: str, lo: int, hi: int) -> int:
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise UsageError(f"{flag}={text}: expected an integer {lo}-{hi}")
    return int(text)


def run_cases(cases: list[Any], repeat: int, redis_url: str | None, failed: list[str],
              log: Callable[[str], None], describe: Callable[[Any], str]) -> None:
    """Measure and simulate each case in turn (``validation.run_case``), logging
    ``describe(case)`` before it; a failed case's error goes to *failed*."""
    from . import validation as v

    for c in cases:
        log(describe(c))
        v.run_case(c, redis_url, repeat)
        if c.error:
            failed.append(c.error)
            log(f"  failed: {c.error}")


def crash_at(base: Any) -> float:
    """When a validation crash comes: 40 % into *base*'s measurement window."""
    return round(base.warmup_s + 0.4 * (base.duration_s - base.warmup_s), 1)


def crash_scenario(base: Any, transport: str, clients: int) -> Any:
    """The crash case of *base*: *clients* on *transport*, the SIGKILL 40 % into the window,
    5 s more to recover."""
    return base.with_overrides({"clients": clients, "transports": transport, "crash_at_s": crash_at(base),
                                "duration_s": base.duration_s + 5})


def crash_runs(csc: Any, case: Callable[[Any], tuple[Any, Any, str | None]], repeat: int, failed: list[str],
               log: Callable[[str], None]) -> tuple[list[Any], list[Any]]:
    """*repeat* crash runs of *csc* (seeds seed, seed+1, ...), each ``case(scenario)`` ->
    (measured, simulated, error) (``validation.run_crash_case`` or ``run_cluster_crash_case``);
    stops at the first failure, which goes to *failed*."""
    metas: list[Any] = []
    sims: list[Any] = []
    for k in range(repeat):
        meas, sim, err = case(csc.with_overrides({"seed": csc.seed + k}))
        if err:
            failed.append(err)
            log(f"  failed: {err}")
            break
        metas.append(meas)
        sims.append(sim)
    return metas, sims


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from chatcore import TRANSPORTS

    from . import validation as v

    if args.grid is not None:
        return run_grid(args)
    args.transports = args.transports or "short_polling,long_polling,websocket"
    args.levels = args.levels or "light,medium,high"
    args.repeat = args.repeat or "1"
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if transports == ["none"]:
        transports = []
    bad = [t for t in transports if t not in TRANSPORTS]
    if (not transports and args.transports.strip() != "none") or bad:
        raise UsageError(f"--transports={args.transports}: expected a comma list of {', '.join(TRANSPORTS)}")
    levels = [x.strip() for x in args.levels.split(",") if x.strip()]
    if not levels or any(x not in v.LEVELS for x in levels):
        raise UsageError(f"--levels={args.levels}: expected a comma list of {', '.join(v.LEVELS)}")
    max_clients = _int("--max-clients", args.max_clients, 2, 2000)
    crash_clients = _int("--crash-clients", args.crash_clients, 2, 2000)
    repeat = _int("--repeat", args.repeat, 1, 20)
    crash_t = args.crash_transport
    if crash_t not in (*TRANSPORTS, "none"):
        raise UsageError(f"--crash-transport={crash_t}: expected one of {', '.join(TRANSPORTS)} or none")
    if args.redis_url is not None and not args.redis_url.startswith(("redis://", "rediss://")):
        raise UsageError(f"--redis-url={args.redis_url}: expected redis://host:port/db")
    servers = int(args.cluster) if args.cluster == "0" else _int("--cluster", args.cluster, 2, 16)
    cluster_clients = _int("--cluster-clients", args.cluster_clients, 8, 2000)
    try:
        downtime = float(args.cluster_downtime)
    except ValueError:
        downtime = -1.0
    if not 0 <= downtime <= 60:
        raise UsageError(f"--cluster-downtime={args.cluster_downtime}: expected a number of seconds 0-60")
    try:
        ok_rate = 0 < float(args.cluster_msg_rate) <= 600
    except ValueError:
        ok_rate = False
    if not ok_rate:
        raise UsageError(f"--cluster-msg-rate={args.cluster_msg_rate}: expected a number in (0, 600]")
    if args.db is not None and not args.db.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--db={args.db}: expected postgresql://user@host:port/database")
    if args.db is not None and repeat > 1:
        raise UsageError(f"--db={args.db}: one run per database (each run needs an empty one); "
                         "leave --db out for a private PostgreSQL per run, or use --repeat 1")
    if args.merge and not args.out:
        raise UsageError("--merge: needs --out DIR (the table to merge into)")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out={args.out}: exists and is not a directory")
    calibration = args.calibration or str(v.DEFAULT_CALIBRATION)
    base = v.load_scenario(v.VALIDATION_DEFAULTS, calibration, args.scenario, args.overrides)

    log = v.progress(args.json)
    machine = v.calibration_machine(calibration)
    log(v.calibration_note(machine))
    started = time.monotonic()
    cases = []
    for t in transports:
        for level in levels:
            n = v.clients_for(base, t, v.LEVELS[level], max_clients)
            cases.append(v.Case(t, level, base.with_overrides({"clients": n, "transports": t})))
    failed: list[str] = []
    run_cases(cases, repeat, args.redis_url, failed, log,
              lambda c: f"{c.transport:<14} {c.level:<7} {c.scenario.clients:>4} clients"
                        f"{f' x {repeat} runs' if repeat > 1 else ''} ...")
    rows = v.table_rows(cases)
    crash = None
    pooled: tuple = (None, None)
    if crash_t != "none":
        csc = crash_scenario(base, crash_t, crash_clients)
        log(f"crash: {crash_t}, {crash_clients} clients, SIGKILL at {csc.crash_at_s:g} s"
            f"{f' x {repeat} runs' if repeat > 1 else ''} ...")
        metas, sims = crash_runs(csc, lambda sc: v.run_crash_case(sc, crash_t, args.redis_url), repeat, failed,
                                 log)
        crash = (metas[0], sims[0]) if metas else (None, None)  # the figure shows the first run
        pooled = v.pool_crash(metas, sims) if metas else (None, None)  # a failed run is reported above
        rows += v.crash_rows(crash_t, crash_clients, *pooled)
    cluster_doc = None
    cluster_first: tuple = (None, None)
    if servers:
        # A lighter message rate than the load levels: five processes besides the load generator
        # share the machine, and what is compared is the reconnect storm, not throughput.
        csc = base.with_overrides({"clients": cluster_clients, "transports": "websocket",
                                   "msg_rate_per_min": float(args.cluster_msg_rate),
                                   "crash_at_s": crash_at(base), "downtime_s": downtime,
                                   "duration_s": base.duration_s + 5 + downtime})
        log(f"cluster crash: {servers} servers behind HAProxy, {cluster_clients} WebSocket clients, SIGKILL s1 at "
            f"{csc.crash_at_s:g} s, restart after {downtime:g} s{f' x {repeat} runs' if repeat > 1 else ''} ...")
        metas, sims = crash_runs(csc, lambda sc: v.run_cluster_crash_case(sc, "websocket", servers, args.redis_url,
                                                                          args.db), repeat, failed, log)
        cluster_first = (metas[0], sims[0]) if metas else (None, None)
        cpooled = v.pool_crash(metas, sims) if metas else (None, None)
        rows += v.crash_rows("websocket", cluster_clients, cpooled[0], cpooled[1],
                             level=f"cluster crash ({servers} servers)", metrics=v.CLUSTER_CRASH_METRICS)
        if cpooled[0] is not None:
            cluster_doc = {"servers": servers, "measured": cpooled[0].crash,
                           "simulated": cpooled[1].summary if cpooled[1] is not None else None}
    elapsed = time.monotonic() - started
    doc = {"calibration": calibration, "calibration_machine": machine, "scenario": base.to_dict(), "levels": v.LEVELS, "repeat": repeat,
           "elapsed_s": round(elapsed, 1), "errors": failed, "rows": rows,
           "crash": None if pooled[0] is None else {
               "measured": pooled[0].crash, "simulated": pooled[1].summary if pooled[1] is not None else None},
           "cluster_crash": cluster_doc}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if args.merge:
            doc = v.merge_docs(out / "validation.json", doc)
            rows = doc["rows"]
        v.write_csv(rows, out / "validation.csv")
        (out / "validation.json").write_text(v.dump_json(doc) + "\n", encoding="utf-8")
        if args.merge and (out / "validation.png").exists():
            v.add_cluster_panel(out / "validation.png", cluster_first)
        else:
            v.figure(cases, crash, out / "validation.png", cluster_first)
    if args.json:
        print(v.dump_json(doc))
    else:
        print(v.text_table(rows))
        print(f"({elapsed:.0f} s; rtt {base.rtt_ms:g} ms; {repeat} run{'s' if repeat > 1 else ''} per case, "
              f"seeds {base.seed}-{base.seed + repeat - 1}; calibration {calibration})")
        print(v.calibration_note(machine))
        for e in failed:
            print(f"error: {e}")
    return 1 if failed else 0


def run_grid(args: argparse.Namespace) -> int:
    """``validate --grid FILE.toml``: each point of the file's grid (a sweep file of kind
    ``validate``), on each transport, at each of the file's load levels, ``replications`` runs
    pooled (seeds ``seed``, ``seed + 1``, ...), one run at a time; then, if the file asks, a
    crash run per transport at the base point. Every row carries its point's configuration."""
    import functools
    import time
    from pathlib import Path

    from . import validation as v
    from .sweep.design import design_points, point_scenario
    from .sweep.spec import load_sweep

    for flag, value in (("--transports", args.transports), ("--levels", args.levels), ("--repeat", args.repeat)):
        if value is not None:
            raise UsageError(f"{flag}={value}: not with --grid (the grid file's transports, [validate] levels and "
                             "replications decide)")
    for flag, value, default in (("--cluster", args.cluster, "0"), ("--crash-transport", args.crash_transport,
                                                                     "websocket"),
                                 ("--crash-clients", args.crash_clients, "100"),
                                 ("--max-clients", args.max_clients, "300")):
        if value != default:
            raise UsageError(f"{flag}={value}: not with --grid (set it in the grid file's [validate] table)")
    if args.merge:
        raise UsageError("--merge: not with --grid (a grid writes its own validation-grid.* files)")
    if args.redis_url is not None and not args.redis_url.startswith(("redis://", "rediss://")):
        raise UsageError(f"--redis-url={args.redis_url}: expected redis://host:port/db")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out={args.out}: exists and is not a directory")
    calibration = args.calibration or str(v.DEFAULT_CALIBRATION)
    start = v.load_scenario(v.VALIDATION_DEFAULTS, calibration, args.scenario, [])
    spec = load_sweep(args.grid, args.overrides, None, start=start)
    if spec.kind != "validate":
        raise UsageError(f"--grid={args.grid}: kind={spec.kind}: expected a sweep file with kind = \"validate\" "
                         "(docs/VALIDATION.md, \"The grid\")")
    opts = spec.validate
    names = list(spec.axis_names)
    points = design_points(spec)
    transports = list(spec.base.transports)
    repeat = spec.replications

    log = v.progress(args.json)
    machine = v.calibration_machine(calibration)
    log(v.calibration_note(machine))
    started = time.monotonic()
    cases = []
    for i, values in enumerate(points):
        sc = point_scenario(spec, values).with_overrides({"seed": spec.seed})
        config = {n: getattr(sc, n) for n in names}
        for t in transports:
            for level in opts["levels"]:
                n = v.clients_for(sc, t, v.LEVELS[level], opts["max_clients"])
                cases.append(v.Case(t, level, sc.with_overrides({"clients": n, "transports": t}),
                                    point=i, config=config))
    runs = len(cases) * repeat + (len(transports) * repeat if opts["crash"] else 0)
    log(f"grid {spec.name}: {len(points)} points x {len(transports)} transports x {len(opts['levels'])} levels x "
        f"{repeat} runs{f' + a crash run per transport' if opts['crash'] else ''} = {runs} runs")
    failed: list[str] = []
    run_cases(cases, repeat, args.redis_url, failed, log,
              lambda c: f"[{time.monotonic() - started:5.0f} s] point {c.point} "
                        f"({v.config_label(c.config or {}, names)}) "
                        f"{c.transport:<14} {c.level:<7} {c.scenario.clients:>4} clients ...")
    rows = v.table_rows(cases)
    crashes: dict[str, tuple] = {}
    if opts["crash"]:
        base = spec.base.with_overrides({"seed": spec.seed})
        config = {"point": None, **{n: getattr(base, n) for n in names}}
        for t in transports:
            csc = crash_scenario(base, t, opts["crash_clients"])
            log(f"[{time.monotonic() - started:5.0f} s] crash: {t}, {opts['crash_clients']} clients, SIGKILL at "
                f"{csc.crash_at_s:g} s x {repeat} ...")
            metas, sims = crash_runs(csc, functools.partial(v.run_crash_case, transport=t, redis_url=args.redis_url),
                                     repeat, failed, log)
            pooled = v.pool_crash(metas, sims) if metas else (None, None)
            crashes[t] = pooled
            rows += v.crash_rows(t, opts["crash_clients"], pooled[0], pooled[1], config=config)
    elapsed = time.monotonic() - started
    scored = [r for r in rows if r["pass"] is not None]
    doc = {"grid": spec.to_dict(), "calibration": calibration, "calibration_machine": machine,
           "levels": v.LEVELS, "repeat": repeat, "elapsed_s": round(elapsed, 1),
           "load": _load_note(), "errors": failed, "targets_met": sum(1 for r in scored if r["pass"]),
           "targets": len(scored), "rows": rows,
           "crash": {t: None if p[0] is None else {"measured": p[0].crash,
                                                    "simulated": p[1].summary if p[1] is not None else None}
                     for t, p in crashes.items()}}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        v.write_csv(rows, out / "validation-grid.csv", config=names)
        (out / "validation-grid.json").write_text(v.dump_json(doc) + "\n", encoding="utf-8")
        v.grid_figure(rows, names, out / "validation-grid.png")
    if args.json:
        print(v.dump_json(doc))
    else:
        print(v.text_table(rows, config=names))
        print(f"({elapsed:.0f} s; grid {spec.name}, {len(points)} points; {repeat} run{'s' if repeat > 1 else ''} "
              f"per case, seeds {spec.seed}-{spec.seed + repeat - 1}; calibration {calibration}; {doc['load']})")
        print(v.calibration_note(machine))
        for e in failed:
            print(f"error: {e}")
    return 1 if failed else 0


def _load_note() -> str:
    """The machine's load average when the grid finished (other work shares the cores)."""
    import os
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"
