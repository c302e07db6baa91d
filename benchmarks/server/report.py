"""Tables of ``make bench-server``: the side-by-side summary, the details per server and
level, long polling and memory; printed as aligned text and written as Markdown into
docs/PERFORMANCE.md between marker comments (replaced on every run).
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from .orchestrate import OTHERS_LIMIT
from .targets import TARGETS

BEGIN = "<!-- bench-server:begin (written by `make bench-server`; edits here are replaced) -->"
END = "<!-- bench-server:end -->"
SECTION = "## Server throughput (make bench-server)"
#: The load generator counts as a possible bottleneck above these (the footnote says so).
LOADGEN_CPU_LIMIT = 0.9
LOADGEN_LAG_LIMIT_MS = 10.0

Table = tuple[list[str], list[list[str]]]


def _n(x: float | None, fmt: str = ",.0f") -> str:
    return "–" if x is None else format(x, fmt)


def _ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def _lat(r: dict[str, Any], key: str) -> str:
    """A latency quantile; "> drain" when that quantile of the window's sends never arrived."""
    lat = r["latency_ms"]
    if lat[key] is None:
        return "> drain" if lat["n"] else "–"
    return _ms(lat[key])


def _p99(r: dict[str, Any]) -> str:
    return _lat(r, "p99")


def _flags(r: dict[str, Any]) -> str:
    """† the load generator may have limited the run; ‡ other processes took a share of a pinned CPU."""
    lg = r.get("loadgen") or {}
    others = r.get("others_on_cpu") or {}
    flags = ""
    if (lg.get("cpu_utilization") or 0) > LOADGEN_CPU_LIMIT or (lg.get("loop_lag_p99_ms") or 0) > LOADGEN_LAG_LIMIT_MS:
        flags += "†"
    if any((v or 0) > OTHERS_LIMIT for v in others.values()):
        flags += "‡"
    return " " + flags if flags else ""


def _label(key: str) -> str:
    return TARGETS[key].label


def summary_table(rows: list[dict[str, Any]]) -> Table:
    """Rows = offered level; per server delivered msgs/s and p99 ms; then the delivered ratios
    ours (fakeredis) / Socket.IO and ours / relay."""
    servers = [k for k in TARGETS if any(r["server"] == k for r in rows)]
    levels = sorted({r["rate"] for r in rows})
    by = {(r["server"], r["rate"]): r for r in rows}
    head = ["offered msgs/s"]
    for k in servers:
        head += [f"{SHORT[k]} delivered/s", f"{SHORT[k]} p99 ms"]
    ratios = [(a, b) for a, b in (("ours", "socketio"), ("ours", "relay")) if a in servers and b in servers]
    head += [f"{SHORT[a]}/{SHORT[b]}" for a, b in ratios]
    body = []
    for lv in levels:
        line = [f"{lv:,}"]
        for k in servers:
            r = by.get((k, lv))
            if r is None:
                line += ["–", "–"]
            elif "skipped" in r:
                line += ["skipped", "–"]
            elif "error" in r:
                line += ["failed", "–"]
            else:
                line += [_n(r["delivered_per_s"]) + _flags(r), _p99(r)]
        for a, b in ratios:
            ra, rb = by.get((a, lv)), by.get((b, lv))
            ok = all(x is not None and x.get("delivered_per_s") for x in (ra, rb))
            line.append(f"{ra['delivered_per_s'] / rb['delivered_per_s']:.2f}" if ok else "–")  # type: ignore[index]
        body.append(line)
    return head, body


SHORT = {"ours": "ours", "ours_redis": "ours-Redis", "socketio": "Socket.IO", "relay": "relay"}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def detail_table(rows: list[dict[str, Any]]) -> Table:
    """One row per level run; skipped and failed levels are left to :func:`not_run`."""
    head = ["server", "offered/s", "acked/s", "delivered/s", "p50 ms", "p99 ms", "max ms", "refused", "lost",
            "unanswered", "server CPU", "CPU ms/msg", "RSS MB", "loadgen CPU", "loadgen lag p99 ms",
            "others on CPU 0 / 1"]
    body = []
    for r in rows:
        if "skipped" in r or "error" in r:
            continue
        lat, lg = r["latency_ms"], r["loadgen"]
        others = r.get("others_on_cpu") or {}
        refused = ", ".join(f"{k} {v}" for k, v in sorted((r.get("refused") or {}).items())) or "0"
        body.append([SHORT[r["server"]], _n(r["offered_per_s"]) + _flags(r), _n(r["acked_per_s"]),
                     _n(r["delivered_per_s"]), _lat(r, "p50"), _p99(r), _ms(lat["max"]), refused, f"{r['lost']:,}",
                     f"{r['unanswered']:,}", _pct(r["server_cpu_utilization"]) + (
                         f" + Redis {_pct(r['redis_cpu_utilization'])}" if r.get("redis_cpu_utilization") is not None
                         else ""),
                     _n(r["server_cpu_ms_per_delivered"], ".3f"), _n((r["server_rss_bytes"] or 0) / 1e6, ",.0f"),
                     _pct(lg["cpu_utilization"]), _ms(lg["loop_lag_p99_ms"]),
                     f"{_pct(others.get('server_cpu'))} / {_pct(others.get('loadgen_cpu'))}"])
    return head, body


def not_run(rows: list[dict[str, Any]]) -> list[str]:
    """One line per server whose levels were skipped or failed."""
    out = []
    for k in TARGETS:
        mine = [r for r in rows if r["server"] == k]
        skipped = [r for r in mine if "skipped" in r]
        if skipped:
            rates = ", ".join(f"{r['rate']:,}" for r in skipped)
            out.append(f"{SHORT[k]}: {rates} msgs/s skipped ({skipped[0]['skipped']})")
        for r in mine:
            if "error" in r:
                out.append(f"{SHORT[k]}: {r['rate']:,} msgs/s failed: {r['error'][:300]}")
            elif "skipped" not in r and r.get("server_alive_after") is False:
                out.append(f"{SHORT[k]}: {r['rate']:,} msgs/s: the server process exited during the run")
    return out


def memory_table(rows: list[dict[str, Any]]) -> Table:
    head = ["server", "transport", "connections", "RSS before MB", "RSS after MB", "KiB per connection"]
    body = []
    for m in rows:
        transport = "WebSocket" if m["protocol"].endswith("ws") else "long polling"
        if "error" in m:
            body.append([SHORT[m["server"]], transport, f"{m['connections']:,}", f"failed: {m['error'][:120]}", "", ""])
            continue
        conn = f"{m['connected']:,}" + ("" if m["connected"] == m["connections"] else f" of {m['connections']:,}")
        body.append([SHORT[m["server"]], transport, conn, _n(m["rss_before_bytes"] / 1e6), _n(m["rss_after_bytes"] / 1e6),
                     _n((m["bytes_per_connection"] or 0) / 1024, ".1f")])
    return head, body


def text(t: Table) -> str:
    head, body = t
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for line in body:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    return "\n".join(out)


def markdown(t: Table) -> str:
    head, body = t
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in body]
    return "\n".join(out)


def _footnotes(report: dict[str, Any]) -> list[str]:
    cfg = report["config"]
    return [f"ours = the reference server on embedded fakeredis, ours-Redis = on the real Redis, Socket.IO = "
            "Socket.IO 4.8 on Node.js (in memory), relay = the bare aiohttp relay (benchmarks/server/relay.py); "
            "ratios are delivered msgs/s of ours over the other at the same offered level.",
            f"skipped: the server had collapsed at a lower level (delivered < {cfg['collapse_fraction']:.0%} "
            "of the most it delivered at a lower level, or of the offered rate at the first), so the higher "
            "ones were not run. Refusing sends with 429 / `overloaded` while delivering near the peak is "
            "saturation, not collapse: those levels run.",
            "> drain: more than 1 % of the window's sends were still undelivered when the drain "
            f"ended (at most {cfg['drain_s']:g} s after the window).",
            f"†: the load generator may have limited the run (its CPU > {LOADGEN_CPU_LIMIT:.0%} of a core, "
            f"or its event loop p99 late by > {LOADGEN_LAG_LIMIT_MS:g} ms).",
            f"‡: other processes on this shared machine took > {OTHERS_LIMIT:.0%} of the server's or the "
            "load generator's CPU during the window (column \"others on CPU 0 / 1\").",
            ]


def disturbance_note(rows: list[dict[str, Any]]) -> str | None:
    """A warning when other processes took a share of the pinned CPUs in some windows."""
    measured = [r for r in rows if r.get("others_on_cpu")]
    hit = [r for r in measured if any((v or 0) > OTHERS_LIMIT for v in r["others_on_cpu"].values())]
    if not hit:
        return None

    def median(key: str) -> float:
        return statistics.median(r["others_on_cpu"][key] or 0.0 for r in measured)

    return (f"{len(hit)} of {len(measured)} measured windows were disturbed: other processes used a median "
            f"{median('server_cpu'):.0%} of the server's CPU and {median('loadgen_cpu'):.0%} of the load "
            "generator's. A server that needs more than what they left delivers less than it would alone, "
            "and every latency includes waits for a CPU: compare within the run, or rerun on a quiet machine.")


def render(report: dict[str, Any], md: bool) -> str:
    """The whole report as text (*md* False) or Markdown (*md* True)."""
    cfg, env, res = report["config"], report["environment"], report["results"]
    fmt = markdown if md else text
    p: list[str] = []
    machine = (f"{env['nproc']} CPUs ({env['cpu_model']}); Python {env['python']}, aiohttp {env['aiohttp']}, "
               f"fakeredis {env['fakeredis']}, redis-server {env.get('redis-server') or 'n/a'}, Node {env['node']}, "
               f"socket.io {env['socket.io']} (socket.io-client {env['socket.io-client']}, ws {env['ws']})")
    if md:
        p += [f"Command: `{report['command']}`, started {report['started_at']}, {report['results']['wall_s']:.0f} s "
              f"in all. Machine: {machine}. Raw results: `data/bench-server.json`.", ""]
    else:
        p += [f"{report['command']}   started {report['started_at']}, {report['results']['wall_s']:.0f} s",
              machine, ""]
    warning = disturbance_note(res["websocket"] + res["longpoll"])
    if warning:
        p += [("**" + warning + "**") if md else warning, ""]
    ws = res["websocket"]
    if ws:
        title = (f"WebSocket, {cfg['clients']:,} clients, 1:1 Poisson sends of {cfg['payload_bytes']} bytes; "
                 f"warm-up {cfg['warmup_s']:g} s, measured {cfg['measure_s']:g} s, drain <= {cfg['drain_s']:g} s; "
                 "server on CPU 0, load generator on CPU 1")
        p += [f"### {title}" if md else title, "", fmt(summary_table(ws)), ""]
        p += ["Details (rates: per second of the measured window; refused, lost, unanswered: the window's sends):",
              "", fmt(detail_table(ws)), ""]
        p += [("- " if md else "  ") + x for x in not_run(ws)] + ([""] if not_run(ws) else [])
    lp = res["longpoll"]
    if lp:
        title = (f"Long polling, {cfg['longpoll_clients']:,} clients (ours: GET /api/longpoll + POST /api/messages; "
                 "Socket.IO: engine.io polling transport)")
        p += [f"### {title}" if md else title, "", fmt(detail_table(lp)), ""]
        p += [("- " if md else "  ") + x for x in not_run(lp)] + ([""] if not_run(lp) else [])
    mem = res["memory"]
    if mem:
        title = (f"Memory per idle connection at {cfg['memory_connections']:,} connections "
                 "(server RSS after they connected minus before, divided by their number)")
        p += [f"### {title}" if md else title, "", fmt(memory_table(mem)), ""]
    p += [("- " if md else "  ") + n for n in _footnotes(report)]
    return "\n".join(p).rstrip() + "\n"


def update_doc(path: Path, markdown_text: str) -> None:
    """Replace the text between the markers in *path* (append the section when absent)."""
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{BEGIN}\n{markdown_text.rstrip()}\n{END}"
    if BEGIN in doc and END in doc:
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
        doc = pattern.sub(lambda _: block, doc, count=1)
    else:
        doc = doc.rstrip() + ("\n\n" if doc else "") + f"{SECTION}\n\n{block}\n"
    path.write_text(doc, encoding="utf-8")
