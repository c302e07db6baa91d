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

from chatcore.stats import LATENCY_KEYS, latency_stats, step_profile, traffic_summary
from chatcore.tables import ALL_COUNTERS, class_columns, class_rows, fanout, fully_delivered

from .params import Scenario
from .recorder import CPU_BUSY, CPU_N, CPU_WAIT, OVH_DOWN, OVH_UP, PAY_DOWN, PAY_UP, UP, Recorder
from .workload import Workload



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
    classes = pd.DataFrame(class_rows(transport, rec.classes, window, cpu=True), columns=class_columns(cpu=True))

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
    tot = np.zeros(ALL_COUNTERS)
    for c in rec.classes.values():
        tot += np.asarray(c, dtype=float)
    in_win = messages["in_window"].to_numpy()
    lat = messages["latency_ms"].to_numpy()[in_win]
    n_sent = int(((wl.send_time >= w0) & (wl.send_time <= w1)).sum())
    fully = fully_delivered(wl.send_time, fanout(wl.conversation, wl.members), messages["msg"].to_numpy()[in_win],
                            w0, w1)
    r_win = receipts["in_window"].to_numpy()
    summary: dict[str, Any] = {
        "transport": transport,
        **traffic_summary(requests_up=tot[UP], overhead_up=tot[OVH_UP], payload_up=tot[PAY_UP],
                          overhead_down=tot[OVH_DOWN], payload_down=tot[PAY_DOWN], window_s=window,
                          messages_sent=n_sent, poll_responses=rec.poll_responses,
                          empty_responses=rec.empty_responses),
        "latency_ms": latency_stats(lat),
        "receipt_latency_ms": latency_stats(receipts["latency_ms"].to_numpy()[r_win]),
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
