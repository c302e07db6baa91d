"""Every scenario parameter, as data: name, type, default, unit, what is allowed, meaning and
the source of the default, and the rules that tie parameters together.

The one definition both halves use: ``sim.Scenario`` is built from it, and so is the load
generator's configuration (``reference_server.loadgen.LoadConfig``), so a name, a limit and
an error message read the same on both sides. Errors are :class:`ParameterError`: one line,
``name=value: what is allowed``. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .backoff import POLICIES as BACKOFF_POLICIES
from .wire import MAX_MESSAGE_BODY_CHARS, TRANSPORTS


class ParameterError(ValueError):
    """A parameter's value is not allowed. ``str(err)`` is one line: ``name=value: what is allowed``."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        shown = value if isinstance(value, str) and value.isprintable() else repr(value)
        super().__init__(f"{name}={shown}: {allowed}")


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    unit: str
    allowed: str
    check: Callable[[Any], bool]
    doc: str
    source: str


def _p(name: str, typ: type, default: Any, unit: str, allowed: str, check: Callable[[Any], bool], doc: str,
       source: str) -> Param:
    return Param(name, typ, default, unit, allowed, check, doc, source)


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

#: Every parameter, in the order of ``docs/PARAMETERS.md``.
PARAMETERS: tuple[Param, ...] = (
    # --- workload -------------------------------------------------------------
    _p("clients", int, 1000, "clients", "an integer >= 2", lambda v: v >= 2,
                      "Connected chat clients (one user each).", "assumption: a small deployment"),
    _p("duration_s", float, 180.0, "s", "a number > 0", _pos,
                           "Simulated time during which messages are sent.", "assumption"),
    _p("warmup_s", float, 30.0, "s", "a number >= 0 and < duration_s", _nonneg,
                         "Initial period excluded from every rate and latency (clients connect, "
                         "long polls settle).", "> long_poll_timeout_s so long polls reach steady state"),
    _p("msg_rate_per_min", float, 2.0, "messages/min per client", "a number >= 0", _nonneg,
                                 "Poisson rate at which each client sends chat messages.",
                                 "assumption: an active conversation (one message every 30 s)"),
    _p("group_size", int, 2, "members", "an integer >= 2 and <= clients", lambda v: v >= 2,
                         "Members per conversation including the sender; 2 = one-to-one. "
                         "A message fans out to the other group_size - 1 members.", "1:1 chat"),
    _p("payload_bytes", int, 100, "bytes", f"an integer 1..{MAX_MESSAGE_BODY_CHARS}",
                            lambda v: 1 <= v <= MAX_MESSAGE_BODY_CHARS,
                            "Length of a message's text (ASCII), inside the JSON envelope (the server accepts 1 to "
                            f"{MAX_MESSAGE_BODY_CHARS} characters).",
                            "assumption: a short chat line"),
    _p("user_name_chars", int, 8, "characters", "an integer 1..32", lambda v: 1 <= v <= 32,
                              "Length of user names in the JSON bodies.", "the load generator's names (u0000001)"),
    _p("id_digits", int, 7, "digits", "an integer 1..18", lambda v: 1 <= v <= 18,
                        "Digits of message ids and cursor sequence numbers in the JSON bodies.",
                        "assumption: a server with millions of events; a fresh server has 1-3"),
    _p("read_delay_s", float, 5.0, "s", "a number >= 0", _nonneg,
                             "Mean (exponential) time between receiving a message and reading it.",
                             "assumption: the app is open"),
    _p("receipts", bool, True, "", "true or false", lambda v: True,
                        "Recipients send delivered and read receipts back to the sender.",
                        "WhatsApp-style ticks; the reference server sends them"),
    _p("seed", int, 1, "", "an integer >= 0", lambda v: v >= 0,
                   "Root of every random stream (numpy SeedSequence; a crash run's reconnect delays: "
                   "random.Random(chatcore.reconnect_seed(seed, client)), shared with the load generator).", ""),
    _p("transports", tuple, TRANSPORTS, "", "a comma list of " + ",".join(TRANSPORTS),
                                     lambda v: len(v) > 0,
                                     "Transports to simulate, each on the same workload.", "all three"),
    # --- transports -----------------------------------------------------------
    _p("poll_interval_s", float, 2.0, "s", "a number > 0", _pos,
                                "Short polling: time between a client's polls (random phase per client).",
                                "assumption: typical web chat polling; Lubbers & Greco (2010) use 1 s"),
    _p("long_poll_timeout_s", float, 30.0, "s", "a number > 0", _pos,
                                    "Long polling: the server answers an empty response after holding "
                                    "a request this long.", "RFC 6202 section 5.5 (about 30 s is safe)"),
    _p("http_keepalive_s", float, 75.0, "s", "a number >= 0", _nonneg,
                                 "An idle HTTP connection closes after this long; the next request "
                                 "pays a new TCP connection (one RTT and handshake CPU).",
                                 "aiohttp's default keepalive_timeout (the reference server)"),
    _p("http_request_header_bytes", int, 650, "bytes", "an integer >= 0", lambda v: v >= 0,
                                        "Bytes of HTTP request line and headers per request.",
                                        "Lubbers & Greco (2010): 871 bytes of request+response headers "
                                        "per poll; the 650/221 split is ours"),
    _p("http_response_header_bytes", int, 221, "bytes", "an integer >= 0", lambda v: v >= 0,
                                         "Bytes of HTTP status line and headers per response.",
                                         "Lubbers & Greco (2010), see above"),
    _p("ws_handshake_request_bytes", int, len(_RFC6455_REQUEST), "bytes", "an integer >= 0",
                                         lambda v: v >= 0, "WebSocket opening handshake, client to server.",
                                         "RFC 6455 section 1.2 sample handshake"),
    _p("ws_handshake_response_bytes", int, len(_RFC6455_RESPONSE), "bytes", "an integer >= 0",
                                          lambda v: v >= 0, "WebSocket opening handshake, server to client.",
                                          "RFC 6455 section 1.2 sample handshake"),
    _p("ws_heartbeat_s", float, 25.0, "s", "a number > 0", _pos,
                               "WebSocket: the server pings each client this often (empty ping, pong back).",
                               "Centrifugo and Socket.IO ping every 25 s"),
    _p("connect_ramp_s", float, 10.0, "s", "a number >= 0", _nonneg,
                               "Clients start at uniform random times in [0, connect_ramp_s); a message "
                               "a user sends before its client starts leaves when it starts.",
                               "assumption; keep it inside the warm-up"),
    # --- network --------------------------------------------------------------
    _p("rtt_ms", float, 100.0, "ms", "a number >= 0", _nonneg,
                       "Client-server round trip; one-way delay is rtt_ms / 2.", "assumption: mobile/continental"),
    _p("net_jitter_ms", float, 0.0, "ms", "a number >= 0", _nonneg,
                              "Mean of an exponential extra one-way delay per packet; frames on one "
                              "WebSocket stay in order.", "off by default"),
    # --- server ---------------------------------------------------------------
    _p("server_cores", int, 2, "cores", "an integer >= 1", lambda v: v >= 1,
                           "CPU cores of the connection server (a simpy.Resource of this capacity).",
                           "this project's 2-core machine"),
    _p("service_time_dist", str, "deterministic", "", "deterministic or exponential",
                                lambda v: v in ("deterministic", "exponential"),
                                "Distribution of CPU service times around their means.", ""),
    _p("cpu_poll_ms", float, 0.30, "ms", "a number >= 0", _nonneg,
                            "CPU for one short poll (parse, auth, read the event log, respond).", _PROVISIONAL),
    _p("cpu_longpoll_hold_ms", float, 0.25, "ms", "a number >= 0", _nonneg,
                                     "CPU to accept a long poll and register it as a waiter.", _PROVISIONAL),
    _p("cpu_longpoll_release_ms", float, 0.15, "ms", "a number >= 0", _nonneg,
                                        "CPU to wake a held long poll and write its response.", _PROVISIONAL),
    _p("cpu_http_send_ms", float, 0.50, "ms", "a number >= 0", _nonneg,
                                 "CPU for POST /api/messages (parse, validate, store, respond).", _PROVISIONAL),
    _p("cpu_http_receipt_ms", float, 0.35, "ms", "a number >= 0", _nonneg,
                                    "CPU for POST /api/receipts.", _PROVISIONAL),
    _p("cpu_ws_frame_in_ms", float, 0.15, "ms", "a number >= 0", _nonneg,
                                   "CPU for one client->server WebSocket frame (send or receipt).", _PROVISIONAL),
    _p("cpu_ws_frame_out_ms", float, 0.05, "ms", "a number >= 0", _nonneg,
                                    "CPU to push one event frame to a WebSocket.", _PROVISIONAL),
    _p("cpu_handshake_ms", float, 0.50, "ms", "a number >= 0", _nonneg,
                                 "CPU to accept a connection (TCP accept; WebSocket upgrade and auth).",
                                 _PROVISIONAL + "; TLS excluded"),
    _p("cpu_ping_ms", float, 0.02, "ms", "a number >= 0", _nonneg,
                            "CPU for one heartbeat (ping out, pong in).", _PROVISIONAL),
    _p("cpu_per_event_ms", float, 0.02, "ms", "a number >= 0", _nonneg,
                                 "Extra CPU per event serialised into a poll response.", _PROVISIONAL),
    _p("cpu_commit_batch_ms", float, 0.0, "ms", "a number >= 0 (0 = no group commit)", _nonneg,
                                    "Queue design: CPU per group commit, paid once per batch of writes (sends and "
                                    "receipts) and fan-outs that commit together (a write alone makes two: its own "
                                    "and its fan-out's); the cpu_http_send_ms, cpu_http_receipt_ms and "
                                    "cpu_ws_frame_in_ms costs are then the per-write part without it. 0: every write "
                                    "is stored alone and those costs include its commit.",
                                    "`chatlab calibrate`: writes one and sixteen at a time (docs/MODEL.md, "
                                    "\"Group commit\")"),
    _p("queue_latency_ms", float, 0.2, "ms", "a number >= 0", _nonneg,
                                 "Ordered queue stage: append to the stream (Redis XADD).",
                                 "redis-benchmark order of magnitude on loopback"),
    _p("persist_latency_ms", float, 1.0, "ms", "a number >= 0", _nonneg,
                                   "Persistence stage: durable append (SQLite WAL commit).",
                                   "assumption: one small WAL transaction"),
    _p("delivery_latency_ms", float, 0.5, "ms", "a number >= 0", _nonneg,
                                    "Delivery stage: the delivery service reads the stream (XREADGROUP) "
                                    "and finds the recipient's connection.", "assumption"),
    # --- memory estimate --------------------------------------------------------
    _p("thread_stack_kb", float, 1024.0, "KiB", "a number >= 0", _nonneg,
                                "Memory per open connection for a thread-per-connection server.",
                                "JVM default thread stack (-Xss) on 64-bit Linux"),
    _p("event_loop_conn_kb", float, 30.0, "KiB", "a number >= 0", _nonneg,
                                   "Memory per open connection for an event-loop server.",
                                   "Centrifugo's 1M-connection test (2020): about 30 KB per connection"),
    # --- crashes and reconnects (chatlab crash, sim.crash) ------------------------------
    _p("servers", int, 4, "servers", "an integer >= 1", lambda v: v >= 1,
                      "Connection servers behind the load balancer (sticky sessions; a client is reassigned "
                      "to a live server only when its own fails).", "assumption: a small cluster"),
    _p("fault", str, "servers", "", "servers, delivery or partition",
                    lambda v: v in ("servers", "delivery", "partition"),
                    "What fails at crash_at_s: connection servers, the delivery service, or the network "
                    "between a fraction of clients and every server.", ""),
    _p("crash_at_s", float, 60.0, "s", "a number >= 0", _nonneg, "When the fault starts.", "after warm-up"),
    _p("downtime_s", float, 30.0, "s", "a number >= 0, or inf (for good)", lambda v: v >= 0 and v == v,
                           "How long the fault lasts; inf = the crashed servers never come back.", "assumption"),
    _p("crashed_servers", int, 1, "servers", "an integer >= 1 and <= servers", lambda v: v >= 1,
                              "How many connection servers crash (fault = servers).", ""),
    _p("partition_fraction", float, 0.25, "", "a number in (0, 1]", lambda v: 0 < v <= 1,
                                   "Fraction of clients cut off (fault = partition).", ""),
    _p("crash_mode", str, "reset", "", "reset or silent", lambda v: v in ("reset", "silent"),
                         "reset: the process dies and the kernel resets its connections (long polls and "
                         "WebSockets break at once, a poll fails); silent: the host stops answering (clients "
                         "notice by request timeouts and missed heartbeats).", ""),
    _p("http_retry_once", bool, True, "", "true or false", lambda v: True,
                          "An HTTP client retries a poll broken by a reset once, at once, on a new "
                          "connection, before it backs off; behind a TCP proxy or load balancer a refused "
                          "connect is such a reset, so a refused reconnect costs two round trips.",
                          "RFC 9112, 9.3.1 (retrying idempotent requests); aiohttp 3.10+, the reference client"),
    _p("reconnect_policy", str, "full_jitter", "", "one of " + ", ".join(BACKOFF_POLICIES),
                               lambda v: v in BACKOFF_POLICIES,
                               "Client reconnect backoff (chatcore.backoff, AWS Architecture Blog naming).",
                               "AWS Architecture Blog (2015): full jitter does the least work"),
    _p("backoff_base_s", float, 1.0, "s", "a number >= 0", _nonneg, "Backoff base delay.",
                               "Socket.IO reconnectionDelay (1 s)"),
    _p("backoff_cap_s", float, 30.0, "s", "a number >= 0", _nonneg, "Backoff cap.", "assumption"),
    _p("connect_cpu_ms", float, 5.0, "ms", "a number >= 0", _nonneg,
                               "Server CPU for one (re)connect: TLS handshake, auth, session restore.",
                               "assumption: a full TLS handshake costs about 1-2 ms of CPU, auth and "
                               "session restore a few more"),
    _p("connect_timeout_s", float, 10.0, "s", "a number > 0", _pos,
                                  "A connect not answered in this long is abandoned and retried (the server "
                                  "may still spend CPU on it: wasted work).", "assumption"),
    _p("request_timeout_s", float, 10.0, "s", "a number > 0", _pos,
                                  "Client-side timeout of an HTTP request beyond its expected answer, and the "
                                  "grace after a missed heartbeat (silent crashes).", "assumption"),
    _p("max_connects_per_s", float, 0.0, "connects/s per server", "a number >= 0 (0 = no limit)", _nonneg,
                                   "Admission control: a token bucket per server; a connect over the rate is "
                                   "refused cheaply (reject_cpu_ms) and the client backs off.",
                                   "Centrifugo's connection_rate_limit"),
    _p("reject_cpu_ms", float, 0.05, "ms", "a number >= 0", _nonneg,
                              "Server CPU to refuse a connect over the admission rate.", _PROVISIONAL),
    _p("delivery_design", str, "queue", "", "queue or direct", lambda v: v in ("queue", "direct"),
                              "queue: each message is appended to the durable ordered queue and persistence "
                              "before it is acknowledged (the reference server); direct: the connection server "
                              "acknowledges at once and keeps in-flight messages in memory.", "the seed design"),
    _p("presence_ttl_s", float, 60.0, "s", "a number > 0", _pos,
                               "A user is shown offline this long after its last presence refresh.",
                               "Centrifugo: 60 s TTL with a 25 s refresh; Zulip 200 s with 60 s"),
    _p("presence_heartbeat_s", float, 25.0, "s", "a number > 0", _pos,
                                     "How often a connected user's presence is refreshed.", "Centrifugo (25 s)"),
    _p("registry_ttl_s", float, 60.0, "s", "a number >= 0 (0 = the registry learns of a death at once)", _nonneg,
                               "Session registry (user -> connection server): an entry is refreshed every "
                               "presence_heartbeat_s and, once its server dies, still names it until this long "
                               "after its last refresh; the direct design forwards to it until then.",
                               "the seed design's registry with the presence TTL (Centrifugo: 60 s)"),
    _p("visibility_timeout_s", float, 30.0, "s", "a number > 0", _pos,
                                     "Queue design: a pushed event whose push was never confirmed is reclaimed "
                                     "(XAUTOCLAIM) and pushed again after this long.", "assumption"),
    # --- output -----------------------------------------------------------------
    _p("bin_s", float, 1.0, "s", "a number > 0", _pos, "Width of the per-time-bin table's bins.", ""),

)

SPEC: dict[str, Param] = {p.name: p for p in PARAMETERS}
PARAMETER_NAMES: tuple[str, ...] = tuple(SPEC)
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}

# A limit between two parameters: when it fails, the error names the one the caller changed.
_PARTNERS = {"warmup_s": "duration_s", "group_size": "clients", "crashed_servers": "servers"}
_PARTNER_ALLOWED = {"duration_s": "a number > 0 and > warmup_s ({warmup_s})",
                    "clients": "an integer >= 2 and >= group_size ({group_size})",
                    "servers": "an integer >= 1 and >= crashed_servers ({crashed_servers})"}
_INFINITE_OK = {"downtime_s"}


def show(value: Any) -> Any:
    """A value as the user would type it (for error messages)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def check_value(name: str, value: Any) -> Any:
    """*value* if it has the parameter's type and passes its check (an int becomes a float where
    a float is wanted); ParameterError otherwise."""
    p = SPEC[name]
    want = p.type
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(value, int):
            value = float(value)
    elif want is str:
        ok = isinstance(value, str)
    else:  # transports
        ok = isinstance(value, tuple) and all(isinstance(t, str) for t in value)
    if not ok or not p.check(value):
        raise ParameterError(name, show(value), p.allowed)
    return value


def check_relations(v: Mapping[str, Any]) -> None:
    """The rules between parameters (*v* holds every parameter)."""
    if v["warmup_s"] >= v["duration_s"]:
        raise ParameterError("warmup_s", show(v["warmup_s"]), "a number >= 0 and < duration_s "
                             f"({show(v['duration_s'])})")
    if (v["duration_s"] + 600.0) / v["bin_s"] > 1e6:
        raise ParameterError("bin_s", show(v["bin_s"]), "a number > 0 giving at most 1,000,000 bins "
                             f"over the run ({show(v['duration_s'])} s plus up to 600 s of drain)")
    if v["crashed_servers"] > v["servers"]:
        raise ParameterError("crashed_servers", v["crashed_servers"],
                             f"an integer >= 1 and <= servers ({v['servers']})")
    if v["group_size"] > v["clients"]:
        raise ParameterError("group_size", v["group_size"], f"an integer >= 2 and <= clients ({v['clients']})")
    for t in v["transports"]:
        if t not in TRANSPORTS:
            raise ParameterError("transports", ",".join(v["transports"]), "a comma list of " + ",".join(TRANSPORTS))
    if len(set(v["transports"])) != len(v["transports"]):
        raise ParameterError("transports", ",".join(v["transports"]), "each transport at most once")


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter checked, then the rules between them; returns the values as stored."""
    out = {name: check_value(name, values[name]) for name in PARAMETER_NAMES}
    check_relations(out)
    return out


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(name: str, value: Any) -> Any:
    """A value from TOML, Python or ``--set`` text, in the parameter's type (checked later by
    :func:`check_value`). Unknown names raise ParameterError."""
    if name not in SPEC:
        raise ParameterError(name, show(value) if not isinstance(value, (dict, list)) else repr(value),
                             "unknown parameter; known: " + ", ".join(PARAMETER_NAMES))
    p = SPEC[name]
    want = p.type
    if not isinstance(value, str):
        if want is tuple and isinstance(value, list):
            return tuple(value)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if want is int and isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
            raise ParameterError(name, show(value), p.allowed)
        return value
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
        raise ParameterError(name, text, p.allowed) from None


def with_overrides(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """*base* (every parameter, valid) with *changes* coerced and applied, validated; a broken rule
    between two parameters names the one the caller changed."""
    typed = {name: coerce(name, value) for name, value in changes.items()}
    try:
        return validate({**base, **typed})
    except ParameterError as exc:
        partner = _PARTNERS.get(exc.name)
        if exc.name not in typed and partner is not None and partner in typed:
            rest = validate({**base, **{k: v for k, v in typed.items() if k != partner}})
            raise ParameterError(partner, show(typed[partner]), _PARTNER_ALLOWED[partner].format(
                **{exc.name: show(rest[exc.name])})) from None
        raise


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``NAME=VALUE`` from ``--set``."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise ParameterError("--set", text, "NAME=VALUE with NAME one of " + ", ".join(PARAMETER_NAMES))
    return name.strip(), value


def parameter_table() -> list[dict[str, Any]]:
    """One row per parameter: name, default, unit, allowed, meaning, source."""
    return [{"name": p.name, "default": ",".join(p.default) if isinstance(p.default, tuple) else p.default,
             "unit": p.unit, "allowed": p.allowed, "meaning": p.doc, "source": p.source} for p in PARAMETERS]
