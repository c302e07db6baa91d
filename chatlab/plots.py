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


def bandwidth_at_scale(rows, links_gbit: tuple[float, ...] = (1.0, 10.0), title: str | None = None) -> Figure:
    """Bandwidth (both directions, headers and framing included) against the number of online
    clients, one line per transport; *rows* has ``transport``, ``clients`` and ``mbit_per_s``.
    Dotted lines: network links of *links_gbit*."""
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.subplots()
    for t, g in rows.groupby("transport", sort=False):
        ax.plot(g["clients"], g["mbit_per_s"], "o-", color=COLORS.get(t), label=LABELS.get(t, t))
    for gbit in links_gbit:
        ax.axhline(gbit * 1000, color="grey", ls=":", lw=0.9)
        ax.text(rows["clients"].min(), gbit * 1000, f" {gbit:g} Gbit/s link", va="bottom", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("online clients")
    ax.set_ylabel("bandwidth, both directions (Mbit/s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "Bandwidth grows linearly with the clients")
    return fig


def queueing_curve(rows, curve=None, title: str | None = None) -> Figure:
    """Mean time in the CPU queue (wait + service) against utilisation: *rows* has
    ``utilization`` and ``simulated_ms`` (one row per simulated load); *curve* has
    ``utilization`` and ``analytic_ms`` on a fine grid (default: *rows*' own ``analytic_ms``)."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    curve = rows if curve is None else curve
    ax.plot(curve["utilization"] * 100, curve["analytic_ms"], "k--", lw=1, label="M/M/1: 1 / (mu - lambda)")
    ax.plot(rows["utilization"] * 100, rows["simulated_ms"], "o", color=COLORS["websocket"], label="simulated")
    ax.set_xlabel("CPU utilisation (%)")
    ax.set_ylabel("mean time at the CPU, wait + service (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or "Response time against utilisation")
    return fig


def latency_vs_load(rows, title: str | None = None) -> Figure:
    """End-to-end latency percentiles against server CPU utilisation: *rows* has
    ``server_cpu_utilization``, ``latency_ms_p50``, ``latency_ms_p99`` (one row per load)."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    u = rows["server_cpu_utilization"] * 100
    c = COLORS["websocket"]
    ax.plot(u, rows["latency_ms_p50"], "o-", color=c, label="p50")
    ax.plot(u, rows["latency_ms_p99"], "s--", color=c, label="p99")
    ax.set_xlabel("server CPU utilisation (%)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or "Latency against load")
    return fig


def sim_vs_real(rows, title: str | None = None) -> Figure:
    """Measured against simulated, as a relative error per metric and transport: *rows* has
    ``transport``, ``metric``, ``relative_error`` and ``tolerance`` (text such as "3%", as
    ``chatlab validate`` writes it; "-" for none). Grey band: the tolerance."""
    import math

    rows = rows[rows["relative_error"].notna()]
    fig = Figure(figsize=(8, 0.45 * len(rows) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))
    colors = [COLORS.get(t, "grey") for t in rows["transport"]]
    ax.barh(y, rows["relative_error"] * 100, color=colors, zorder=2)
    for i, tol in enumerate(rows["tolerance"]):
        if isinstance(tol, str) and tol.endswith("%"):
            t = float(tol[:-1])
            ax.fill_betweenx([i - 0.45, i + 0.45], -t, t, color="grey", alpha=0.3, lw=0, zorder=1)
    ax.set_yticks(y, [f"{LABELS.get(t, t)}: {m}" for t, m in zip(rows["transport"], rows["metric"])])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    lim = max(10.0, float(np.nanmax(np.abs(rows["relative_error"].to_numpy(dtype=float)))) * 110)
    ax.set_xlim(-lim, lim if math.isfinite(lim) else 100)
    ax.set_xlabel("measured vs simulated (% difference); grey: chatlab validate's tolerance")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title or "The real server against the model")
    return fig
