"""Crash and reconnect model: a cluster of connection servers, a fault, and
every client finding its way back.

What is modelled (``docs/CRASH.md`` has every assumption):

* ``servers`` connection servers, each with its own CPU (``simpy.Resource`` of
  ``server_cores``), behind a load balancer with sticky sessions: a client keeps
  its server while it lives and is reassigned to a random live one when it fails.
* Shared components: the ordered queue and persistence (``queue_latency_ms``,
  ``persist_latency_ms``), the delivery service (``delivery_latency_ms``) and a
  presence store (refresh every ``presence_heartbeat_s``, TTL ``presence_ttl_s``).
* A fault at ``crash_at_s`` for ``downtime_s``: connection servers crash, the
  delivery service crashes, or a fraction of clients is partitioned away.
* Clients notice by their transport's own means (a failed poll, a broken long
  poll, a missed heartbeat), back off with ``chatcore.backoff``, reconnect (each
  connect costs ``connect_cpu_ms`` and may time out or be refused by admission
  control), resume from their cursor, resend unacknowledged messages, and drop
  duplicates by message id.
* ``delivery_design``: ``queue`` (durable before acknowledged; nothing acknowledged
  is lost) or ``direct`` (acknowledged at once, kept in a connection server's
  memory until delivered; a crash loses what it held).

Pure like the rest of ``sim``: it returns data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np
import pandas as pd
import simpy

from chatcore.backoff import Backoff
from chatcore.wire import WireSizes, ws_frame_overhead

from .cpu import Cpu
from .model import dispatch
from .network import Network
from .params import Scenario
from chatcore.stats import LATENCY_KEYS, step_profile
from .workload import Workload, draw, streams

Proc = Generator[simpy.Event, Any, Any]

#: The least time a refused connect attempt takes (the client's own work), so that a zero
#: round trip and a zero backoff cannot loop without simulated time passing.
MIN_ATTEMPT_S = 0.001


class CServer:
    """One connection server: a CPU that a crash wipes, and an admission bucket."""

    def __init__(self, model: "CrashModel", idx: int):
        self.m, self.idx = model, idx
        self.alive = True
        self.epoch = 0
        self.cpu = Cpu(model.env, model.sc.server_cores)
        rate = model.sc.max_connects_per_s
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.token_t = 0.0
        self.busy = [0.0] * model.n_bins
        # direct design: events held in this server's memory, per recipient
        self.held: dict[int, list[int]] = {}

    def admit(self, now: float) -> bool:
        """Token bucket of ``max_connects_per_s`` (burst = one second's worth)."""
        if self.rate <= 0:
            return True
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.token_t) * self.rate)
        self.token_t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def work(self, cost_s: float) -> Proc:
        """Hold a core for *cost_s*; True if the server survived it."""
        epoch, cpu, env = self.epoch, self.cpu, self.m.env
        if cost_s <= 0.0:
            return self.alive and self.epoch == epoch
        req = cpu.acquire()
        if req is not None:
            yield req
        start = env.now
        yield env.timeout(cost_s)
        cpu.free(req)
        if self.epoch != epoch:
            return False
        self._account(start, cost_s)
        return self.alive

    def _account(self, start: float, cost_s: float) -> None:
        """Add busy time to the bins it spans."""
        w, busy = self.m.sc.bin_s, self.busy
        end = start + cost_s
        b = int(start / w)
        while b < len(busy):
            lo, hi = max(start, b * w), min(end, (b + 1) * w)
            if hi > lo:
                busy[b] += hi - lo
            if (b + 1) * w >= end:
                return
            b += 1

    def crash(self) -> None:
        self.alive = False
        self.epoch += 1
        self.cpu = Cpu(self.m.env, self.m.sc.server_cores)  # queued work dies with it

    def restart(self) -> None:
        self.alive = True
        self.tokens = max(1.0, self.rate)
        self.token_t = self.m.env.now


class CClient:
    __slots__ = ("idx", "server", "session", "connected", "broken", "backoff", "log", "seq_of", "cursor",
                 "seen", "outbox", "next_poll", "lp_sent", "last_ping", "waiter", "connected_at",
                 "offline_at", "attempt", "lost_session_at", "affected", "reconnected_at")

    def __init__(self, idx: int, server: CServer, backoff: Backoff):
        self.idx = idx
        self.server = server
        self.session = 0
        self.connected = False
        self.broken: simpy.Event | None = None
        self.backoff = backoff
        self.log: list[int] = []          # queue design: the durable event log (message ids)
        self.seq_of: dict[int, int] = {}
        self.cursor = 0                   # events of the log seen, in order
        self.seen: set[int] = set()
        self.outbox: list[int] = []       # messages sent but not acknowledged: resent on reconnect
        self.next_poll = 0.0
        self.lp_sent = 0.0
        self.last_ping = 0.0
        self.waiter: simpy.Event | None = None
        self.connected_at = 0.0
        self.offline_at = math.inf        # when contacts see this user offline (presence)
        self.attempt = 0                  # id of the connect attempt the client waits for
        self.lost_session_at = math.inf
        self.affected = False
        self.reconnected_at = math.inf


@dataclass
class CrashResult:
    """Tables and summary of one (transport, reconnect policy) run."""

    transport: str
    reconnect_policy: str
    scenario: Scenario
    summary: dict[str, Any]
    bins: pd.DataFrame
    messages: pd.DataFrame
    servers: pd.DataFrame = field(repr=False)


class CrashModel:
    def __init__(self, sc: Scenario, transport: str, policy: str, wl: Workload,
                 rngs: dict[str, np.random.Generator]):
        self.sc, self.transport, self.policy, self.wl = sc, transport, policy, wl
        self.env = simpy.Environment()
        fault_end = sc.crash_at_s + sc.downtime_s
        self.end_s = max(sc.duration_s, (fault_end if math.isfinite(fault_end) else sc.crash_at_s)
                         + sc.backoff_cap_s + sc.connect_timeout_s) + 2 * sc.poll_interval_s + 5.0
        self.n_bins = int(math.ceil(self.end_s / sc.bin_s)) + 1
        self.net = Network(sc.rtt_ms / 1000.0, sc.net_jitter_ms / 1000.0, rngs["jitter"])
        self.lb_rng = rngs["lb"]
        self.servers = [CServer(self, i) for i in range(sc.servers)]
        brng = rngs["backoff"]
        self.clients = [CClient(i, self.servers[i % sc.servers],
                                Backoff(policy, sc.backoff_base_s, sc.backoff_cap_s, brng))
                        for i in range(sc.clients)]
        self.sizes = WireSizes.measure(sc.payload_bytes, sc.user_name_chars, sc.id_digits, sc.group_size == 2)
        ms = 1e-3
        self.c_send = (sc.cpu_ws_frame_in_ms if transport == "websocket" else sc.cpu_http_send_ms) * ms
        self.c_poll, self.c_event = sc.cpu_poll_ms * ms, sc.cpu_per_event_ms * ms
        self.c_hold, self.c_release = sc.cpu_longpoll_hold_ms * ms, sc.cpu_longpoll_release_ms * ms
        self.c_push, self.c_ping = sc.cpu_ws_frame_out_ms * ms, sc.cpu_ping_ms * ms
        self.c_connect, self.c_reject = sc.connect_cpu_ms * ms, sc.reject_cpu_ms * ms
        self.store_s = (sc.queue_latency_ms + sc.persist_latency_ms) * ms
        self.delivery_s = sc.delivery_latency_ms * ms
        self.stored: set[int] = set()       # message ids durably stored (queue) or acknowledged (direct)
        self.delivery_alive = True
        self.backlog: list[tuple[int, int]] = []   # (message, recipient) waiting for the delivery service
        self.partitioned: set[int] = set()
        self.fault_active = False
        # --- records ---
        nb = self.n_bins
        self.b_attempts, self.b_accepted = [0] * nb, [0] * nb
        self.b_rejected, self.b_timed_out, self.b_wasted = [0] * nb, [0] * nb, [0] * nb
        self.b_replay_bytes = [0] * nb
        self.sess_start: list[float] = []
        self.sess_end: list[float] = []
        self.backlog_start: list[float] = []
        self.backlog_end: list[float] = []
        self.d_msg: list[int] = []
        self.d_recipient: list[int] = []
        self.d_received: list[float] = []
        self.d_via: list[str] = []
        self.duplicates = 0
        self.recovered = 0
        self.resends = 0
        self.resends_deduplicated = 0
        self.lost_in_memory = 0            # direct: held by a server that crashed
        self.lost_to_dead_server = 0       # direct: handed to a server that was already dead
        self.flaps = 0
        self.flapped_users: set[int] = set()

    # --- helpers -----------------------------------------------------------------------
    def _bin(self, t: float) -> int:
        return min(int(t / self.sc.bin_s), self.n_bins - 1)

    def reachable(self, c: CClient) -> bool:
        """Packets between *c* and its server get through."""
        return c.server.alive and c.idx not in self.partitioned

    def lb_pick(self, c: CClient) -> CServer | None:
        if c.server.alive:
            return c.server
        live = [s for s in self.servers if s.alive]
        if not live:
            return None
        return live[int(self.lb_rng.integers(len(live)))]

    # --- connecting ----------------------------------------------------------------------
    def client_main(self, c: CClient) -> Proc:
        env, sc = self.env, self.sc
        yield env.timeout(float(self.wl.start_time[c.idx]))
        c.next_poll = float(self.wl.poll_phase[c.idx]) * sc.poll_interval_s
        first = True
        while True:
            if not first:
                yield env.timeout(c.backoff.next_delay())
            while not (yield from self.try_connect(c)):
                yield env.timeout(c.backoff.next_delay())
            c.backoff.reset()
            first = False
            self.on_connected(c)
            env.process(self.activity(c, c.session))
            assert c.broken is not None
            yield c.broken
            c.connected = False
            self.sess_end.append(env.now)
            if c.waiter is not None and not c.waiter.triggered:
                c.waiter.succeed()

    def try_connect(self, c: CClient) -> Proc:
        env, sc, net = self.env, self.sc, self.net
        now = env.now
        self.b_attempts[self._bin(now)] += 1
        server = self.lb_pick(c)
        if server is None:  # the load balancer has no live server: refused after a round trip
            yield env.timeout(max(net.rtt_s, MIN_ATTEMPT_S))
            self.b_rejected[self._bin(env.now)] += 1
            return False
        c.attempt += 1
        answer = env.event()
        env.process(self.server_connect(server, c, c.attempt, answer))
        yield answer | env.timeout(sc.connect_timeout_s)
        if not answer.triggered:
            c.attempt += 1  # stop waiting: a late answer finds nobody
            self.b_timed_out[self._bin(env.now)] += 1
            return False
        if answer.value != "accepted":
            self.b_rejected[self._bin(env.now)] += 1
            if env.now - now < MIN_ATTEMPT_S:  # an attempt never takes zero time, even on rtt_ms=0
                yield env.timeout(MIN_ATTEMPT_S - (env.now - now))
            return False
        self.b_accepted[self._bin(env.now)] += 1
        c.server = server
        c.session += 1
        c.connected = True
        c.broken = env.event()
        return True

    def server_connect(self, s: CServer, c: CClient, attempt: int, answer: simpy.Event) -> Proc:
        env, net = self.env, self.net
        epoch = s.epoch
        if c.idx in self.partitioned:
            return  # nothing gets through
        yield env.timeout(net.connect_delay() + net.delay())
        if s.epoch != epoch or not s.alive or c.idx in self.partitioned:
            return
        if not s.admit(env.now):
            if not (yield from s.work(self.c_reject)):
                return
            status = "rejected"
        else:
            if not (yield from s.work(self.c_connect)):
                return
            status = "accepted"
        yield env.timeout(net.delay())
        if c.attempt == attempt and not answer.triggered:
            answer.succeed(status)
        elif status == "accepted":
            self.b_wasted[self._bin(env.now)] += 1  # the client gave up: the work was wasted

    def on_connected(self, c: CClient) -> None:
        """Presence, resume from the cursor, resend the outbox."""
        env, sc = self.env, self.sc
        now = env.now
        c.connected_at = now
        self.sess_start.append(now)
        if c.affected and now > c.offline_at and now >= sc.crash_at_s:
            self.flaps += 1  # contacts saw offline, now online again
            self.flapped_users.add(c.idx)
        c.offline_at = math.inf
        if c.affected and c.reconnected_at == math.inf:
            c.reconnected_at = now
        c.last_ping = now
        if sc.delivery_design == "queue":
            missed = [m for m in c.log[c.cursor:] if m not in c.seen]
            if missed:
                env.process(self.replay(c, missed))
        else:
            for s in self.servers:
                held = s.held.pop(c.idx, None)
                if held and s.alive:
                    for m in held:
                        env.process(self.direct_forward(s, s.epoch, c, m, recovered=True))
        if c.outbox:
            pending, c.outbox = c.outbox, []
            for m in pending:
                if now >= sc.crash_at_s:
                    self.resends += 1  # (before the fault: sent while still connecting, not a resend)
                env.process(self.message_flow(m))

    def replay(self, c: CClient, msgs: list[int]) -> Proc:
        """The resume answer: every missed event, in order, in one response / a burst of frames,
        read from persistence on the client's new server's CPU."""
        s = c.server
        cost = self.c_poll + len(msgs) * (self.c_event + (self.c_push if self.transport == "websocket" else 0.0))
        if not (yield from s.work(cost)):
            return
        size = self.sizes.message_event
        if self.transport == "websocket":
            nbytes = len(msgs) * (size + ws_frame_overhead(size, False))
        else:
            nbytes = self.sc.http_response_header_bytes + self.sizes.poll_body(len(msgs) * size, len(msgs))
        self.b_replay_bytes[self._bin(self.env.now)] += nbytes
        at = self.env.now + self.net.delay()
        for m in msgs:
            self.receive(c, m, at, "replay")

    # --- failure detection ---------------------------------------------------------------
    def break_session(self, c: CClient, at: float) -> None:
        """The client will notice at *at* that its session is gone."""
        broken, session = c.broken, c.session

        def fire(_e: simpy.Event) -> None:
            if c.session == session and broken is not None and not broken.triggered:
                broken.succeed()

        self.env.timeout(max(0.0, at - self.env.now)).callbacks.append(fire)

    def detection_time(self, c: CClient, t: float, silent: bool) -> float:
        """When *c* notices that its server stopped at *t* (docs/CRASH.md, 'Detection')."""
        sc, one_way = self.sc, self.net.one_way_s
        T = sc.poll_interval_s
        if self.transport == "short_polling":
            slot = c.next_poll if c.next_poll >= t else c.next_poll + T * math.ceil((t - c.next_poll) / T)
            return slot + (sc.request_timeout_s if silent else self.net.rtt_s)
        if not silent:
            return t + one_way  # the reset reaches the client
        if self.transport == "long_polling":
            return max(t, c.lp_sent + sc.long_poll_timeout_s + sc.request_timeout_s)
        return max(t, c.last_ping + sc.ws_heartbeat_s + sc.request_timeout_s)

    def lose_session(self, c: CClient, t: float, silent: bool) -> None:
        c.affected = True
        c.lost_session_at = t
        hb = self.sc.presence_heartbeat_s
        last_refresh = c.connected_at + math.floor((t - c.connected_at) / hb) * hb
        c.offline_at = last_refresh + self.sc.presence_ttl_s
        self.break_session(c, self.detection_time(c, t, silent))

    # --- faults ---------------------------------------------------------------------------
    def fault(self) -> Proc:
        env, sc = self.env, self.sc
        yield env.timeout(sc.crash_at_s)
        self.fault_active = True
        now = env.now
        if sc.fault == "servers":
            crashed = self.servers[:sc.crashed_servers]
            for s in crashed:
                self._lose_memory(s)
                s.crash()
            for c in self.clients:
                if c.connected and not c.server.alive:
                    self.lose_session(c, now, silent=sc.crash_mode == "silent")
        elif sc.fault == "delivery":
            self.delivery_alive = False
        else:
            k = max(1, int(round(sc.partition_fraction * sc.clients)))
            self.partitioned = set(range(sc.clients - k, sc.clients))
            for i in self.partitioned:
                c = self.clients[i]
                if c.connected:
                    self.lose_session(c, now, silent=True)
                    # the server notices the missed heartbeats too and closes cleanly: offline at once then
                    c.offline_at = min(c.offline_at, now + sc.ws_heartbeat_s + sc.request_timeout_s)
        if not math.isfinite(sc.downtime_s):
            return
        yield env.timeout(sc.downtime_s)
        self.fault_active = False
        if sc.fault == "servers":
            for s in self.servers[:sc.crashed_servers]:
                s.restart()
        elif sc.fault == "delivery":
            self.delivery_alive = True
            backlog, self.backlog = self.backlog, []
            for m, r in backlog:
                self.backlog_end.append(env.now)
                env.process(self.push(self.clients[r], m))
        else:
            self.partitioned = set()

    def _lose_memory(self, s: CServer) -> None:
        """Direct design: what a crashing server held in memory is gone."""
        for r, msgs in s.held.items():
            self.lost_in_memory += len([m for m in msgs if m not in self.clients[r].seen])
        s.held = {}

    # --- steady activity while connected ----------------------------------------------------
    def activity(self, c: CClient, session: int) -> Proc:
        env, sc, net = self.env, self.sc, self.net
        T = sc.poll_interval_s
        while c.session == session and c.connected:
            s = c.server
            if self.transport == "short_polling":
                now = env.now
                while c.next_poll < now:
                    c.next_poll += T
                yield env.timeout(c.next_poll - now)
                c.next_poll += T
                if c.session != session or not c.connected:
                    return
                if not self.reachable(c):
                    continue  # the poll fails: detection was scheduled by the fault
                yield env.timeout(net.delay())
                if not (yield from s.work(self.c_poll)):
                    continue
                self.read_log(c, s, env.now + net.delay(), "poll")
            elif self.transport == "long_polling":
                c.lp_sent = env.now
                yield env.timeout(net.delay())
                if c.session != session or not c.connected:
                    return
                if not self.reachable(c):
                    yield c.broken
                    return
                if not (yield from s.work(self.c_hold)):
                    yield c.broken
                    return
                if not self.has_pending(c, s):
                    c.waiter = env.event()
                    yield c.waiter | env.timeout(sc.long_poll_timeout_s)
                    c.waiter = None
                    if c.session != session or not c.connected or not self.reachable(c):
                        return
                if not (yield from s.work(self.c_release)):
                    yield c.broken
                    return
                travel = net.delay()
                self.read_log(c, s, env.now + travel, "longpoll")
                yield env.timeout(travel)
            else:  # WebSocket: the server pings; pushes go through push()
                yield env.timeout(sc.ws_heartbeat_s)
                if c.session != session or not c.connected:
                    return
                if self.reachable(c) and (yield from s.work(self.c_ping)):
                    c.last_ping = env.now + net.delay()

    def has_pending(self, c: CClient, s: CServer) -> bool:
        if self.sc.delivery_design == "queue":
            return any(m not in c.seen for m in c.log[c.cursor:])
        return bool(s.held.get(c.idx))

    def read_log(self, c: CClient, s: CServer, at: float, via: str) -> None:
        """A poll's answer: every event after the cursor (queue) or held for the client (direct)."""
        if self.sc.delivery_design == "queue":
            msgs = [m for m in c.log[c.cursor:] if m not in c.seen]
        else:
            msgs = s.held.pop(c.idx, [])
        for m in msgs:
            self.receive(c, m, at, via)

    def wake(self, c: CClient) -> None:
        if c.waiter is not None and not c.waiter.triggered:
            c.waiter.succeed()

    # --- messages ------------------------------------------------------------------------------
    def message_flow(self, i: int) -> Proc:
        env, net = self.env, self.net
        c = self.clients[int(self.wl.sender[i])]
        if not c.connected:
            c.outbox.append(i)
            return
        s, epoch = c.server, c.server.epoch
        yield env.timeout(net.delay())
        if not self.reachable(c) or s.epoch != epoch:
            c.outbox.append(i)  # no acknowledgement: the client resends after reconnecting
            return
        if not (yield from s.work(self.c_send)):
            c.outbox.append(i)
            return
        if self.sc.delivery_design == "queue":
            yield env.timeout(self.store_s)
            if i in self.stored:
                self.resends_deduplicated += 1  # idempotency key: the resend finds it stored
                return
            self.stored.add(i)
            if s.epoch != epoch:
                c.outbox.append(i)  # stored, but the ack died with the server: resent, then deduplicated
            for r in self.recipients(i):
                self.append_log(r, i)
        else:
            if i in self.stored:
                self.resends_deduplicated += 1
                return
            self.stored.add(i)  # acknowledged from memory
            for r in self.recipients(i):
                if r.connected and r.server.alive and r.idx not in self.partitioned:
                    env.process(self.direct_forward(s, epoch, r, i))
                else:
                    s.held.setdefault(r.idx, []).append(i)

    def recipients(self, i: int) -> list[CClient]:
        sender = int(self.wl.sender[i])
        return [self.clients[m] for m in self.wl.members[int(self.wl.conversation[i])] if m != sender]

    def append_log(self, r: CClient, i: int) -> None:
        r.seq_of[i] = len(r.log)
        r.log.append(i)
        if not self.delivery_alive:
            self.backlog.append((i, r.idx))
            self.backlog_start.append(self.env.now)
            return
        self.env.process(self.push(r, i))

    def push(self, r: CClient, i: int, reclaim: bool = False) -> Proc:
        """Queue design: the delivery service hands the event to the recipient's connection."""
        env = self.env
        yield env.timeout(self.delivery_s)
        if not r.connected:
            return  # offline: the log keeps it for the resume
        s = r.server
        if not s.alive or r.idx in self.partitioned:
            # pushed into a dead connection: never confirmed, reclaimed after the visibility timeout
            env.timeout(self.sc.visibility_timeout_s).callbacks.append(
                lambda _e: env.process(self.push(r, i, reclaim=True)))
            return
        if self.transport == "websocket":
            if not (yield from s.work(self.c_push)):
                return
            self.receive(r, i, env.now + self.net.delay(), "reclaim" if reclaim else "push")
        else:
            self.wake(r)  # a poll reads the log; a held long poll is answered now

    def direct_forward(self, s: CServer, epoch: int, r: CClient, i: int, recovered: bool = False) -> Proc:
        """Direct design: the sender's server forwards to the recipient's server, in memory."""
        env = self.env
        yield env.timeout(self.delivery_s)
        if s.epoch != epoch:
            self.lost_in_memory += 1  # the sender's server died with it in flight
            return
        R = r.server
        if not r.connected or not R.alive or r.idx in self.partitioned:
            if R.alive and not r.connected:
                s.held.setdefault(r.idx, []).append(i)  # hold it until the recipient is back
            else:
                self.lost_to_dead_server += 1  # its server is dead, or the client is cut off
            return
        if self.transport == "websocket":
            if not (yield from R.work(self.c_push)):
                self.lost_to_dead_server += 1
                return
            self.receive(r, i, env.now + self.net.delay(), "replay" if recovered else "push")
        else:
            R.held.setdefault(r.idx, []).append(i)
            self.wake(r)

    def receive(self, c: CClient, i: int, at: float, via: str) -> None:
        if i in c.seen:
            self.duplicates += 1  # dropped by the client's de-duplication
            return
        c.seen.add(i)
        seq = c.seq_of.get(i)
        if seq is not None:
            while c.cursor < len(c.log) and c.log[c.cursor] in c.seen:
                c.cursor += 1
        if via in ("replay", "reclaim") and c.affected:
            self.recovered += 1  # missed because of the fault, delivered by the resume or a reclaim
        self.d_msg.append(i)
        self.d_recipient.append(c.idx)
        self.d_received.append(at)
        self.d_via.append(via)

    # --- run ------------------------------------------------------------------------------------
    def run(self) -> None:
        env = self.env
        for c in self.clients:
            env.process(self.client_main(c))
        env.process(dispatch(env, self.wl, self.message_flow))
        env.process(self.fault())
        env.run(until=self.end_s)
        for c in self.clients:
            if c.connected:
                self.sess_end.append(self.end_s)
        for _ in self.backlog:
            self.backlog_end.append(self.end_s)


def run_crash(scenario: Scenario, transport: str, policy: str | None = None) -> CrashResult:
    """Simulate the scenario's fault for one transport and reconnect policy."""
    policy = policy or scenario.reconnect_policy
    rngs = streams(scenario.seed)
    wl = draw(scenario, rngs)
    m = CrashModel(scenario, transport, policy, wl, rngs)
    m.run()
    return _build(m)


def _build(m: CrashModel) -> CrashResult:
    sc, wl = m.sc, m.wl
    nb = m.n_bins
    edges = np.arange(nb + 1) * sc.bin_s
    t0 = sc.crash_at_s
    # sessions as the clients see them: [connected, noticed the loss)
    starts = np.asarray(m.sess_start, dtype=float)
    ends = np.asarray(m.sess_end, dtype=float)
    # the connected count only needs the multiset of session starts and ends
    _, _, connected = step_profile(starts, ends, 0.0, m.end_s, edges)
    _, _, backlog = step_profile(np.asarray(m.backlog_start), np.asarray(m.backlog_end), 0.0, m.end_s, edges)
    bins = pd.DataFrame({
        "transport": m.transport, "reconnect_policy": m.policy, "t_s": edges[:-1],
        "connected_clients": connected,
        "connect_attempts_per_s": np.asarray(m.b_attempts) / sc.bin_s,
        "accepted_per_s": np.asarray(m.b_accepted) / sc.bin_s,
        "rejected_per_s": np.asarray(m.b_rejected) / sc.bin_s,
        "timed_out_per_s": np.asarray(m.b_timed_out) / sc.bin_s,
        "wasted_connects_per_s": np.asarray(m.b_wasted) / sc.bin_s,
        "queue_backlog": backlog,
        "replay_bytes": np.asarray(m.b_replay_bytes),
    })
    for s in m.servers:
        bins[f"cpu_server_{s.idx}"] = np.asarray(s.busy) / (sc.server_cores * sc.bin_s)

    msg = np.asarray(m.d_msg, dtype=np.int64)
    sent = wl.send_time[msg] if msg.size else np.zeros(0)
    recv = np.asarray(m.d_received, dtype=float)
    messages = pd.DataFrame({
        "transport": m.transport, "reconnect_policy": m.policy, "msg": msg,
        "recipient": np.asarray(m.d_recipient, dtype=np.int64), "sent_at": sent, "received_at": recv,
        "latency_ms": (recv - sent) * 1000.0, "via": pd.Series(m.d_via, dtype="string"),
    }).sort_values(["msg", "recipient"], kind="stable").reset_index(drop=True)

    affected = [c for c in m.clients if c.affected]
    back = [c.reconnected_at for c in affected]
    all_back = bool(affected) and all(math.isfinite(t) for t in back)
    ttr = (max(back) - t0) if all_back else None
    incident_end = t0 + max(sc.downtime_s if math.isfinite(sc.downtime_s) else 0.0, ttr or 0.0)
    # expected deliveries: every (message, recipient) for messages sent before the run's end
    expected = 0
    got = set(zip(messages["msg"].tolist(), messages["recipient"].tolist()))
    lost = 0
    undelivered = 0
    for i in range(wl.n_messages):
        if wl.send_time[i] > sc.duration_s:
            continue
        for r in m.recipients(i):
            expected += 1
            if (i, r.idx) not in got:
                if i in m.stored:
                    lost += 1
                else:
                    undelivered += 1  # still in the sender's outbox: not acknowledged, not lost
    inc = messages[(messages.sent_at >= t0) & (messages.sent_at <= incident_end)]
    lat = inc["latency_ms"].to_numpy()
    after = bins[bins.t_s >= t0]
    survivors = [f"cpu_server_{s.idx}" for s in m.servers[sc.crashed_servers if sc.fault == "servers" else 0:]]
    summary: dict[str, Any] = {
        "transport": m.transport,
        "reconnect_policy": m.policy,
        "delivery_design": sc.delivery_design,
        "fault": sc.fault,
        "affected_clients": len(affected),
        "reconnect_peak_per_s": float(after["connect_attempts_per_s"].max()) if len(after) else 0.0,
        "time_to_reconnect_all_s": ttr,
        "clients_not_reconnected": sum(1 for t in back if not math.isfinite(t)),
        "connect_attempts": int(sum(m.b_attempts)),
        "connects_rejected": int(sum(m.b_rejected)),
        "connects_timed_out": int(sum(m.b_timed_out)),
        "wasted_connects": int(sum(m.b_wasted)),
        "survivor_cpu_peak": float(after[survivors].max().max()) if survivors and len(after) else 0.0,
        "messages_expected_deliveries": expected,
        "messages_lost": lost,
        "messages_lost_in_memory": m.lost_in_memory,
        "messages_lost_to_dead_server": m.lost_to_dead_server,
        "messages_undelivered_unacked": undelivered,
        "messages_duplicated": m.duplicates,
        "messages_recovered": m.recovered,
        "messages_resent": m.resends,
        "resends_deduplicated": m.resends_deduplicated,
        "replay_bytes": int(sum(m.b_replay_bytes)),
        "presence_flaps": m.flaps,
        "presence_flaps_per_affected_user": (m.flaps / len(affected)) if affected else 0.0,
        "incident_latency_ms": {k: v for k, v in zip(
            LATENCY_KEYS, ([float(lat.mean()), *map(float, np.percentile(lat, [50, 95, 99])), float(lat.max())]
                           if lat.size else [None] * 5))},
        "incident_window_s": [t0, incident_end],
    }
    summary["p99_incident_latency_ms"] = summary["incident_latency_ms"]["p99"]
    servers = pd.DataFrame([{"server": s.idx, "alive_at_end": s.alive, "crashes": s.epoch} for s in m.servers])
    return CrashResult(m.transport, m.policy, sc, summary, bins, messages, servers)
