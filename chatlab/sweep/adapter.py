"""The one place where the sweep machinery calls the model.

Every run kind is one function that takes a :class:`sim.Scenario` (and a
transport, and for crash runs a reconnect policy) and returns a flat dict of
metrics: numbers (or None) and, for a few, short text. Nested summary values
become ``<name>_<key>`` (``latency_ms`` -> ``latency_ms_p95``), as in
``sim.Comparison.summary``. If the model's entry points move, only this module
changes.

The metric names are listed here, not discovered by running the model, so that a
sweep file or an SLO naming an unknown metric is refused before anything runs;
``tests/sweep/test_adapter.py`` checks the lists against real runs.
"""

from __future__ import annotations

import contextlib
import gc
import math
from typing import Any, Callable, Iterator

from chatcore.stats import LATENCY_KEYS

#: The kinds of run a sweep can make.
KINDS: tuple[str, ...] = ("compare", "crash", "capacity")

#: Summary columns of one ``sim.run`` (``chatlab compare``), in the model's order.
COMPARE_METRICS: tuple[str, ...] = (
    "requests_per_s", "empty_response_ratio", "overhead_bytes_up_per_s", "overhead_bytes_down_per_s",
    "payload_bytes_up_per_s", "payload_bytes_down_per_s", "bytes_per_message",
    *(f"latency_ms_{k}" for k in LATENCY_KEYS), *(f"receipt_latency_ms_{k}" for k in LATENCY_KEYS),
    "open_connections_mean", "open_connections_peak", "held_requests_mean", "held_requests_peak",
    "server_cpu_utilization", "cpu_wait_ms_mean", "memory_thread_per_connection_mb", "memory_event_loop_mb",
    "messages_sent", "messages_delivered", "deliveries",
)

#: Summary columns of one ``sim.crash.run_crash`` (``chatlab crash``): the incident's, then
#: (one model) every column a compare run has.
CRASH_METRICS: tuple[str, ...] = (
    "affected_clients", "reconnect_peak_per_s", "time_to_reconnect_all_s", "clients_not_reconnected",
    "connect_attempts", "connects_rejected", "connects_timed_out", "wasted_connects", "survivor_cpu_peak",
    "messages_expected_deliveries", "messages_lost", "messages_lost_in_memory", "messages_lost_to_dead_server",
    "messages_held_for_offline", "messages_undelivered_unacked", "messages_duplicated", "messages_recovered",
    "messages_resent", "resends_deduplicated", "replay_bytes", "presence_flaps", "presence_flaps_per_affected_user",
    *(f"incident_latency_ms_{k}" for k in LATENCY_KEYS), "incident_start_s", "incident_end_s",
    "p99_incident_latency_ms", *COMPARE_METRICS,
)

#: What one capacity search (``chatlab capacity``, one replication) returns.
CAPACITY_METRICS: tuple[str, ...] = ("capacity_clients", "bracket_high_clients", "probes", "deciding_constraint")

#: Metrics that are text, not numbers.
TEXT_METRICS: frozenset[str] = frozenset({"deciding_constraint"})

#: Summary keys that repeat a parameter or the run's identity: columns of their own, not metrics.
_IDENTITY = {"transport", "reconnect_policy", "delivery_design", "fault"}


def canonical_metric(name: str) -> str:
    """Accept ``latency_p95_ms`` for ``latency_ms_p95`` (and the receipt and incident latencies),
    the spelling many write; every other name is returned as given."""
    for prefix in ("incident_latency", "receipt_latency", "latency"):
        for k in LATENCY_KEYS:
            if name == f"{prefix}_{k}_ms":
                return f"{prefix}_ms_{k}"
    return name


def metric_names(kind: str) -> tuple[str, ...]:
    return {"compare": COMPARE_METRICS, "crash": CRASH_METRICS, "capacity": CAPACITY_METRICS}[kind]


def flatten(summary: dict[str, Any]) -> dict[str, Any]:
    """A model summary as flat ``name -> number | None | str``: nested dicts become
    ``name_key``; the incident window ``[start, end]`` becomes two columns; numpy
    scalars become Python numbers; NaN becomes None."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if k in _IDENTITY:
            continue
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}_{kk}"] = _plain(vv)
        elif k == "incident_window_s":
            out["incident_start_s"], out["incident_end_s"] = (_plain(x) for x in v)
        else:
            out[k] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Run the model with Python's cyclic garbage collector paused, then collect once.

    A large run holds millions of live objects (processes, events, per-client state); every
    automatic collection walks them, which made a 30,000-client WebSocket run 25-60 % slower
    (5.7-6.7 s paused against 7.9-18.4 s, three runs each in one process). The model's
    short-lived objects are freed by reference counting either way: peak memory was the same
    (262-270 MB). Results do not depend on it (tests/sweep/test_rerun.py compares sweep rows
    with plain ``chatlab compare`` runs for equality)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.collect()


def run_compare(scenario, transport: str, policy: str | None = None) -> dict[str, Any]:
    """One transport of ``chatlab compare``: ``sim.run(scenario, transport)``'s summary."""
    import sim

    with paused_gc():
        return flatten(sim.run(scenario, transport).summary)


def run_crash(scenario, transport: str, policy: str | None = None) -> dict[str, Any]:
    """One row of ``chatlab crash``: the fault, the storm and what was lost."""
    from sim.crash import run_crash as _run_crash

    with paused_gc():
        return flatten(_run_crash(scenario, transport, policy).summary)


def run_capacity(scenario, transport: str, policy: str | None = None, *, slo: str = "",
                 tolerance: float = 0.02, window_s: float = 5.0) -> dict[str, Any]:
    """One capacity search (one replication: the scenario's seed) on *transport*."""
    from .capacity import parse_slo, search

    res = search(scenario, transport, parse_slo(slo), tolerance=tolerance, window_s=window_s)
    return res.metrics()


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "compare": run_compare, "crash": run_crash, "capacity": run_capacity,
}


def run_one(kind: str, scenario, transport: str, policy: str | None = None, **options: Any) -> dict[str, Any]:
    """Run one simulation of *kind* and return its flat metrics."""
    return RUNNERS[kind](scenario, transport, policy, **options)


# --- units, for axis labels ------------------------------------------------------------------
_UNIT_EXACT = {
    "empty_response_ratio": "fraction", "server_cpu_utilization": "fraction of the cores",
    "survivor_cpu_peak": "fraction of the cores", "bytes_per_message": "bytes",
    "open_connections_mean": "connections", "open_connections_peak": "connections",
    "held_requests_mean": "requests", "held_requests_peak": "requests",
    "presence_flaps_per_affected_user": "flaps per user", "replay_bytes": "bytes",
    "capacity_clients": "clients per server", "bracket_high_clients": "clients per server",
    "probes": "runs", "clients": "clients", "reconnect_peak_per_s": "connect attempts/s",
}


def metric_unit(name: str) -> str:
    """The unit of a metric (or parameter) name, for labels: ``latency_ms_p95`` -> ``ms``."""
    if name in _UNIT_EXACT:
        return _UNIT_EXACT[name]
    for part, unit in (("_ms", "ms"), ("bytes_up_per_s", "bytes/s"), ("bytes_down_per_s", "bytes/s"),
                       ("requests_per_s", "requests/s"), ("_per_s", "per s"), ("_mb", "MiB")):
        if part in name:
            return unit
    if name.endswith("_s"):
        return "s"
    if name.startswith(("messages_", "connect", "wasted_", "clients_", "affected_", "presence_flaps",
                        "resends_", "deliveries")):
        return "count"
    return ""
