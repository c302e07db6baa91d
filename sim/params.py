"""Scenario parameters: one frozen, validated structure.

Every parameter a user can set (``--set NAME=VALUE``, a scenario TOML file, or
``dataclasses.replace`` in Python) is a field of :class:`Scenario`. Each field
carries its unit, what is allowed and where its default comes from in its
metadata; ``docs/PARAMETERS.md`` is generated from that metadata and a test
keeps the two in step.

A scenario is frozen: vary it with :meth:`Scenario.with_overrides` or
``dataclasses.replace``, which build a new, re-validated object, so one run
can never change another run's parameters.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from chatcore.backoff import POLICIES as BACKOFF_POLICIES
from chatcore.wire import MAX_MESSAGE_BODY_CHARS, TRANSPORTS


class ParameterError(ValueError):
    """A parameter's value is not allowed. ``str(err)`` is one line:
    ``name=value: what is allowed``."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        shown = value if isinstance(value, str) and value.isprintable() else repr(value)
        super().__init__(f"{name}={shown}: {allowed}")


def _p(default: Any, unit: str, allowed: str, check: Callable[[Any], bool], doc: str,
       source: str) -> Any:
    return field(default=default, metadata={"unit": unit, "allowed": allowed, "check": check,
                                            "doc": doc, "source": source})


def _pos(x: float) -> bool:
    return x > 0 and math.isfinite(x)


def _nonneg(x: float) -> bool:
    return x >= 0 and math.isfinite(x)


# RFC 6455 section 1.2: the sample opening handshake, byte for byte (CRLF line ends).
_RFC6455_REQUEST = (
    "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n")
_RFC6455_RESPONSE = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n")

_PROVISIONAL = ("provisional estimate for a CPython asyncio server (aiohttp); "
                "`chatlab calibrate` measures the real value")


@dataclass(frozen=True)
class Scenario:
    """All parameters of one simulated scenario. Defaults are the default scenario."""

    # --- workload -------------------------------------------------------------
    clients: int = _p(1000, "clients", "an integer >= 2", lambda v: v >= 2,
                      "Connected chat clients (one user each).", "assumption: a small deployment")
    duration_s: float = _p(180.0, "s", "a number > 0", _pos,
                           "Simulated time during which messages are sent.", "assumption")
    warmup_s: float = _p(30.0, "s", "a number >= 0 and < duration_s", _nonneg,
                         "Initial period excluded from every rate and latency (clients connect, "
                         "long polls settle).", "> long_poll_timeout_s so long polls reach steady state")
    msg_rate_per_min: float = _p(2.0, "messages/min per client", "a number >= 0", _nonneg,
                                 "Poisson rate at which each client sends chat messages.",
                                 "assumption: an active conversation (one message every 30 s)")
    group_size: int = _p(2, "members", "an integer >= 2 and <= clients", lambda v: v >= 2,
                         "Members per conversation including the sender; 2 = one-to-one. "
                         "A message fans out to the other group_size - 1 members.", "1:1 chat")
    payload_bytes: int = _p(100, "bytes", f"an integer 0..{MAX_MESSAGE_BODY_CHARS}",
                            lambda v: 0 <= v <= MAX_MESSAGE_BODY_CHARS,
                            "Length of a message's text (ASCII), inside the JSON envelope.",
                            "assumption: a short chat line")
    user_name_chars: int = _p(8, "characters", "an integer 1..32", lambda v: 1 <= v <= 32,
                              "Length of user names in the JSON bodies.", "the load generator's names (u0000001)")
    id_digits: int = _p(7, "digits", "an integer 1..18", lambda v: 1 <= v <= 18,
                        "Digits of message ids and cursor sequence numbers in the JSON bodies.",
                        "assumption: a server with millions of events; a fresh server has 1-3")
    read_delay_s: float = _p(5.0, "s", "a number >= 0", _nonneg,
                             "Mean (exponential) time between receiving a message and reading it.",
                             "assumption: the app is open")
    receipts: bool = _p(True, "", "true or false", lambda v: True,
                        "Recipients send delivered and read receipts back to the sender.",
                        "WhatsApp-style ticks; the reference server sends them")
    seed: int = _p(1, "", "an integer >= 0", lambda v: v >= 0,
                   "Root of every random stream (numpy SeedSequence).", "")
    transports: tuple[str, ...] = _p(TRANSPORTS, "", "a comma list of " + ",".join(TRANSPORTS),
                                     lambda v: len(v) > 0,
                                     "Transports to simulate, each on the same workload.", "all three")
    # --- transports -----------------------------------------------------------
    poll_interval_s: float = _p(2.0, "s", "a number > 0", _pos,
                                "Short polling: time between a client's polls (random phase per client).",
                                "assumption: typical web chat polling; Lubbers & Greco (2010) use 1 s")
    long_poll_timeout_s: float = _p(30.0, "s", "a number > 0", _pos,
                                    "Long polling: the server answers an empty response after holding "
                                    "a request this long.", "RFC 6202 section 5.5 (about 30 s is safe)")
    http_keepalive_s: float = _p(75.0, "s", "a number >= 0", _nonneg,
                                 "An idle HTTP connection closes after this long; the next request "
                                 "pays a new TCP connection (one RTT and handshake CPU).",
                                 "aiohttp's default keepalive_timeout (the reference server)")
    http_request_header_bytes: int = _p(650, "bytes", "an integer >= 0", lambda v: v >= 0,
                                        "Bytes of HTTP request line and headers per request.",
                                        "Lubbers & Greco (2010): 871 bytes of request+response headers "
                                        "per poll; the 650/221 split is ours")
    http_response_header_bytes: int = _p(221, "bytes", "an integer >= 0", lambda v: v >= 0,
                                         "Bytes of HTTP status line and headers per response.",
                                         "Lubbers & Greco (2010), see above")
    ws_handshake_request_bytes: int = _p(len(_RFC6455_REQUEST), "bytes", "an integer >= 0",
                                         lambda v: v >= 0, "WebSocket opening handshake, client to server.",
                                         "RFC 6455 section 1.2 sample handshake")
    ws_handshake_response_bytes: int = _p(len(_RFC6455_RESPONSE), "bytes", "an integer >= 0",
                                          lambda v: v >= 0, "WebSocket opening handshake, server to client.",
                                          "RFC 6455 section 1.2 sample handshake")
    ws_heartbeat_s: float = _p(25.0, "s", "a number > 0", _pos,
                               "WebSocket: the server pings each client this often (empty ping, pong back).",
                               "Centrifugo and Socket.IO ping every 25 s")
    connect_ramp_s: float = _p(10.0, "s", "a number >= 0", _nonneg,
                               "Clients start at uniform random times in [0, connect_ramp_s); a message "
                               "a user sends before its client starts leaves when it starts.",
                               "assumption; keep it inside the warm-up")
    # --- network --------------------------------------------------------------
    rtt_ms: float = _p(100.0, "ms", "a number >= 0", _nonneg,
                       "Client-server round trip; one-way delay is rtt_ms / 2.", "assumption: mobile/continental")
    net_jitter_ms: float = _p(0.0, "ms", "a number >= 0", _nonneg,
                              "Mean of an exponential extra one-way delay per packet; frames on one "
                              "WebSocket stay in order.", "off by default")
    # --- server ---------------------------------------------------------------
    server_cores: int = _p(2, "cores", "an integer >= 1", lambda v: v >= 1,
                           "CPU cores of the connection server (a simpy.Resource of this capacity).",
                           "this project's 2-core machine")
    service_time_dist: str = _p("deterministic", "", "deterministic or exponential",
                                lambda v: v in ("deterministic", "exponential"),
                                "Distribution of CPU service times around their means.", "")
    cpu_poll_ms: float = _p(0.30, "ms", "a number >= 0", _nonneg,
                            "CPU for one short poll (parse, auth, read the event log, respond).", _PROVISIONAL)
    cpu_longpoll_hold_ms: float = _p(0.25, "ms", "a number >= 0", _nonneg,
                                     "CPU to accept a long poll and register it as a waiter.", _PROVISIONAL)
    cpu_longpoll_release_ms: float = _p(0.15, "ms", "a number >= 0", _nonneg,
                                        "CPU to wake a held long poll and write its response.", _PROVISIONAL)
    cpu_http_send_ms: float = _p(0.50, "ms", "a number >= 0", _nonneg,
                                 "CPU for POST /api/messages (parse, validate, store, respond).", _PROVISIONAL)
    cpu_http_receipt_ms: float = _p(0.35, "ms", "a number >= 0", _nonneg,
                                    "CPU for POST /api/receipts.", _PROVISIONAL)
    cpu_ws_frame_in_ms: float = _p(0.15, "ms", "a number >= 0", _nonneg,
                                   "CPU for one client->server WebSocket frame (send or receipt).", _PROVISIONAL)
    cpu_ws_frame_out_ms: float = _p(0.05, "ms", "a number >= 0", _nonneg,
                                    "CPU to push one event frame to a WebSocket.", _PROVISIONAL)
    cpu_handshake_ms: float = _p(0.50, "ms", "a number >= 0", _nonneg,
                                 "CPU to accept a connection (TCP accept; WebSocket upgrade and auth).",
                                 _PROVISIONAL + "; TLS excluded")
    cpu_ping_ms: float = _p(0.02, "ms", "a number >= 0", _nonneg,
                            "CPU for one heartbeat (ping out, pong in).", _PROVISIONAL)
    cpu_per_event_ms: float = _p(0.02, "ms", "a number >= 0", _nonneg,
                                 "Extra CPU per event serialised into a poll response.", _PROVISIONAL)
    queue_latency_ms: float = _p(0.2, "ms", "a number >= 0", _nonneg,
                                 "Ordered queue stage: append to the stream (Redis XADD).",
                                 "redis-benchmark order of magnitude on loopback")
    persist_latency_ms: float = _p(1.0, "ms", "a number >= 0", _nonneg,
                                   "Persistence stage: durable append (SQLite WAL commit).",
                                   "assumption: one small WAL transaction")
    delivery_latency_ms: float = _p(0.5, "ms", "a number >= 0", _nonneg,
                                    "Delivery stage: the delivery service reads the stream (XREADGROUP) "
                                    "and finds the recipient's connection.", "assumption")
    # --- memory estimate --------------------------------------------------------
    thread_stack_kb: float = _p(1024.0, "KiB", "a number >= 0", _nonneg,
                                "Memory per open connection for a thread-per-connection server.",
                                "JVM default thread stack (-Xss) on 64-bit Linux")
    event_loop_conn_kb: float = _p(30.0, "KiB", "a number >= 0", _nonneg,
                                   "Memory per open connection for an event-loop server.",
                                   "Centrifugo's 1M-connection test (2020): about 30 KB per connection")
    # --- crashes and reconnects (chatlab crash, sim.crash) ------------------------------
    servers: int = _p(4, "servers", "an integer >= 1", lambda v: v >= 1,
                      "Connection servers behind the load balancer (sticky sessions; a client is reassigned "
                      "to a live server only when its own fails).", "assumption: a small cluster")
    fault: str = _p("servers", "", "servers, delivery or partition",
                    lambda v: v in ("servers", "delivery", "partition"),
                    "What fails at crash_at_s: connection servers, the delivery service, or the network "
                    "between a fraction of clients and every server.", "")
    crash_at_s: float = _p(60.0, "s", "a number >= 0", _nonneg, "When the fault starts.", "after warm-up")
    downtime_s: float = _p(30.0, "s", "a number >= 0, or inf (for good)", lambda v: v >= 0 and v == v,
                           "How long the fault lasts; inf = the crashed servers never come back.", "assumption")
    crashed_servers: int = _p(1, "servers", "an integer >= 1 and <= servers", lambda v: v >= 1,
                              "How many connection servers crash (fault = servers).", "")
    partition_fraction: float = _p(0.25, "", "a number in (0, 1]", lambda v: 0 < v <= 1,
                                   "Fraction of clients cut off (fault = partition).", "")
    crash_mode: str = _p("reset", "", "reset or silent", lambda v: v in ("reset", "silent"),
                         "reset: the process dies and the kernel resets its connections (long polls and "
                         "WebSockets break at once, a poll fails); silent: the host stops answering (clients "
                         "notice by request timeouts and missed heartbeats).", "")
    reconnect_policy: str = _p("full_jitter", "", "one of " + ", ".join(BACKOFF_POLICIES),
                               lambda v: v in BACKOFF_POLICIES,
                               "Client reconnect backoff (chatcore.backoff, AWS Architecture Blog naming).",
                               "AWS Architecture Blog (2015): full jitter does the least work")
    backoff_base_s: float = _p(1.0, "s", "a number >= 0", _nonneg, "Backoff base delay.",
                               "Socket.IO reconnectionDelay (1 s)")
    backoff_cap_s: float = _p(30.0, "s", "a number >= 0", _nonneg, "Backoff cap.", "assumption")
    connect_cpu_ms: float = _p(5.0, "ms", "a number >= 0", _nonneg,
                               "Server CPU for one (re)connect: TLS handshake, auth, session restore.",
                               "assumption: a full TLS handshake costs about 1-2 ms of CPU, auth and "
                               "session restore a few more")
    connect_timeout_s: float = _p(10.0, "s", "a number > 0", _pos,
                                  "A connect not answered in this long is abandoned and retried (the server "
                                  "may still spend CPU on it: wasted work).", "assumption")
    request_timeout_s: float = _p(10.0, "s", "a number > 0", _pos,
                                  "Client-side timeout of an HTTP request beyond its expected answer, and the "
                                  "grace after a missed heartbeat (silent crashes).", "assumption")
    max_connects_per_s: float = _p(0.0, "connects/s per server", "a number >= 0 (0 = no limit)", _nonneg,
                                   "Admission control: a token bucket per server; a connect over the rate is "
                                   "refused cheaply (reject_cpu_ms) and the client backs off.",
                                   "Centrifugo's connection_rate_limit")
    reject_cpu_ms: float = _p(0.05, "ms", "a number >= 0", _nonneg,
                              "Server CPU to refuse a connect over the admission rate.", _PROVISIONAL)
    delivery_design: str = _p("queue", "", "queue or direct", lambda v: v in ("queue", "direct"),
                              "queue: each message is appended to the durable ordered queue and persistence "
                              "before it is acknowledged (the reference server); direct: the connection server "
                              "acknowledges at once and keeps in-flight messages in memory.", "the seed design")
    presence_ttl_s: float = _p(60.0, "s", "a number > 0", _pos,
                               "A user is shown offline this long after its last presence refresh.",
                               "Centrifugo: 60 s TTL with a 25 s refresh; Zulip 200 s with 60 s")
    presence_heartbeat_s: float = _p(25.0, "s", "a number > 0", _pos,
                                     "How often a connected user's presence is refreshed.", "Centrifugo (25 s)")
    registry_ttl_s: float = _p(60.0, "s", "a number >= 0 (0 = the registry learns of a death at once)", _nonneg,
                               "Session registry (user -> connection server): an entry is refreshed every "
                               "presence_heartbeat_s and, once its server dies, still names it until this long "
                               "after its last refresh; the direct design forwards to it until then.",
                               "the seed design's registry with the presence TTL (Centrifugo: 60 s)")
    visibility_timeout_s: float = _p(30.0, "s", "a number > 0", _pos,
                                     "Queue design: a pushed event whose push was never confirmed is reclaimed "
                                     "(XAUTOCLAIM) and pushed again after this long.", "assumption")
    # --- output -----------------------------------------------------------------
    bin_s: float = _p(1.0, "s", "a number > 0", _pos, "Width of the per-time-bin table's bins.", "")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            want = _TYPES[f.name]
            if want is bool:
                ok = isinstance(value, bool)
            elif want is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif want is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok and isinstance(value, int):
                    object.__setattr__(self, f.name, float(value))
                    value = float(value)
            elif want is str:
                ok = isinstance(value, str)
            else:  # transports
                ok = isinstance(value, tuple) and all(isinstance(t, str) for t in value)
            if not ok or not f.metadata["check"](value):
                raise ParameterError(f.name, _show(value), f.metadata["allowed"])
        if self.warmup_s >= self.duration_s:
            raise ParameterError("warmup_s", _show(self.warmup_s), "a number >= 0 and < duration_s "
                                 f"({_show(self.duration_s)})")
        if (self.duration_s + 600.0) / self.bin_s > 1e6:
            raise ParameterError("bin_s", _show(self.bin_s), "a number > 0 giving at most 1,000,000 bins "
                                 f"over the run ({_show(self.duration_s)} s plus up to 600 s of drain)")
        if self.crashed_servers > self.servers:
            raise ParameterError("crashed_servers", self.crashed_servers,
                                 f"an integer >= 1 and <= servers ({self.servers})")
        if self.group_size > self.clients:
            raise ParameterError("group_size", self.group_size, f"an integer >= 2 and <= clients ({self.clients})")
        for t in self.transports:
            if t not in TRANSPORTS:
                raise ParameterError("transports", ",".join(self.transports),
                                     "a comma list of " + ",".join(TRANSPORTS))
        if len(set(self.transports)) != len(self.transports):
            raise ParameterError("transports", ",".join(self.transports), "each transport at most once")

    # --- construction from text ---------------------------------------------------
    def with_overrides(self, values: Mapping[str, Any]) -> "Scenario":
        """A new scenario with *values* applied. Values may be typed (from TOML or
        Python) or strings (from ``--set``); unknown names raise ParameterError."""
        changes = {name: _coerce(name, value) for name, value in values.items()}
        try:
            return dataclasses.replace(self, **changes)
        except ParameterError as exc:
            # A limit between two parameters: name the one the caller changed.
            partner = _PARTNERS.get(exc.name)
            if exc.name not in changes and partner in changes:
                new = dataclasses.replace(self, **{k: v for k, v in changes.items() if k != partner})
                raise ParameterError(partner, _show(changes[partner]), _PARTNER_ALLOWED[partner].format(
                    **{exc.name: _show(getattr(new, exc.name))})) from None
            raise

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
        rows = []
        for f in dataclasses.fields(Scenario):
            default = f.default
            if isinstance(default, tuple):
                default = ",".join(default)
            rows.append({"name": f.name, "default": default, "unit": f.metadata["unit"],
                         "allowed": f.metadata["allowed"], "meaning": f.metadata["doc"],
                         "source": f.metadata["source"]})
        return rows


_TYPES: dict[str, type] = {
    f.name: (tuple if f.name == "transports" else type(f.default)) for f in dataclasses.fields(Scenario)
}
PARAMETER_NAMES: tuple[str, ...] = tuple(_TYPES)
_PARTNERS = {"warmup_s": "duration_s", "group_size": "clients", "crashed_servers": "servers"}
_PARTNER_ALLOWED = {"duration_s": "a number > 0 and > warmup_s ({warmup_s})",
                    "clients": "an integer >= 2 and >= group_size ({group_size})",
                    "servers": "an integer >= 1 and >= crashed_servers ({crashed_servers})"}
_INFINITE_OK = {"downtime_s"}


def _show(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(name: str, value: Any) -> Any:
    if name not in _TYPES:
        raise ParameterError(name, _show(value) if not isinstance(value, (dict, list)) else repr(value),
                             "unknown parameter; known: " + ", ".join(PARAMETER_NAMES))
    want = _TYPES[name]
    meta_allowed = {f.name: f.metadata["allowed"] for f in dataclasses.fields(Scenario)}[name]
    if not isinstance(value, str):
        if want is tuple and isinstance(value, list):
            return tuple(value)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if want is int and isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
            raise ParameterError(name, _show(value), meta_allowed)
        return value  # type checked in __post_init__
    text = value.strip()
    try:
        if want is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if want is int:
            return int(text, 10)
        if want is float:
            x = float(text)
            if math.isnan(x) or (math.isinf(x) and not (name in _INFINITE_OK and x > 0)):
                raise ValueError
            return x
        if want is tuple:
            return tuple(t.strip() for t in text.split(",") if t.strip())
        return text
    except ValueError:
        raise ParameterError(name, text, meta_allowed) from None


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``NAME=VALUE`` from ``--set``."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise ParameterError("--set", text, "NAME=VALUE with NAME one of " + ", ".join(PARAMETER_NAMES))
    return name.strip(), value
