"""Scenario parameters: one frozen, validated structure.

Every parameter a user can set (``--set NAME=VALUE``, a scenario TOML file, or
``dataclasses.replace`` in Python) is a field of :class:`Scenario`. What each one is (type,
default, unit, what is allowed, meaning, source of the default) and the rules between them are
defined once, in :mod:`chatcore.params`, which the load generator's configuration uses too;
``docs/PARAMETERS.md`` is generated from it and a test keeps the two in step.

A scenario is frozen: vary it with :meth:`Scenario.with_overrides` or
``dataclasses.replace``, which build a new, re-validated object, so one run
can never change another run's parameters.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping

from chatcore import params as spec
from chatcore.params import PARAMETER_NAMES, ParameterError, parse_assignment

__all__ = ["PARAMETER_NAMES", "ParameterError", "Scenario", "parse_assignment"]


def _f(name: str) -> Any:
    p = spec.SPEC[name]
    return field(default=p.default, metadata={"unit": p.unit, "allowed": p.allowed, "check": p.check,
                                              "doc": p.doc, "source": p.source})


@dataclass(frozen=True)
class Scenario:
    """All parameters of one simulated scenario. Defaults are the default scenario
    (``chatcore.params.PARAMETERS``, in the same order)."""

    clients: int = _f("clients")
    duration_s: float = _f("duration_s")
    warmup_s: float = _f("warmup_s")
    msg_rate_per_min: float = _f("msg_rate_per_min")
    group_size: int = _f("group_size")
    payload_bytes: int = _f("payload_bytes")
    user_name_chars: int = _f("user_name_chars")
    id_digits: int = _f("id_digits")
    read_delay_s: float = _f("read_delay_s")
    receipts: bool = _f("receipts")
    seed: int = _f("seed")
    transports: tuple[str, ...] = _f("transports")
    poll_interval_s: float = _f("poll_interval_s")
    long_poll_timeout_s: float = _f("long_poll_timeout_s")
    http_keepalive_s: float = _f("http_keepalive_s")
    http_request_header_bytes: int = _f("http_request_header_bytes")
    http_response_header_bytes: int = _f("http_response_header_bytes")
    ws_handshake_request_bytes: int = _f("ws_handshake_request_bytes")
    ws_handshake_response_bytes: int = _f("ws_handshake_response_bytes")
    ws_heartbeat_s: float = _f("ws_heartbeat_s")
    connect_ramp_s: float = _f("connect_ramp_s")
    rtt_ms: float = _f("rtt_ms")
    net_jitter_ms: float = _f("net_jitter_ms")
    server_cores: int = _f("server_cores")
    service_time_dist: str = _f("service_time_dist")
    cpu_poll_ms: float = _f("cpu_poll_ms")
    cpu_longpoll_hold_ms: float = _f("cpu_longpoll_hold_ms")
    cpu_longpoll_release_ms: float = _f("cpu_longpoll_release_ms")
    cpu_http_send_ms: float = _f("cpu_http_send_ms")
    cpu_http_receipt_ms: float = _f("cpu_http_receipt_ms")
    cpu_ws_frame_in_ms: float = _f("cpu_ws_frame_in_ms")
    cpu_ws_frame_out_ms: float = _f("cpu_ws_frame_out_ms")
    cpu_handshake_ms: float = _f("cpu_handshake_ms")
    cpu_ping_ms: float = _f("cpu_ping_ms")
    cpu_per_event_ms: float = _f("cpu_per_event_ms")
    cpu_commit_batch_ms: float = _f("cpu_commit_batch_ms")
    queue_latency_ms: float = _f("queue_latency_ms")
    persist_latency_ms: float = _f("persist_latency_ms")
    delivery_latency_ms: float = _f("delivery_latency_ms")
    thread_stack_kb: float = _f("thread_stack_kb")
    event_loop_conn_kb: float = _f("event_loop_conn_kb")
    servers: int = _f("servers")
    fault: str = _f("fault")
    crash_at_s: float = _f("crash_at_s")
    downtime_s: float = _f("downtime_s")
    crashed_servers: int = _f("crashed_servers")
    partition_fraction: float = _f("partition_fraction")
    crash_mode: str = _f("crash_mode")
    http_retry_once: bool = _f("http_retry_once")
    reconnect_policy: str = _f("reconnect_policy")
    backoff_base_s: float = _f("backoff_base_s")
    backoff_cap_s: float = _f("backoff_cap_s")
    connect_cpu_ms: float = _f("connect_cpu_ms")
    connect_timeout_s: float = _f("connect_timeout_s")
    request_timeout_s: float = _f("request_timeout_s")
    max_connects_per_s: float = _f("max_connects_per_s")
    reject_cpu_ms: float = _f("reject_cpu_ms")
    delivery_design: str = _f("delivery_design")
    presence_ttl_s: float = _f("presence_ttl_s")
    presence_heartbeat_s: float = _f("presence_heartbeat_s")
    registry_ttl_s: float = _f("registry_ttl_s")
    visibility_timeout_s: float = _f("visibility_timeout_s")
    bin_s: float = _f("bin_s")

    def __post_init__(self) -> None:
        values = spec.validate({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        for name, value in values.items():
            if value is not getattr(self, name):
                object.__setattr__(self, name, value)  # an int given for a float

    # --- construction from text ---------------------------------------------------
    def with_overrides(self, values: Mapping[str, Any]) -> "Scenario":
        """A new scenario with *values* applied. Values may be typed (from TOML or
        Python) or strings (from ``--set``); unknown names raise ParameterError."""
        return Scenario(**spec.with_overrides(self.to_values(), values))

    @classmethod
    def from_toml(cls, text: str, base: "Scenario | None" = None) -> "Scenario":
        """Parse a scenario file: top-level ``name = value`` pairs (an optional
        ``[scenario]`` table holds the same pairs)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ParameterError("scenario", "file", f"valid TOML ({exc})") from None
        if set(data) == {"scenario"} and isinstance(data["scenario"], dict):
            data = data["scenario"]
        return (base or cls()).with_overrides(data)

    def to_values(self) -> dict[str, Any]:
        """Every parameter with its typed value."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """Every parameter with its value, JSON-ready."""
        d = dataclasses.asdict(self)
        d["transports"] = list(self.transports)
        for k, v in d.items():
            if isinstance(v, float) and math.isinf(v):
                d[k] = "inf"  # JSON has no infinity
        return d

    @staticmethod
    def parameter_table() -> list[dict[str, Any]]:
        """One row per parameter: name, default, unit, allowed, meaning, source."""
        return spec.parameter_table()


assert tuple(f.name for f in dataclasses.fields(Scenario)) == PARAMETER_NAMES, "Scenario and chatcore.params differ"
