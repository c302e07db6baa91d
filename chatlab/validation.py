"""Glue for ``chatlab loadgen``, ``chatlab calibrate`` and ``chatlab validate``: the same
scenario goes to the simulation (``sim.run`` / ``sim.crash.run_crash``) and to the load
generator (``reference_server.loadgen``), and the two summaries become one table of
metric, simulated, measured, relative error, tolerance and pass.

Tolerances are the issue's targets and are not to be loosened to make a row pass:
requests/s and bytes per message 3 %; median latency 10 % (or 2 ms when the simulated
median is under 20 ms); p95 latency 20 %; time to reconnect all 20 %; messages lost and
duplicated after de-duplication must be 0. Rows without a target are informational.
"""

from __future__ import annotations

import asyncio
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import UsageError, read_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CALIBRATION = ROOT / "data" / "calibration.toml"

#: The workload validate runs at every level (a scenario file or --set changes them).
VALIDATION_DEFAULTS: dict[str, Any] = {
    "rtt_ms": 50.0, "msg_rate_per_min": 30.0, "group_size": 2, "payload_bytes": 100,
    "poll_interval_s": 2.0, "long_poll_timeout_s": 30.0, "read_delay_s": 3.0, "receipts": True,
    "duration_s": 17.0, "warmup_s": 5.0, "connect_ramp_s": 3.0, "seed": 1, "http_keepalive_s": 75.0,
    # A fresh server per run: message ids and cursor sequence numbers stay under 100.
    "id_digits": 2,
}
#: Load levels: target server CPU utilisation (of the one event-loop core) predicted by the
#: simulation with the calibrated costs.
LEVELS: dict[str, float] = {"light": 0.10, "medium": 0.30, "high": 0.60}
#: Loadgen defaults when run alone (the simulation's defaults are a 1000-client, 3-minute run).
LOADGEN_DEFAULTS: dict[str, Any] = {"clients": 50, "duration_s": 30.0, "warmup_s": 10.0,
                                    "connect_ramp_s": 5.0, "rtt_ms": 50.0}

# (metric label, summary path, kind, tolerance)
METRICS: list[tuple[str, str, str, float | None]] = [
    ("requests/s", "requests_per_s", "rel", 0.03),
    ("bytes per message", "bytes_per_message", "rel", 0.03),
    ("latency p50 (ms)", "latency_ms.p50", "p50", 0.10),
    ("latency p95 (ms)", "latency_ms.p95", "rel", 0.20),
    ("server CPU utilisation", "server_cpu_utilization", "info", None),
    ("open connections mean", "open_connections_mean", "info", None),
    ("empty poll responses", "empty_response_ratio", "info", None),
    # measured only: a late load-generator loop lands in every measured latency
    ("load generator loop lag p95 (ms)", "loadgen_loop_lag_ms.p95", "info", None),
    # measured only: the emulated network's one-way delay minus rtt/2, per chunk (mean)
    ("emulated delay excess mean (ms)", "proxy_delay_excess_ms.mean", "info", None),
]
#: Latency rows that also get the measured quantile's distribution-free 95 % interval.
QUANTILE_OF_PATH = {"latency_ms.p50": 0.50, "latency_ms.p95": 0.95}
#: The cluster crash (``validate --cluster N``): the issue's targets are time to reconnect all
#: within 20 %, reconnect peak within 25 %, loss and duplicates exactly 0; the rest is informational.
CLUSTER_CRASH_METRICS: list[tuple[str, str, str, float | None]] = [
    ("time to reconnect all (s)", "time_to_reconnect_all_s", "rel", 0.20),
    ("reconnect peak (connects/s)", "reconnect_peak_per_s", "rel", 0.25),
    ("connects refused or timed out", "connects_failed", "info", None),
    ("reconnect attempt, median (ms)", "reconnect_connect_ms_median", "info", None),
    ("clients affected", "affected_clients", "info", None),
    ("presence flaps", "presence_flaps", "info", None),
    ("duplicates dropped by the clients", "duplicates_dropped_by_client", "info", None),
    ("messages lost", "messages_lost", "zero", 0.0),
    ("messages duplicated after de-duplication", "duplicates_after_dedup", "zero", 0.0),
]
CRASH_METRICS: list[tuple[str, str, str, float | None]] = [
    ("time to reconnect all (s)", "time_to_reconnect_all_s", "rel", 0.20),
    ("reconnect peak (connects/s)", "reconnect_peak_per_s", "info", None),
    ("messages lost", "messages_lost", "zero", 0.0),
    ("messages duplicated", "messages_duplicated", "zero", 0.0),
]


def _get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if d is None:
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


def compare_row(scope: str, level: str, label: str, kind: str, tol: float | None, sim: Any,
                meas: Any) -> dict[str, Any]:
    """One table row; ``pass`` is True/False, or None for informational rows."""
    sim_v = None if sim is None else float(sim)
    meas_v = None if meas is None else float(meas)
    err = None
    if sim_v is not None and meas_v is not None and sim_v != 0:
        err = (meas_v - sim_v) / abs(sim_v)
    ok: bool | None = None
    tol_text = "-"
    if kind == "zero":
        ok = meas_v == 0
        tol_text = "= 0"
    elif kind in ("rel", "p50") and tol is not None:
        tol_text = f"{tol:.0%}"
        if sim_v is None or meas_v is None:
            ok = False
        elif kind == "p50" and sim_v < 20.0:
            tol_text = "2 ms"
            ok = abs(meas_v - sim_v) <= 2.0
        else:
            ok = err is not None and abs(err) <= tol
    return {"transport": scope, "level": level, "metric": label, "simulated": sim_v, "measured": meas_v,
            "relative_error": err, "tolerance": tol_text, "pass": ok}


# --- scenarios ------------------------------------------------------------------------------
def load_scenario(defaults: dict[str, Any], calibration: str | None, scenario_file: str | None,
                  overrides: list[str]):
    """Scenario() <- *defaults* <- calibration file <- scenario file <- --set, validated."""
    from sim import ParameterError, Scenario, parse_assignment
    try:
        sc = Scenario().with_overrides(defaults)
        for flag, path in (("--calibration", calibration), ("--scenario", scenario_file)):
            if path is None:
                continue
            text = read_text(path, f"{flag}={path}",
                             " (run `chatlab calibrate` first)" if flag == "--calibration" else "")
            try:
                sc = Scenario.from_toml(text, sc)
            except ParameterError as exc:
                raise UsageError(f"{flag}={path}: {exc}") from None
        return sc.with_overrides(dict(parse_assignment(a) for a in overrides))
    except ParameterError as exc:
        raise UsageError(str(exc)) from None


def load_config(sc, transport: str, crash: bool = False, **extra: Any):
    """The load generator's configuration for scenario *sc* (the crash only if *crash*)."""
    from reference_server.loadgen import LoadConfig
    try:
        return LoadConfig.from_params(sc.to_values(), transport=transport, crash=crash, **extra)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def clients_for(sc, transport: str, target: float, max_clients: int, min_clients: int = 4) -> int:
    """Clients that bring the simulated server CPU to *target* (linear in clients)."""
    from sim import run
    ref = 40
    probe = sc.with_overrides({"clients": ref, "duration_s": 12.0, "warmup_s": 4.0,
                               "connect_ramp_s": min(sc.connect_ramp_s, 3.0),
                               "group_size": min(sc.group_size, ref)})
    per_client = run(probe, transport).summary["server_cpu_utilization"] / ref
    if per_client <= 0:
        return max_clients
    n = int(round(target / per_client))
    n -= n % sc.group_size if sc.group_size > 1 and n > sc.group_size else 0
    return max(min_clients, sc.group_size, min(max_clients, n))


# --- running ------------------------------------------------------------------------------
@dataclass
class Case:
    transport: str
    level: str
    scenario: Any
    sim: Any = None   # one run's result, or a Pooled one over repeats
    meas: Any = None
    error: str | None = None
    #: ``validate --grid``: the point's number and its axis values (every row carries them)
    point: int | None = None
    config: dict[str, Any] | None = None


@dataclass
class Pooled:
    """Several runs of one case (seeds ``seed``, ``seed + 1``, ...) as one: latency
    statistics over every run's messages together, every other value pooled as
    :func:`_pool_values` says; ``each`` keeps the runs' own summaries."""
    summary: dict[str, Any]
    messages: Any
    each: list[dict[str, Any]]


#: Counts pooled by summing (one lost message in three runs is 1, not 0.33).
SUMMED = ("messages_lost", "messages_duplicated", "messages_undelivered_unacked", "clients_not_reconnected",
          "send_failures", "duplicates_after_dedup", "duplicates_dropped_by_client")


def _pool_values(values: list[Any], key: str = "") -> Any:
    """The runs' values as one: dicts key by key, counts in SUMMED summed, other numbers
    averaged, None if any run has None (a run that did not get a value must not be hidden
    by the others), anything else (text, lists) only if every run agrees."""
    if all(isinstance(v, dict) for v in values):
        return {k: _pool_values([v.get(k) for v in values], k) for k in values[0]}
    if any(v is None for v in values):
        return None
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sum(values) if key in SUMMED else sum(float(v) for v in values) / len(values)
    return values[0] if all(v == values[0] for v in values) else None


def pool(results: list[Any]) -> Any:
    """One result for several runs (the run itself when there is one)."""
    import pandas as pd

    from chatcore.stats import latency_stats
    if len(results) == 1:
        return results[0]
    messages = pd.concat([r.messages for r in results], ignore_index=True)
    summary = _pool_values([r.summary for r in results])
    summary["latency_ms"] = latency_stats(messages.loc[messages["in_window"], "latency_ms"].to_numpy(dtype=float))
    return Pooled(summary, messages, [r.summary for r in results])


def run_case(case: Case, redis_url: str | None, repeat: int = 1) -> None:
    """Load generator first (alone on the machine), then the simulation; *repeat* times
    with seeds ``seed + k``, pooled."""
    from reference_server.loadgen import ServerFailed, run_load
    from sim import run
    sims, meas = [], []
    for k in range(repeat):
        sc = case.scenario.with_overrides({"seed": case.scenario.seed + k})
        cfg = load_config(sc, case.transport, redis_url=redis_url)
        try:
            meas.append(asyncio.run(asyncio.wait_for(run_load(cfg), cfg.duration_s + 120)))
        except (ServerFailed, asyncio.TimeoutError, OSError) as exc:
            case.error = f"{case.transport}/{case.level}: {exc or type(exc).__name__}"
            break
        sims.append(run(sc, case.transport))
    case.meas = pool(meas) if meas and case.error is None else None
    case.sim = pool(sims) if sims else run(case.scenario, case.transport)


@dataclass
class PooledCrash:
    """Several crash runs as one (pooled as :func:`_pool_values` says); ``each`` keeps the
    runs' own values."""
    crash: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    each: list[dict[str, Any]] | None = None


def pool_crash(meas: list[Any], sims: list[Any]) -> tuple[Any, Any]:
    """(measured, simulated) for crash_rows from several runs (the runs themselves for one)."""
    if len(meas) == 1:
        return meas[0], sims[0]
    return (PooledCrash(crash=_pool_values([m.crash for m in meas]), each=[m.crash for m in meas]),
            PooledCrash(summary=_pool_values([r.summary for r in sims]), each=[r.summary for r in sims]))


def run_crash_case(sc, transport: str, redis_url: str | None) -> tuple[Any, Any, str | None]:
    """Kill the server at crash_at_s, restart it, then simulate the same crash with the
    measured restart time as downtime_s."""
    from reference_server.loadgen import ServerFailed, run_load
    from sim.crash import run_crash
    cfg = load_config(sc, transport, crash=True, redis_url=redis_url)
    try:
        meas = asyncio.run(asyncio.wait_for(run_load(cfg), cfg.duration_s + 120))
    except (ServerFailed, asyncio.TimeoutError, OSError) as exc:
        return None, None, f"crash/{transport}: {exc or type(exc).__name__}"
    if meas.crash is None:
        return meas, None, f"crash/{transport}: the crash did not happen"
    # One reference server: its delivery finds connections in its own memory, which dies with it,
    # so nothing routes to the dead process after the crash (a registry that learns at once).
    csc = sc.with_overrides({"servers": 1, "crashed_servers": 1, "fault": "servers", "crash_mode": "reset",
                             "registry_ttl_s": 0,
                             "downtime_s": round(meas.crash["downtime_s"], 3)})
    return meas, run_crash(csc, transport), None


def cluster_crash_scenario(sc, servers: int, downtime_s: float):
    """The crash model's scenario for a cluster crash run: *servers* servers, the first
    SIGKILLed (a reset) for *downtime_s*, the ``queue`` design, and the session registry and
    presence timings the reference server uses (``ServerConfig`` defaults)."""
    from reference_server.config import ServerConfig

    cfg = ServerConfig()
    return sc.with_overrides({"servers": servers, "crashed_servers": 1, "fault": "servers", "crash_mode": "reset",
                              "delivery_design": "queue", "downtime_s": round(downtime_s, 3),
                              "registry_ttl_s": cfg.presence_ttl_s, "presence_ttl_s": cfg.presence_ttl_s,
                              "presence_heartbeat_s": cfg.presence_heartbeat_s,
                              "visibility_timeout_s": cfg.queue_visibility_timeout_s})


def run_cluster_crash_case(sc, transport: str, servers: int, redis_url: str | None,
                           db_url: str | None) -> tuple[Any, Any, str | None]:
    """*servers* servers behind HAProxy; SIGKILL the first at crash_at_s, restart it after
    downtime_s; then simulate the same crash with the measured downtime (kill until HAProxy
    saw it up again)."""
    from reference_server.loadgen import ServerFailed, run_load
    from sim.crash import run_crash
    cfg = load_config(sc, transport, crash=True, redis_url=redis_url, cluster=servers, db_url=db_url)
    try:
        meas = asyncio.run(asyncio.wait_for(run_load(cfg), cfg.duration_s + 180))
    except (ServerFailed, asyncio.TimeoutError, OSError) as exc:
        return None, None, f"cluster crash/{transport}: {exc or type(exc).__name__}"
    if meas.crash is None:
        return meas, None, f"cluster crash/{transport}: the crash did not happen"
    sim = run_crash(cluster_crash_scenario(sc, servers, meas.crash["downtime_s"]), transport)
    # The model's names for what the load generator counts: one count for "refused or timed
    # out"; the drops by the clients' de-duplication; what reached the application twice.
    sim.summary["connects_failed"] = int(sim.summary.get("connects_rejected") or 0) + \
        int(sim.summary.get("connects_timed_out") or 0)
    sim.summary["duplicates_dropped_by_client"] = sim.summary.get("messages_duplicated")
    sim.summary["duplicates_after_dedup"] = int(sim.messages.duplicated(["msg", "recipient"]).sum())
    # The model's successful attempt: TCP connect (a round trip), the request's one-way delay,
    # connect_cpu_ms on an idle core, the answer's one-way delay.
    csc = cluster_crash_scenario(sc, servers, meas.crash["downtime_s"])
    sim.summary["reconnect_connect_ms_median"] = 2 * csc.rtt_ms + csc.connect_cpu_ms
    meas.crash["duplicates_after_dedup"] = meas.crash["messages_duplicated"]
    return meas, sim, None


def table_rows(cases: list[Case]) -> list[dict[str, Any]]:
    """One row per case and metric. Latency quantile rows also carry the measured quantile's
    95 % interval (``measured_ci_low``/``_high``, chatcore.stats.quantile_ci): how far the
    measured value could move by sampling alone. It is reported beside the tolerance; it
    does not change whether a row passes."""
    from chatcore.stats import quantile_ci
    rows = []
    for c in cases:
        lat = None
        if c.meas is not None:
            m = c.meas.messages
            lat = m.loc[m["in_window"], "latency_ms"].to_numpy(dtype=float)
        for label, path, kind, tol in METRICS:
            sim_v = _get(c.sim.summary, path) if c.sim is not None else None
            meas_v = _get(c.meas.summary, path) if c.meas is not None else None
            rows.append(compare_row(c.transport, c.level, label, kind, tol, sim_v, meas_v))
            rows[-1]["clients"] = c.scenario.clients
            if c.config is not None:
                rows[-1].update({"point": c.point, **c.config})
            _spread(rows[-1], c.meas, path)
            if path in QUANTILE_OF_PATH and lat is not None:
                ci = quantile_ci(lat, QUANTILE_OF_PATH[path])
                rows[-1]["measured_ci_low"], rows[-1]["measured_ci_high"] = ci if ci else (None, None)
    return rows


def _spread(row: dict[str, Any], meas: Any, path: str) -> None:
    """Add the measured values of each run (``measured_each``) and their range to *row*,
    when *meas* pools several runs."""
    each = getattr(meas, "each", None)
    if not each:
        return
    vals = [_get(e, path) for e in each]
    row["measured_each"] = vals
    nums = [float(v) for v in vals if v is not None]
    if nums:
        row["measured_min"], row["measured_max"] = min(nums), max(nums)


def crash_rows(transport: str, clients: int, meas: Any, sim: Any, level: str = "crash",
               metrics: list[tuple[str, str, str, float | None]] | None = None,
               config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rows = []
    for label, key, kind, tol in (metrics or CRASH_METRICS):
        sim_v = sim.summary.get(key) if sim is not None else None
        meas_v = meas.crash.get(key) if meas is not None and meas.crash else None
        rows.append(compare_row(transport, level, label, kind, tol, sim_v, meas_v))
        rows[-1]["clients"] = clients
        if config is not None:
            rows[-1].update(config)
        _spread(rows[-1], meas, key)
    return rows


# --- output -------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    from chatcore.tables import fmt_auto

    return fmt_auto(v)


def config_label(row: dict[str, Any], names: list[str]) -> str:
    """A grid row's configuration in a few characters: ``g2 rtt50 r30 p100``."""
    short = {"group_size": "g", "rtt_ms": "rtt", "msg_rate_per_min": "r", "payload_bytes": "p"}
    def num(v: Any) -> str:
        return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
    return " ".join(f"{short.get(n, n + '=')}{num(row.get(n))}" for n in names)


def text_table(rows: list[dict[str, Any]], config: list[str] | None = None) -> str:
    """The table; with *config* (a grid's axis names) a column with each row's configuration."""
    head = ["transport", "level", "clients", "metric", "simulated", "measured", "measured 95% CI", "rel. error",
            "tolerance", "pass"]
    if config:
        head.insert(0, "configuration")
    body = []
    for r in rows:
        err = r["relative_error"]
        lo, hi = r.get("measured_ci_low"), r.get("measured_ci_high")
        ci = f"{_fmt(lo)} - {_fmt(hi)}" if lo is not None and hi is not None else ""
        body.append([r["transport"], r["level"], str(r.get("clients", "")), r["metric"], _fmt(r["simulated"]),
                     _fmt(r["measured"]), ci, "-" if err is None else f"{err:+.1%}", r["tolerance"],
                     {True: "yes", False: "NO", None: "-"}[r["pass"]]])
        if config:
            body[-1].insert(0, config_label(r, config))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)] if body else [len(h) for h in head]
    right = {5, 6, 7, 8} if config else {4, 5, 6, 7}
    lines = ["  ".join(h.rjust(w) if i in right else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append("  ".join(x.rjust(w) if i in right else x.ljust(w) for i, (x, w) in enumerate(zip(b, widths))))
    scored = [r for r in rows if r["pass"] is not None]
    lines.append(f"{sum(1 for r in scored if r['pass'])} of {len(scored)} targets met")
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path, config: list[str] | None = None) -> None:
    """The table as CSV; with *config* (a grid's axis names) each row's point and configuration first."""
    import csv
    cols = [*(["point", *config] if config else []), "transport", "level", "clients", "metric", "simulated",
            "measured", "measured_ci_low", "measured_ci_high", "measured_min", "measured_max", "relative_error",
            "tolerance", "pass"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _crash_panel(ax: Any, meas: Any, sim: Any, title: str) -> None:
    """Clients connected (left axis) and connects/s (right axis), measured solid and
    simulated dashed, over the run."""
    b = meas.bins
    ax.plot(b["t_s"], b.get("connected_clients"), "-", label="measured connected")
    ax.plot(sim.bins["t_s"], sim.bins["connected_clients"], "--", label="simulated connected")
    ax2 = ax.twinx()
    ax2.plot(b["t_s"], b.get("connect_attempts_per_s"), "-", color="C3", alpha=0.6, label="measured connects/s")
    ax2.plot(sim.bins["t_s"], sim.bins["connect_attempts_per_s"], "--", color="C3", alpha=0.6,
             label="simulated connects/s")
    ax.set_title(title)
    ax.set_xlabel("t (s)")
    if len(b):  # the simulation runs on until every client could be back; show the measured run
        ax.set_xlim(0, float(b["t_s"].max()) + 2 * float(meas.config.bin_s))
    ax.legend(fontsize=7, loc="lower left")
    ax2.legend(fontsize=7, loc="lower right")


def _cluster_title(meas: Any) -> str:
    c = meas.crash or {}
    return (f"cluster crash: 1 of {c.get('servers', '?')} servers killed, "
            f"{c.get('downtime_s', 0):.1f} s down ({meas.config.transport})")


def figure(cases: list[Case], crash: tuple[Any, Any] | None, path: Path,
           cluster: tuple[Any, Any] | None = None) -> None:
    """Latency CDFs (simulated dashed, measured solid) per transport, requests/s and
    bytes per message side by side per case, the crash run, and the cluster crash run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    has_cluster = cluster is not None and cluster[0] is not None and cluster[1] is not None
    transports = list(dict.fromkeys(c.transport for c in cases))
    ncols = max(4 if has_cluster else 3, len(transports))
    fig, axes = plt.subplots(2, ncols, figsize=(5 * ncols, 8.5))
    for j, t in enumerate(transports):
        ax = axes[0][j]
        for k, c in enumerate(x for x in cases if x.transport == t):
            color = f"C{k}"
            for res, style, who in ((c.sim, "--", "sim"), (c.meas, "-", "measured")):
                if res is None:
                    continue
                m = res.messages
                lat = np.sort(m.loc[m["in_window"], "latency_ms"].to_numpy())
                if lat.size:
                    ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, style, color=color,
                            label=f"{c.level} ({c.scenario.clients}) {who}")
        ax.set_title(f"{t}: latency CDF")
        ax.set_xlabel("latency (ms)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    labels = [f"{c.transport[:5]}\n{c.level}" for c in cases]
    x = np.arange(len(cases))
    for ax, key, title in ((axes[1][0], "requests_per_s", "requests/s"),
                           (axes[1][1], "bytes_per_message", "bytes per message")):
        sim = [(_get(c.sim.summary, key) or 0) if c.sim is not None else 0 for c in cases]
        meas = [(_get(c.meas.summary, key) or 0) if c.meas is not None else 0 for c in cases]
        ax.bar(x - 0.2, sim, 0.4, label="simulated")
        ax.bar(x + 0.2, meas, 0.4, label="measured")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=8)
    if crash is not None and crash[0] is not None and crash[1] is not None:
        _crash_panel(axes[1][2], crash[0], crash[1], f"crash ({crash[0].config.transport}): clients connected, "
                                                     "connects/s")
    else:
        axes[1][2].axis("off")
    if has_cluster:
        assert cluster is not None
        _crash_panel(axes[1][3], cluster[0], cluster[1], _cluster_title(cluster[0]))
    for j in range(len(transports), axes.shape[1]):
        axes[0][j].axis("off")
    for j in range(4 if has_cluster else 3, axes.shape[1]):
        axes[1][j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: The grid figure's panels: (metric label, tolerance band for the relative error).
GRID_PANELS: list[tuple[str, float]] = [("requests/s", 0.03), ("bytes per message", 0.03),
                                        ("latency p50 (ms)", 0.10), ("latency p95 (ms)", 0.20)]


def grid_figure(rows: list[dict[str, Any]], names: list[str], path: Path) -> None:
    """``validate --grid``: the relative error (measured vs simulated) of each core metric at
    each configuration, one marker per transport (filled: target met, hollow: missed; the p50
    of a median under 20 ms is judged within 2 ms), the target band shaded; the crash runs'
    time to reconnect all per transport; the load generator's own loop lag."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chatcore import TRANSPORTS

    cases = [r for r in rows if r["level"] != "crash"]
    configs = list(dict.fromkeys((r.get("point"), config_label(r, names), r["level"]) for r in cases))
    labels = [f"{pt}: {lab}" + (f"\n{lvl}" if len({c[2] for c in configs}) > 1 else "") for pt, lab, lvl in configs]
    xpos = {c: i for i, c in enumerate(configs)}
    transports = [t for t in TRANSPORTS if any(r["transport"] == t for r in rows)]
    shift = {t: (k - (len(transports) - 1) / 2) * 0.18 for k, t in enumerate(transports)}
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    flat = list(axes.flat)

    def dots(ax: Any, sel: list[dict[str, Any]], x_of: Callable[[dict[str, Any]], float]) -> None:
        for k, t in enumerate(transports):
            for r in (r for r in sel if r["transport"] == t and r["relative_error"] is not None):
                ok = bool(r["pass"])
                ax.plot(x_of(r) + shift[t], 100 * r["relative_error"], "o", ms=7, color=f"C{k}",
                        markerfacecolor=f"C{k}" if ok else "white", markeredgewidth=1.6,
                        label=t if r is next(q for q in sel if q["transport"] == t
                                             and q["relative_error"] is not None) else None)

    for ax, (metric, tol) in zip(flat, GRID_PANELS):
        sel = [r for r in cases if r["metric"] == metric]
        ax.axhspan(-100 * tol, 100 * tol, color="0.85", zorder=0, label=f"target \u00b1{tol:.0%}")
        ax.axhline(0, color="0.5", lw=0.8)
        dots(ax, sel, lambda r: xpos[(r.get("point"), config_label(r, names), r["level"])])
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, -150 * tol), max(hi, 150 * tol))
        met = sum(1 for r in sel if r["pass"])
        ax.set_title(f"{metric}: {met} of {len(sel)} met")
        ax.set_ylabel("measured vs simulated (%)")
        ax.set_xticks(range(len(configs)), labels, fontsize=7, rotation=30, ha="right")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    ax = flat[4]
    crash = [r for r in rows if r["level"] == "crash"]
    ttr = [r for r in crash if r["metric"] == "time to reconnect all (s)"]
    ax.axhspan(-20, 20, color="0.85", zorder=0, label="target \u00b120%")
    ax.axhline(0, color="0.5", lw=0.8)
    dots(ax, ttr, lambda r: transports.index(r["transport"]) - shift[r["transport"]])
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, -30), max(hi, 30))
    zero = [r for r in crash if r["tolerance"] == "= 0"]
    bad = [f"{r['transport']}: {r['metric']} {_fmt(r['measured'])}" for r in zero if not r["pass"]]
    ax.set_xticks(range(len(transports)), transports, fontsize=8)
    ax.set_title("crash: time to reconnect all; " + ("loss and duplicates 0 everywhere" if zero and not bad
                                                      else "; ".join(bad) or "no crash runs"), fontsize=9)
    ax.set_ylabel("measured vs simulated (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    ax = flat[5]
    lag = [r for r in cases if r["metric"] == "load generator loop lag p95 (ms)"]
    for k, t in enumerate(transports):
        sel = [r for r in lag if r["transport"] == t and r["measured"] is not None]
        ax.plot([xpos[(r.get("point"), config_label(r, names), r["level"])] + shift[t] for r in sel],
                [r["measured"] for r in sel], "s", color=f"C{k}", label=t)
    ax.set_title("load generator loop lag p95 (ms, measured)")
    ax.set_xticks(range(len(configs)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_cluster_panel(path: Path, cluster: tuple[Any, Any]) -> None:
    """``validate --merge``: the existing figure at *path*, unchanged, with the cluster crash
    run's panel added below it (the single-server cases were not run again)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    if cluster[0] is None or cluster[1] is None:
        return
    old = mpimg.imread(path)
    h, w = old.shape[:2]
    dpi = 110
    panel_h = 4.2
    fig = plt.figure(figsize=(w / dpi, h / dpi + panel_h), dpi=dpi)
    top = fig.add_axes((0, panel_h / (h / dpi + panel_h), 1, (h / dpi) / (h / dpi + panel_h)))
    top.imshow(old)
    top.axis("off")
    ax = fig.add_axes((0.06, 0.05 * 8.5 / (h / dpi + panel_h), 0.4, 0.75 * panel_h / (h / dpi + panel_h)))
    _crash_panel(ax, cluster[0], cluster[1], _cluster_title(cluster[0]))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def merge_docs(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """``validate --merge``: the table in *path* with this run's rows in place of the rows
    of the same (transport, level), and this run's rows that are new added at the end."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return new
    redone = {(r["transport"], r["level"]) for r in new["rows"]}
    rows = [r for r in old.get("rows", []) if (r["transport"], r["level"]) not in redone] + new["rows"]
    merged = {**old, "rows": rows}
    for key in ("cluster_crash",):
        if new.get(key) is not None:
            merged[key] = new[key]
    merged.setdefault("merged_runs", []).append(
        {"elapsed_s": new["elapsed_s"], "calibration": new["calibration"], "repeat": new["repeat"],
         "errors": new["errors"], "levels_redone": sorted({lvl for _, lvl in redone}),
         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return merged


def machine_metadata() -> dict[str, Any]:
    """CPU model, cores, Python and package versions, date: what a calibration depends on."""
    from importlib.metadata import PackageNotFoundError, version
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pkgs: dict[str, str | None] = {}
    for p in ("aiohttp", "websockets", "fakeredis", "redis", "simpy", "numpy"):
        try:
            pkgs[p] = version(p)
        except PackageNotFoundError:
            pkgs[p] = None
    import os
    return {"cpu_model": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": pkgs,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


#: What a calibration depends on, compared between the calibrating machine and this one.
MACHINE_KEYS = ("cpu_model", "cpus", "python", "platform")
MACHINE_PACKAGES = ("aiohttp", "websockets", "fakeredis", "redis")


def calibration_machine(calibration: str | Path) -> dict[str, Any]:
    """Where the calibration *calibration* (a .toml with its .json beside it, as ``chatlab
    calibrate`` writes them) was measured, against this machine: ``same`` (True, False, or
    None when the .json is missing), ``differences`` (``name: then -> now``), ``date``."""
    now = machine_metadata()
    try:
        meta = json.loads(Path(calibration).with_suffix(".json").read_text(encoding="utf-8"))["machine"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"same": None, "differences": [], "date": None, "note": "no machine description beside the calibration"}
    diffs = [f"{k}: {meta.get(k)} -> {now.get(k)}" for k in MACHINE_KEYS if meta.get(k) != now.get(k)]
    then_p, now_p = meta.get("packages") or {}, now["packages"]
    diffs += [f"{p}: {then_p.get(p)} -> {now_p.get(p)}" for p in MACHINE_PACKAGES if then_p.get(p) != now_p.get(p)]
    return {"same": not diffs, "differences": diffs, "date": meta.get("date")}


def calibration_note(info: dict[str, Any]) -> str:
    """One line for the table's footer."""
    if info["same"] is None:
        return "calibration machine unknown (" + info.get("note", "") + ")"
    if info["same"]:
        return f"calibration measured on this machine ({info['date']})"
    return (f"WARNING: calibration measured on another machine ({info['date']}; " + "; ".join(info["differences"])
            + "): rerun `chatlab calibrate`")


def progress(quiet: bool) -> Callable[[str], None]:
    import sys

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)
    return log


def dump_json(obj: Any) -> str:
    from chatcore.tables import jsonable

    return json.dumps(jsonable(obj), indent=2, allow_nan=False)
