"""``chatlab crash``: the one model (:mod:`sim.model`) on a cluster of ``servers``, with the
scenario's fault (:mod:`sim.faults`), turned into the crash tables.

A crash run is a transport-model run: it has receipts, the upload pool, keep-alive and every
other parameter ``chatlab compare`` honours, and its :attr:`CrashResult.run` holds the same
tables a compare run has. With one server and a fault that never starts, those tables equal a
compare run's (tests/sim/test_crash_equivalence.py). ``docs/CRASH.md`` has every assumption.

Pure like the rest of ``sim``: it returns data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chatcore.stats import LATENCY_KEYS, step_profile
from chatcore.tables import delivery_outcomes

from .model import ChatModel
from .params import Scenario
from .results import RunResult, build
from .workload import draw, streams

__all__ = ["CrashResult", "run_crash"]


@dataclass
class CrashResult:
    """Tables and summary of one (transport, reconnect policy) run with a fault."""

    transport: str
    reconnect_policy: str
    scenario: Scenario
    summary: dict[str, Any]
    bins: pd.DataFrame
    messages: pd.DataFrame
    servers: pd.DataFrame = field(repr=False)
    run: RunResult | None = field(default=None, repr=False)


def run_crash(scenario: Scenario, transport: str, policy: str | None = None) -> CrashResult:
    """Simulate the scenario's fault for one transport and reconnect policy."""
    policy = policy or scenario.reconnect_policy
    rngs = streams(scenario.seed)
    wl = draw(scenario, rngs)
    m = ChatModel(scenario, transport, wl, rngs, servers=scenario.servers, fault=True, policy=policy)
    rec = m.run()
    return _build(m, policy, build(transport, scenario, wl, rec))


def _build(m: ChatModel, policy: str, run: RunResult) -> CrashResult:
    sc, wl, inc, rec = m.sc, m.wl, m.incident, m.rec
    assert inc is not None
    nb = rec.n_bins
    edges = np.arange(nb + 1) * sc.bin_s
    t0 = sc.crash_at_s
    # sessions as the clients see them: [connected, noticed the loss)
    _, _, connected = step_profile(np.asarray(inc.sess_start, dtype=float), np.asarray(inc.sess_end, dtype=float),
                                   0.0, m.end_s, edges)
    _, _, backlog = step_profile(np.asarray(inc.backlog_start), np.asarray(inc.backlog_end), 0.0, m.end_s, edges)

    msg = np.asarray(rec.d_msg, dtype=np.int64)
    sent = wl.send_time[msg] if msg.size else np.zeros(0)
    recv = np.asarray(rec.d_received, dtype=float)
    messages = pd.DataFrame({
        "transport": m.transport, "reconnect_policy": policy, "msg": msg,
        "recipient": np.asarray(rec.d_recipient, dtype=np.int64), "sent_at": sent, "received_at": recv,
        "latency_ms": (recv - sent) * 1000.0, "via": pd.Series(inc.d_via, dtype="string"),
    }).sort_values(["msg", "recipient"], kind="stable").reset_index(drop=True)

    # every expected (message, recipient): received, or lost, held for a recipient not back, or unacked
    queue = sc.delivery_design == "queue"
    held_now = {(ev.msg, r) for s in m.cluster.servers if s.alive for r, evs in s.held.items() for ev in evs}

    def kept(i: int, r: int) -> bool:  # in the durable log, or a live server's memory
        c = m.clients[r]
        return (i, r) in held_now or (queue and (c.lost or c.state is not m.CONNECTED))

    out = delivery_outcomes(((i, r.idx) for i in range(wl.n_messages) if wl.send_time[i] <= sc.duration_s
                             for r in m.recipients(i)),
                            set(zip(messages["msg"].tolist(), messages["recipient"].tolist())),
                            m.stored.__contains__, kept)
    expected, lost, held, undelivered = out["expected"], out["lost"], out["held"], out["unacked"]
    # waiting pairs stay in flight to the end; lost ones are not in flight (messages_lost counts them)
    pend_start = [wl.send_time[i] for i, r in out["missing"] if i not in m.stored or kept(i, r)]
    pend_end = [m.end_s] * len(pend_start)
    _, _, pending = step_profile(np.concatenate([sent, np.asarray(pend_start, dtype=float)]),
                                 np.concatenate([recv, np.asarray(pend_end, dtype=float)]), 0.0, m.end_s, edges)
    bins = pd.DataFrame({
        "transport": m.transport, "reconnect_policy": policy, "t_s": edges[:-1],
        "connected_clients": connected,
        "connect_attempts_per_s": np.asarray(inc.b_attempts) / sc.bin_s,
        "accepted_per_s": np.asarray(inc.b_accepted) / sc.bin_s,
        "rejected_per_s": np.asarray(inc.b_rejected) / sc.bin_s,
        "timed_out_per_s": np.asarray(inc.b_timed_out) / sc.bin_s,
        "wasted_connects_per_s": np.asarray(inc.b_wasted) / sc.bin_s,
        "queue_backlog": backlog,
        "messages_in_flight": pending,
        "replay_bytes": np.asarray(inc.b_replay_bytes),
    })
    for s in m.cluster.servers:
        bins[f"cpu_server_{s.idx}"] = np.asarray(s.busy) / (sc.server_cores * sc.bin_s)
    # the last bin is cut by the run's end: it is not a second outage
    bins = bins[bins.t_s + sc.bin_s <= m.end_s + 1e-9].reset_index(drop=True)

    affected = [c for c in m.clients if c.affected]
    back = [c.reconnected_at for c in affected]
    all_back = bool(affected) and all(math.isfinite(t) for t in back)
    ttr = (max(back) - t0) if all_back else None
    incident_end = t0 + max(sc.downtime_s if math.isfinite(sc.downtime_s) else 0.0, ttr or 0.0)
    inc_msgs = messages[(messages.sent_at >= t0) & (messages.sent_at <= incident_end)]
    lat = inc_msgs["latency_ms"].to_numpy()
    after = bins[bins.t_s >= t0]
    first = sc.crashed_servers if sc.fault == "servers" else 0
    survivors = [f"cpu_server_{s.idx}" for s in m.cluster.servers[first:]]
    summary: dict[str, Any] = {
        "transport": m.transport,
        "reconnect_policy": policy,
        "delivery_design": sc.delivery_design,
        "fault": sc.fault,
        "affected_clients": len(affected),
        "reconnect_peak_per_s": float(after["connect_attempts_per_s"].max()) if len(after) else 0.0,
        "time_to_reconnect_all_s": ttr,
        "clients_not_reconnected": sum(1 for t in back if not math.isfinite(t)),
        "connect_attempts": int(sum(inc.b_attempts)),
        "connects_rejected": int(sum(inc.b_rejected)),
        "connects_timed_out": int(sum(inc.b_timed_out)),
        "wasted_connects": int(sum(inc.b_wasted)),
        "survivor_cpu_peak": float(after[survivors].max().max()) if survivors and len(after) else 0.0,
        "messages_expected_deliveries": expected,
        "messages_lost": lost,
        "messages_lost_in_memory": inc.lost_in_memory,
        "messages_lost_to_dead_server": inc.lost_to_dead_server,
        "messages_held_for_offline": held,
        "messages_undelivered_unacked": undelivered,
        "messages_duplicated": inc.duplicates,
        "messages_recovered": inc.recovered,
        "messages_resent": inc.resends,
        "resends_deduplicated": inc.resends_deduplicated,
        "replay_bytes": int(sum(inc.b_replay_bytes)),
        "presence_flaps": inc.flaps,
        "presence_flaps_per_affected_user": (inc.flaps / len(affected)) if affected else 0.0,
        "incident_latency_ms": {k: v for k, v in zip(
            LATENCY_KEYS, ([float(lat.mean()), *map(float, np.percentile(lat, [50, 95, 99])), float(lat.max())]
                           if lat.size else [None] * 5))},
        "incident_window_s": [t0, incident_end],
    }
    summary["p99_incident_latency_ms"] = summary["incident_latency_ms"]["p99"]
    for k, v in run.summary.items():  # the transport model's window measures, as compare reports them
        summary.setdefault(k, v)
    servers = pd.DataFrame([{"server": s.idx, "alive_at_end": s.alive, "crashes": s.epoch}
                            for s in m.cluster.servers])
    return CrashResult(m.transport, policy, sc, summary, bins, messages, servers, run)
