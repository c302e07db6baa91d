"""Closed forms the simulation must agree with (the tests compare them).

Each function cites where its formula comes from. Times are in seconds, rates
per second, sizes in bytes, unless a name says otherwise.
"""

from __future__ import annotations

import math

from chatcore.wire import WireSizes, ws_frame_overhead

from .params import Scenario

#: Lubbers & Greco (2010) count one "Mbps" as 2**20 bit/s.
LG_MBPS = 2 ** 20
#: Their per-poll request+response header bytes, and their per-frame WebSocket overhead.
LG_HEADER_BYTES = 871
LG_WS_FRAME_BYTES = 2


# --- short polling --------------------------------------------------------------------

def short_polling_mean_wait(poll_interval_s: float) -> float:
    """Mean time an event waits for the next poll: T/2, for a poll phase that is
    uniform relative to the event (random phase per client)."""
    return poll_interval_s / 2.0


def short_polling_wait_sd(poll_interval_s: float) -> float:
    """Standard deviation of that wait, U(0, T): T / sqrt(12)."""
    return poll_interval_s / math.sqrt(12.0)


def short_polling_requests_per_s(clients: int, poll_interval_s: float) -> float:
    """Polls per second: N / T (Van de Vyvere et al. 2020: required requests/s >=
    users / maximum acceptable latency)."""
    return clients / poll_interval_s


def lg_mbps(bytes_per_s: float) -> float:
    """Bytes per second in Lubbers & Greco's Mbps (2**20 bit/s)."""
    return bytes_per_s * 8.0 / LG_MBPS


def lubbers_greco_table(clients: tuple[int, ...] = (1_000, 10_000, 100_000)) -> list[dict[str, float]]:
    """Lubbers & Greco (2010)'s table: every client polls once a second (871 header
    bytes per poll) vs receives one WebSocket frame a second (2 bytes of framing)."""
    return [{"clients": n,
             "polling_mbps": lg_mbps(n * LG_HEADER_BYTES),
             "websocket_mbps": lg_mbps(n * LG_WS_FRAME_BYTES)} for n in clients]


def group_commit_s(sc: Scenario) -> float:
    """One group commit of its own, as the model's Committer takes it: its CPU, the commit,
    the queue append (seconds)."""
    return (sc.cpu_commit_batch_ms + sc.queue_latency_ms + sc.persist_latency_ms) / 1000.0


def fan_out_commit_s(sc: Scenario) -> float:
    """With group commit (``cpu_commit_batch_ms`` > 0) the fan-out is a commit of its own too:
    the events enter the recipients' logs that long after the delivery stage (seconds; 0 without)."""
    return group_commit_s(sc) if sc.cpu_commit_batch_ms > 0 else 0.0


def short_polling_mean_latency(sc: Scenario) -> float:
    """Mean end-to-end latency of a message under short polling at light load:
    upload + send CPU + durable append (+ with group commit, the delivery stage and the
    fan-out's commit before the event is in the log), then T/2 until the next poll reaches the
    server, that poll's CPU, and the way down. Queueing for the CPU is ignored
    (valid while utilisation is low; a write is then its own group commit)."""
    one_way = sc.rtt_ms / 2000.0
    store = group_commit_s(sc)
    if sc.cpu_commit_batch_ms > 0:
        store += sc.delivery_latency_ms / 1000.0 + fan_out_commit_s(sc)
    return (one_way + sc.cpu_http_send_ms / 1000.0 + store
            + short_polling_mean_wait(sc.poll_interval_s)
            + (sc.cpu_poll_ms + sc.cpu_per_event_ms) / 1000.0 + one_way)


# --- long polling ----------------------------------------------------------------------

def long_polling_delivery_bounds(sc: Scenario) -> tuple[float, float]:
    """(typical, worst) time from an event entering the recipient's log to the
    recipient having it, under long polling at light load (RFC 6202 section 2.2).

    Typical: a request is held, so one network transit (plus the delivery stage and
    the release CPU; with group commit the delivery stage comes before the event enters the
    log, so it is not counted again). Worst: the event arrives just after a response left:
    that response's transit, the next request's transit, then the transit of the
    response carrying the event - about three transits.
    """
    one_way = sc.rtt_ms / 2000.0
    release = (sc.cpu_longpoll_release_ms + sc.cpu_per_event_ms) / 1000.0
    stage = 0.0 if sc.cpu_commit_batch_ms > 0 else sc.delivery_latency_ms / 1000.0
    typical = stage + release + one_way
    worst = 3.0 * one_way + (sc.cpu_longpoll_hold_ms + sc.cpu_longpoll_release_ms
                             + sc.cpu_per_event_ms) / 1000.0
    return typical, worst


def pimentel_nickerson_long_polling_ok(one_way_s: float, msg_interval_s: float) -> bool:
    """Pimentel & Nickerson (2012): long polling performs about as well as WebSocket
    while the network latency stays below half the interval between messages."""
    return one_way_s < msg_interval_s / 2.0


# --- WebSocket -----------------------------------------------------------------------------

def websocket_mean_latency(sc: Scenario) -> float:
    """Mean end-to-end latency under WebSocket at light load: upload, frame CPU,
    durable append (a group commit of its own), delivery stage, the fan-out's commit (with
    group commit), push CPU, way down."""
    one_way = sc.rtt_ms / 2000.0
    return (2 * one_way + (sc.cpu_ws_frame_in_ms + sc.delivery_latency_ms + sc.cpu_ws_frame_out_ms) / 1000.0
            + group_commit_s(sc) + fan_out_commit_s(sc))


def websocket_event_overhead(payload_bytes: int, user_chars: int = 8, id_digits: int = 7,
                             one_to_one: bool = True) -> int:
    """Framing bytes of one pushed message event (RFC 6455: 2, 4 or 10 bytes)."""
    size = WireSizes.measure(payload_bytes, user_chars, id_digits, one_to_one).message_event
    return ws_frame_overhead(size, masked=False)


# --- queueing ---------------------------------------------------------------------------------

def littles_law_l(arrival_rate: float, mean_time_in_system: float) -> float:
    """Little's law: L = lambda * W."""
    return arrival_rate * mean_time_in_system


def mm1_response_time(arrival_rate: float, service_rate: float) -> float:
    """M/M/1 mean time in system: W = 1 / (mu - lambda)."""
    if arrival_rate >= service_rate:
        return math.inf
    return 1.0 / (service_rate - arrival_rate)


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (Erlang C), with
    offered load a = lambda / mu < c."""
    c, a = servers, offered_load
    if a >= c:
        return 1.0
    term, total = 1.0, 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c / (1.0 - a / c)
    return last / (total + last)


def mmc_response_time(arrival_rate: float, service_rate: float, servers: int) -> float:
    """M/M/c mean time in system: W = C(c, a) / (c*mu - lambda) + 1/mu."""
    a = arrival_rate / service_rate
    if a >= servers:
        return math.inf
    return erlang_c(servers, a) / (servers * service_rate - arrival_rate) + 1.0 / service_rate


def min_recovery_time(clients: int, accept_rate_per_s: float) -> float:
    """Reconnecting N clients cannot take less than N / accept rate."""
    return clients / accept_rate_per_s


def registry_ttl_loss(users: int, arrival_rate_per_s: float, ttl_s: float, refresh_s: float) -> tuple[float, float]:
    """Direct design, a crashed server whose *users* do not come back before their registry entries
    lapse: messages forwarded to it meanwhile are lost. Each entry was refreshed a ~ U[0, refresh_s)
    before the crash and names the dead server for max(0, ttl - a) more seconds, so the loss is
    Poisson with mean N lam E[max(0, ttl - a)] (= N lam (ttl - refresh/2) for ttl >= refresh).
    Returns (mean, sd); the mean of each user's count varies with a, which adds N lam^2 Var(max(0,
    ttl - a)) to the Poisson variance (docs/CRASH.md)."""
    if ttl_s <= 0:
        return 0.0, 0.0
    h = refresh_s
    if ttl_s >= h:
        m1, m2 = ttl_s - h / 2, (ttl_s ** 2 - ttl_s * h + h * h / 3)  # E[x], E[x^2] of x = ttl - a
    else:
        m1, m2 = ttl_s ** 2 / (2 * h), ttl_s ** 3 / (3 * h)
    mean = users * arrival_rate_per_s * m1
    var = mean + users * arrival_rate_per_s ** 2 * (m2 - m1 * m1)
    return mean, math.sqrt(var)


# --- back of the envelope: capacity from daily users (the interview's first estimate) ---------

def websocket_cpu_per_client(sc: Scenario) -> float:
    """CPU seconds per second that one online WebSocket client costs its connection server at
    steady state, counted the way the model charges them: each frame in (its sends, and the
    delivered and read receipts for what it receives) costs ``cpu_ws_frame_in_ms``; each frame
    pushed to it (messages, and the receipts for its own messages) ``cpu_ws_frame_out_ms``; one
    ping per ``ws_heartbeat_s``. A user sends ``msg_rate_per_min`` and, by symmetry, receives as
    many times ``group_size - 1``. Handshakes are excluded (one per session, not steady state).
    Queueing is ignored: valid below saturation. With group commit each frame in is counted as
    two commits of its own (its store's and its fan-out's, ``cpu_commit_batch_ms`` each): an upper
    bound, as under load writes share them."""
    r = sc.msg_rate_per_min / 60.0
    k = sc.group_size - 1
    receipts = 2 if sc.receipts else 0
    frames_in = r * (1 + receipts * k)
    frames_out = r * k * (1 + receipts)
    return (frames_in * (sc.cpu_ws_frame_in_ms + 2 * sc.cpu_commit_batch_ms) + frames_out * sc.cpu_ws_frame_out_ms) / 1000.0 \
        + sc.cpu_ping_ms / 1000.0 / sc.ws_heartbeat_s


def back_of_envelope(daily_users: int, concurrency: float, sc: Scenario, cpu_target: float = 0.7) -> dict[str, float]:
    """The interview's first estimate for *daily_users* of whom *concurrency* are online at the
    peak, each behaving as *sc* says (messages per minute, group size, receipts, payload), on
    WebSocket servers of ``sc.server_cores`` cores kept below *cpu_target* utilisation:

    * ``online``: concurrent connections at the peak (one device per user);
    * ``messages_per_s``, ``deliveries_per_s``: sends and (message, recipient) pushes at the peak;
    * ``message_bytes_per_day``: what the store grows by, counting each message once (its event
      size) at the peak rate sustained for ``active_hours`` = 24 * concurrency hours;
    * ``cpu_per_client_s``: :func:`websocket_cpu_per_client`;
    * ``clients_per_server_cpu`` and ``servers_cpu``: the CPU bound;
    * ``clients_per_server_memory_64gib`` and ``memory_gib_per_server``: ``event_loop_conn_kb``
      per connection (Centrifugo's 30 KB), against a 64 GiB machine, and at the CPU bound.

    ``chatlab capacity`` answers the same question by simulation (notebook 00 compares them)."""
    online = daily_users * concurrency
    r = sc.msg_rate_per_min / 60.0
    msgs = online * r
    cpu = websocket_cpu_per_client(sc)
    per_server = sc.server_cores * cpu_target / cpu
    event = WireSizes.measure(sc.payload_bytes, sc.user_name_chars, sc.id_digits, sc.group_size == 2).message_event
    return {
        "daily_users": float(daily_users),
        "online": online,
        "messages_per_s": msgs,
        "deliveries_per_s": msgs * (sc.group_size - 1),
        "message_bytes_per_day": msgs * 86400.0 * concurrency * event,
        "cpu_per_client_s": cpu,
        "clients_per_server_cpu": per_server,
        "servers_cpu": math.ceil(online / per_server),
        "clients_per_server_memory_64gib": 64 * 2 ** 20 / sc.event_loop_conn_kb,
        "memory_gib_per_server": per_server * sc.event_loop_conn_kb / 2 ** 20,
    }
