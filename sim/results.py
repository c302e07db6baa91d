"""Tidy results: one table per grain, and one summary row per transport.

Tables (pandas DataFrames, every row carries its ``transport``):

* ``messages``: one row per (message, recipient) delivery;
* ``receipts``: one row per receipt that reached the message's sender;
* ``classes``: one row per request/frame class (``poll``, ``send``, ``ws_event`` ...);
* ``bins``: one row per ``bin_s`` of simulated time (the whole run, warm-up included).

Every rate is per simulated second inside the window ``[warmup_s, duration_s]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .params import Scenario
from .recorder import CPU_BUSY, CPU_N, CPU_WAIT, DOWN, OVH_DOWN, OVH_UP, PAY_DOWN, PAY_UP, UP, Recorder
from .workload import Workload

LATENCY_KEYS = ("mean", "p50", "p95", "p99", "max")


def step_profile(starts: np.ndarray, ends: np.ndarray, t0: float, t1: float,
                 edges: np.ndarray | None = None) -> tuple[float, int, np.ndarray | None]:
    """Time-average and peak of the number of open intervals ``[start, end)`` over
    ``[t0, t1]``, and its average in each bin between consecutive *edges*."""
    starts = np.asarray(starts, dtype=float)
    ends = np.asarray(ends, dtype=float)
    times = np.concatenate([starts, ends])
    deltas = np.concatenate([np.ones(starts.size, dtype=np.int64), -np.ones(ends.size, dtype=np.int64)])
    order = np.lexsort((deltas, times))  # at a tie, a close counts before an open
    times, level = times[order], np.cumsum(deltas[order])
    # integral F(t) = area under the step function up to t
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))]) if times.size else np.zeros(0)

    def F(t: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=float))
        if times.size == 0:
            return np.zeros_like(t)
        k = np.searchsorted(times, t, side="right") - 1
        before = k < 0
        kk = np.clip(k, 0, None)
        out = area[kk] + level[kk] * (t - times[kk])
        out[before] = 0.0
        return out

    span = t1 - t0
    mean = float((F(np.array([t1])) - F(np.array([t0])))[0] / span) if span > 0 else 0.0
    if times.size:
        in_win = (times >= t0) & (times <= t1)
        k0 = np.searchsorted(times, t0, side="right") - 1
        at_start = int(level[k0]) if k0 >= 0 else 0
        peak = max(at_start, int(level[in_win].max()) if in_win.any() else 0)
    else:
        peak = 0
    per_bin = None
    if edges is not None:
        fe = F(edges)
        per_bin = np.diff(fe) / np.diff(edges)
    return mean, peak, per_bin


def _latency_stats(ms: np.ndarray) -> dict[str, float | None]:
    if ms.size == 0:
        return {k: None for k in LATENCY_KEYS}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(ms.max())}


@dataclass
class RunResult:
    """Everything one transport's run produced."""

    transport: str
    scenario: Scenario
    summary: dict[str, Any]
    messages: pd.DataFrame
    receipts: pd.DataFrame
    classes: pd.DataFrame
    bins: pd.DataFrame
    cpu_samples: pd.DataFrame | None = field(default=None, repr=False)


def build(transport: str, sc: Scenario, wl: Workload, rec: Recorder) -> RunResult:
    w0, w1 = sc.warmup_s, sc.duration_s
    window = w1 - w0

    # --- messages ---
    msg = np.asarray(rec.d_msg, dtype=np.int64)
    sent_at = wl.send_time[msg] if msg.size else np.zeros(0)
    received = np.asarray(rec.d_received, dtype=float)
    messages = pd.DataFrame({
        "transport": transport,
        "msg": msg,
        "sender": wl.sender[msg] if msg.size else np.zeros(0, dtype=np.int64),
        "recipient": np.asarray(rec.d_recipient, dtype=np.int64),
        "conversation": wl.conversation[msg] if msg.size else np.zeros(0, dtype=np.int64),
        "sent_at": sent_at,
        "available_at": np.asarray(rec.d_available, dtype=float),
        "received_at": received,
        "latency_ms": (received - sent_at) * 1000.0,
        "in_window": (sent_at >= w0) & (sent_at <= w1),
    }).sort_values(["msg", "recipient"], kind="stable").reset_index(drop=True)

    r_msg = np.asarray(rec.r_msg, dtype=np.int64)
    r_sent = np.asarray(rec.r_sent, dtype=float)
    r_recv = np.asarray(rec.r_received, dtype=float)
    receipts = pd.DataFrame({
        "transport": transport, "msg": r_msg, "status": pd.Series(rec.r_status, dtype="string"),
        "sent_at": r_sent, "received_at": r_recv, "latency_ms": (r_recv - r_sent) * 1000.0,
        "in_window": (r_sent >= w0) & (r_sent <= w1),
    }).sort_values(["msg", "status", "sent_at"], kind="stable").reset_index(drop=True)

    # --- classes ---
    rows = []
    for name in sorted(rec.classes):
        c = rec.classes[name]
        rows.append({
            "transport": transport, "class": name,
            "messages_up": int(c[UP]), "messages_down": int(c[DOWN]),
            "overhead_bytes_up": int(c[OVH_UP]), "payload_bytes_up": int(c[PAY_UP]),
            "overhead_bytes_down": int(c[OVH_DOWN]), "payload_bytes_down": int(c[PAY_DOWN]),
            "up_per_s": c[UP] / window, "bytes_per_s": (c[OVH_UP] + c[PAY_UP] + c[OVH_DOWN] + c[PAY_DOWN]) / window,
            "cpu_ops": int(c[CPU_N]), "cpu_busy_s": float(c[CPU_BUSY]),
            "cpu_wait_ms_mean": float(c[CPU_WAIT] / c[CPU_N] * 1000.0) if c[CPU_N] else 0.0,
        })
    classes = pd.DataFrame(rows, columns=[
        "transport", "class", "messages_up", "messages_down", "overhead_bytes_up", "payload_bytes_up",
        "overhead_bytes_down", "payload_bytes_down", "up_per_s", "bytes_per_s", "cpu_ops", "cpu_busy_s",
        "cpu_wait_ms_mean"])

    # --- open connections and held requests ---
    nb = rec.n_bins
    edges = np.arange(nb + 1) * sc.bin_s
    conn_mean, conn_peak, conn_bins = step_profile(np.asarray(rec.conn_start), np.asarray(rec.conn_end),
                                                   w0, w1, edges)
    held_mean, held_peak, held_bins = step_profile(np.asarray(rec.held_start), np.asarray(rec.held_end),
                                                   w0, w1, edges)
    bins = pd.DataFrame({
        "transport": transport,
        "t_s": edges[:-1],
        "in_window": (edges[:-1] >= w0) & (edges[1:] <= w1 + 1e-9),
        "requests_up": np.asarray(rec.b_up[:nb]),
        "overhead_bytes_up": np.asarray(rec.b_ovh_up[:nb]),
        "payload_bytes_up": np.asarray(rec.b_pay_up[:nb]),
        "overhead_bytes_down": np.asarray(rec.b_ovh_down[:nb]),
        "payload_bytes_down": np.asarray(rec.b_pay_down[:nb]),
        "deliveries": np.asarray(rec.b_deliveries[:nb]),
        "cpu_utilization": np.asarray(rec.b_cpu[:nb]) / (sc.server_cores * sc.bin_s),
        "open_connections": conn_bins,
        "held_requests": held_bins,
    })

    # --- summary ---
    tot = np.zeros(9)
    for c in rec.classes.values():
        tot += np.asarray(c, dtype=float)
    in_win = messages["in_window"].to_numpy()
    lat = messages["latency_ms"].to_numpy()[in_win]
    n_sent = int(((wl.send_time >= w0) & (wl.send_time <= w1)).sum())
    fanout = np.array([len(wl.members[c]) - 1 for c in wl.conversation], dtype=np.int64)
    expected = fanout[(wl.send_time >= w0) & (wl.send_time <= w1)]
    msg_sorted = messages["msg"].to_numpy()
    got = np.bincount(msg_sorted[in_win], minlength=wl.n_messages)
    window_ids = np.flatnonzero((wl.send_time >= w0) & (wl.send_time <= w1))
    fully = int((got[window_ids] >= expected).sum())
    r_win = receipts["in_window"].to_numpy()
    total_bytes = tot[OVH_UP] + tot[PAY_UP] + tot[OVH_DOWN] + tot[PAY_DOWN]
    summary: dict[str, Any] = {
        "transport": transport,
        "requests_per_s": tot[UP] / window,
        "empty_response_ratio": (rec.empty_responses / rec.poll_responses) if rec.poll_responses else 0.0,
        "overhead_bytes_up_per_s": tot[OVH_UP] / window,
        "overhead_bytes_down_per_s": tot[OVH_DOWN] / window,
        "payload_bytes_up_per_s": tot[PAY_UP] / window,
        "payload_bytes_down_per_s": tot[PAY_DOWN] / window,
        "bytes_per_message": total_bytes / n_sent if n_sent else None,
        "latency_ms": _latency_stats(lat),
        "receipt_latency_ms": _latency_stats(receipts["latency_ms"].to_numpy()[r_win]),
        "open_connections_mean": conn_mean,
        "open_connections_peak": conn_peak,
        "held_requests_mean": held_mean,
        "held_requests_peak": held_peak,
        "server_cpu_utilization": tot[CPU_BUSY] / (sc.server_cores * window),
        "cpu_wait_ms_mean": tot[CPU_WAIT] / tot[CPU_N] * 1000.0 if tot[CPU_N] else 0.0,
        "memory_thread_per_connection_mb": conn_peak * sc.thread_stack_kb / 1024.0,
        "memory_event_loop_mb": conn_peak * sc.event_loop_conn_kb / 1024.0,
        "messages_sent": n_sent,
        "messages_delivered": fully,
        "deliveries": int(in_win.sum()),
    }
    cpu = None
    if rec.keep_cpu_samples:
        cpu = pd.DataFrame(rec.cpu_samples, columns=["op", "arrival", "start", "end"])
    return RunResult(transport, sc, summary, messages, receipts, classes, bins, cpu)
