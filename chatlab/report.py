"""Turning a :class:`sim.Comparison` into what people read: a text table,
JSON, CSV files and PNG figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (label, key in the flat summary, format)
ROWS: list[tuple[str, str, str]] = [
    ("requests/s (client->server)", "requests_per_s", "{:,.1f}"),
    ("empty poll responses", "empty_response_ratio", "{:.1%}"),
    ("overhead bytes/s up", "overhead_bytes_up_per_s", "{:,.0f}"),
    ("overhead bytes/s down", "overhead_bytes_down_per_s", "{:,.0f}"),
    ("payload bytes/s up", "payload_bytes_up_per_s", "{:,.0f}"),
    ("payload bytes/s down", "payload_bytes_down_per_s", "{:,.0f}"),
    ("bytes on the wire per message", "bytes_per_message", "{:,.0f}"),
    ("latency mean (ms)", "latency_ms_mean", "{:,.1f}"),
    ("latency p50 (ms)", "latency_ms_p50", "{:,.1f}"),
    ("latency p95 (ms)", "latency_ms_p95", "{:,.1f}"),
    ("latency p99 (ms)", "latency_ms_p99", "{:,.1f}"),
    ("latency max (ms)", "latency_ms_max", "{:,.1f}"),
    ("receipt latency p50 (ms)", "receipt_latency_ms_p50", "{:,.1f}"),
    ("open connections mean", "open_connections_mean", "{:,.0f}"),
    ("open connections peak", "open_connections_peak", "{:,.0f}"),
    ("held requests mean", "held_requests_mean", "{:,.1f}"),
    ("server CPU utilisation", "server_cpu_utilization", "{:.1%}"),
    ("memory, thread/conn (MiB)", "memory_thread_per_connection_mb", "{:,.0f}"),
    ("memory, event loop (MiB)", "memory_event_loop_mb", "{:,.1f}"),
    ("messages sent", "messages_sent", "{:,.0f}"),
    ("messages delivered", "messages_delivered", "{:,.0f}"),
]


def _fmt(template: str, v: Any) -> str:
    from chatcore.tables import fmt

    return fmt(template, v)


def text_table(cmp) -> str:
    s = cmp.summary.set_index("transport")
    names = list(s.index)
    width = max(len(r[0]) for r in ROWS)
    colw = max(14, *(len(n) + 2 for n in names))
    sc = cmp.scenario
    head = (f"{sc.clients:,} clients, {sc.msg_rate_per_min:g} msg/min each, group {sc.group_size}, "
            f"rtt {sc.rtt_ms:g} ms, poll every {sc.poll_interval_s:g} s, "
            f"window {sc.warmup_s:g}-{sc.duration_s:g} s simulated, seed {sc.seed}")
    lines = [head, "", "".ljust(width) + "".join(n.rjust(colw) for n in names)]
    for label, key, fmt in ROWS:
        if key not in s.columns:
            continue
        lines.append(label.ljust(width) + "".join(_fmt(fmt, s.at[n, key]).rjust(colw) for n in names))
    return "\n".join(lines)


def _replication_rows(cmps):
    import pandas as pd

    frames = []
    for cmp in cmps:
        f = cmp.summary
        f.insert(0, "seed", cmp.scenario.seed)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def replications_table(scenario, cmps) -> str:
    """Mean +- 95 % half-width per metric over the replications."""
    import sim

    ci = sim.confidence_table(_replication_rows(cmps))
    names = list(scenario.transports)
    width = max(len(r[0]) for r in ROWS)
    colw = max(24, *(len(n) + 2 for n in names))
    lines = [text_table(cmps[0]).splitlines()[0].replace(f"seed {scenario.seed}",
             f"{len(cmps)} replications from seed {scenario.seed}, mean +- 95% CI"), "",
             "".ljust(width) + "".join(n.rjust(colw) for n in names)]
    table = ci.set_index(["metric", "transport"])
    for label, key, fmt in ROWS:
        if (key, names[0]) not in table.index:
            continue
        cells = []
        for n in names:
            m, h = table.at[(key, n), "mean"], table.at[(key, n), "ci95_half_width"]
            cells.append(f"{_fmt(fmt, m)} +- {_fmt(fmt, h)}".rjust(colw))
        lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)


def replications_json(scenario, cmps, warnings: list[str] | None = None) -> str:
    """The contract's shape, with replication means, plus ``ci95_half_width`` and ``replications``."""
    import sim
    from chatcore.stats import LATENCY_KEYS

    ci = sim.confidence_table(_replication_rows(cmps))
    results = []
    for t in scenario.transports:
        g = ci[ci.transport == t].set_index("metric")
        res: dict[str, Any] = {"transport": t, "replications": len(cmps)}
        half: dict[str, Any] = {}
        for metric, row in g.iterrows():
            value = None if row["mean"] != row["mean"] else float(row["mean"])
            hw = None if row["ci95_half_width"] != row["ci95_half_width"] else float(row["ci95_half_width"])
            for nested in ("latency_ms", "receipt_latency_ms"):
                if metric.startswith(nested + "_") and metric[len(nested) + 1:] in LATENCY_KEYS:
                    res.setdefault(nested, {})[metric[len(nested) + 1:]] = value
                    half.setdefault(nested, {})[metric[len(nested) + 1:]] = hw
                    break
            else:
                res[metric] = value
                half[metric] = hw
        res["ci95_half_width"] = half
        results.append(res)
    doc: dict[str, Any] = {"scenario": scenario.to_dict(), "results": results,
                           "seeds": [c.scenario.seed for c in cmps]}
    if warnings:
        doc["warnings"] = list(warnings)
    return json.dumps(doc, indent=2, allow_nan=False)


def write_replications(cmps, out: Path) -> list[Path]:
    import sim

    rows = _replication_rows(cmps)
    p1, p2 = out / "replications.csv", out / "confidence.csv"
    rows.to_csv(p1, index=False)
    sim.confidence_table(rows).to_csv(p2, index=False)
    return [p1, p2]


def json_text(cmp, warnings: list[str] | None = None) -> str:
    """The comparison as JSON; *warnings* (window traps, ``sim.window_warnings``) only when there are some."""
    doc = cmp.to_json()
    if warnings:
        doc["warnings"] = list(warnings)
    return json.dumps(doc, indent=2, allow_nan=False)


def check_out_dir(out: Path, given: str) -> None:
    """Fail before any simulation runs if --out cannot be written."""
    import os

    from .errors import UsageError

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out={given}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out={given}: cannot create ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out={given}: not writable")


def write_outputs(cmp, out: Path) -> list[Path]:
    """CSV tables and PNG figures into *out*; returns the files written."""
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("summary", "messages", "receipts", "classes", "bins"):
        p = out / f"{name}.csv"
        getattr(cmp, name).to_csv(p, index=False)
        written.append(p)
    p = out / "result.json"
    p.write_text(json_text(cmp), encoding="utf-8")
    written.append(p)
    written += plots.save_figures(cmp, out)
    return written
