"""Figures for a comparison, used by the CLI (``--out``) and the notebooks.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state), so they work headless, never
leak open figures and never display twice. A notebook shows a returned figure as a picture
once its first cell runs ``%matplotlib inline`` (that registers IPython's PNG formatter for
``Figure``); without it Jupyter prints ``<Figure size ...>`` (tests/test_notebooks.py checks).
Every helper takes an optional ``title``: the notebooks use it to say what to notice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

COLORS = {"short_polling": "#d62728", "long_polling": "#ff7f0e", "websocket": "#1f77b4"}
LABELS = {"short_polling": "short polling", "long_polling": "long polling", "websocket": "WebSocket"}


def latency_cdf(cmp, log_x: bool = True, title: str | None = None) -> Figure:
    """Empirical CDF of end-to-end message latency, one line per transport."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for t, r in cmp.runs.items():
        m = r.messages
        lat = np.sort(m.loc[m["in_window"], "latency_ms"].to_numpy())
        if lat.size:
            ax.step(lat, np.arange(1, lat.size + 1) / lat.size, where="post",
                    color=COLORS.get(t), label=f"{LABELS.get(t, t)} (p50 {np.median(lat):,.0f} ms)")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (ms), send to receive")
    ax.set_ylabel("fraction of messages")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "Message latency distribution")
    return fig


def load_bars(cmp, title: str | None = None) -> Figure:
    """Requests/s, bandwidth (overhead vs payload) and held connections side by side."""
    s = cmp.summary.set_index("transport")
    names = list(s.index)
    x = np.arange(len(names))
    colors = [COLORS.get(n, "grey") for n in names]
    labels = [LABELS.get(n, n) for n in names]
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.bar(x, s["requests_per_s"], color=colors)
    ax1.set_title("requests/s (client->server)")
    ax1.set_ylabel("requests/s")
    overhead = (s["overhead_bytes_up_per_s"] + s["overhead_bytes_down_per_s"]) * 8 / 1e6
    payload = (s["payload_bytes_up_per_s"] + s["payload_bytes_down_per_s"]) * 8 / 1e6
    ax2.bar(x, payload, color=colors, alpha=0.45, label="payload (JSON bodies)")
    ax2.bar(x, overhead, bottom=payload, color=colors, hatch="//", edgecolor="white",
            label="overhead (headers, framing)")
    ax2.set_title("bandwidth, both directions (Mbit/s)")
    ax2.set_ylabel("Mbit/s")
    ax2.legend(fontsize=8)
    w = 0.38
    ax3.bar(x - w / 2, s["open_connections_mean"], w, color=colors, label="open connections")
    ax3.bar(x + w / 2, s["held_requests_mean"], w, color=colors, alpha=0.45, label="held requests")
    ax3.set_title("connections at the server (mean)")
    ax3.set_ylabel("connections or requests")
    ax3.legend(fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(x, labels)
        ax.grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def timeline(cmp, column: str = "requests_up", ylabel: str = "requests per bin", title: str | None = None) -> Figure:
    """A per-bin column over simulated time, one line per transport."""
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.subplots()
    for t, r in cmp.runs.items():
        ax.plot(r.bins["t_s"], r.bins[column], color=COLORS.get(t), label=LABELS.get(t, t))
    ax.axvspan(0, cmp.scenario.warmup_s, color="grey", alpha=0.15, label="warm-up")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


def save_figures(cmp, out: Path) -> list[Path]:
    paths = []
    for name, fig in (("latency_cdf.png", latency_cdf(cmp)), ("load.png", load_bars(cmp))):
        p = out / name
        fig.savefig(p, dpi=110)
        paths.append(p)
    return paths


def crash_reconnects(results, title: str | None = None) -> Figure:
    """Connected clients and connect attempts over time, one line per transport x policy."""
    fig = Figure(figsize=(10, 6), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for r in results:
        label = f"{LABELS.get(r.transport, r.transport)}, {r.reconnect_policy}"
        b = r.bins
        line, = ax1.plot(b["t_s"], b["connected_clients"], label=label)
        ax2.plot(b["t_s"], b["connect_attempts_per_s"], color=line.get_color(), label=label, lw=0.9)
    sc = results[0].scenario
    for ax in (ax1, ax2):
        ax.axvline(sc.crash_at_s, color="black", ls="--", lw=0.8)
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("connected clients")
    ax2.set_ylabel("connect attempts/s")
    ax2.set_xlabel("simulated time (s); dashed: the fault")
    ax1.legend(fontsize=8)
    ax1.set_title(title or "Reconnect storm")
    return fig


def crash_backlog(results, title: str | None = None) -> Figure:
    """Messages sent and not yet received (and, under a delivery outage, the events waiting for
    the delivery service), and the bytes that resumes after the fault replayed."""
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    outage = False
    for r in results:
        label = f"{LABELS.get(r.transport, r.transport)}, {r.reconnect_policy}"
        line, = ax1.plot(r.bins["t_s"], r.bins["messages_in_flight"], label=label)
        if r.bins["queue_backlog"].any():
            outage = True
            ax1.plot(r.bins["t_s"], r.bins["queue_backlog"], color=line.get_color(), ls=":", lw=0.9)
        ax2.plot(r.bins["t_s"], r.bins["replay_bytes"].cumsum() / 1e3, label=label)
    sc = results[0].scenario
    ax1.set_title("messages on their way (sent, not yet received, not lost)"
                  + ("\ndotted: events (messages and receipts) waiting for the delivery service" if outage else ""),
                  fontsize=10)
    ax1.set_ylabel("(message, recipient) pairs")
    # Only resumes after a reconnect count: what a first connection receives is ordinary delivery.
    ax2.set_title("bytes replayed by resumes after reconnects (cumulative;\nfirst connections not counted)",
                  fontsize=10)
    ax2.set_ylabel("kB")
    ax1.axvline(sc.duration_s, color="grey", ls=":", lw=0.8)
    ax1.text(sc.duration_s, ax1.get_ylim()[1], " sends stop", color="grey", va="top", fontsize=8)
    for ax in (ax1, ax2):
        ax.axvline(sc.crash_at_s, color="black", ls="--", lw=0.8)
        ax.set_xlabel("simulated time (s); dashed: the fault")
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def fanout_cost(rows, title: str | None = None) -> Figure:
    """What one message costs as its group grows: *rows* has ``group_size``,
    ``deliveries_per_message``, ``kb_down_per_message`` and ``cpu_ms_per_message`` (simulated),
    and ``analytic_cpu_ms_per_message`` (a closed form) if known."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    g = rows["group_size"]
    c = COLORS["websocket"]
    ax1.plot(g, rows["deliveries_per_message"], "o-", color=c, label="simulated")
    ax1.plot(g, g - 1, "k--", lw=0.8, label="group size - 1")
    ax1.set_ylabel("pushes per message sent")
    ax2.plot(g, rows["kb_down_per_message"], "o-", color=c)
    ax2.set_ylabel("kB pushed per message sent")
    ax3.plot(g, rows["cpu_ms_per_message"], "o-", color=c, label="simulated")
    if "analytic_cpu_ms_per_message" in rows:
        ax3.plot(g, rows["analytic_cpu_ms_per_message"], "k--", lw=0.8, label="closed form")
    ax3.set_ylabel("server CPU per message sent (ms)")
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("group size (members)")
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    ax3.legend(fontsize=8)
    fig.suptitle(title or "Fan-out: the cost of one message grows with its group")
    return fig
