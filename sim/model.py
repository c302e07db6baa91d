"""The discrete-event model: N clients, one transport, a cluster of connection servers, and
optionally a fault. ``chatlab compare`` runs it with one server and no fault; ``chatlab crash``
with ``servers`` servers and the scenario's fault (:mod:`sim.faults`).

Every transport shares the same workload (:mod:`sim.workload`), network (:mod:`sim.network`),
servers and CPU (:mod:`sim.cluster`), delivery design (:mod:`sim.delivery`) and message and
receipt flows (here). Pipeline of a message in the ``queue`` design::

    sender --network--> connection server (CPU: simpy.Resource of server_cores)
           --> ordered queue (queue_latency_ms) --> persistence (persist_latency_ms)
           --> ack to the sender; event appended to every recipient's log
           --> delivery service (delivery_latency_ms) --> recipient's connection

How a recipient reads its log is the transport (:mod:`sim.transports`, one class each).
Receipts ("delivered" when the recipient gets the message, "read" after a read delay) travel
back up over the recipient's transport, through the same pipeline, and down to the sender
over the sender's transport; they only move forward (:func:`chatcore.states.advance_watermark`).
"""

from __future__ import annotations

import random

import numpy as np
import simpy

from chatcore.backoff import Backoff, reconnect_seed
from chatcore.states import CONNECTION_TRANSITIONS, ConnectionState, advance_watermark, check_transition
from chatcore.wire import WireSizes, ws_frame_overhead

from .clients import DELIVERED, READ, Client, LogEvent, Proc
from .cluster import Cluster, ServiceTimes
from .delivery import DESIGNS
from .faults import run_fault
from .transports.http import LongPollExpiry
from .incident import IncidentRecorder
from .network import Network
from .params import Scenario
from .recorder import Recorder
from .transports import CLIENTS
from .workload import Workload

__all__ = ["ChatModel", "dispatch", "run_end"]


def dispatch(env: simpy.Environment, wl: Workload, flow) -> Proc:  # type: ignore[no-untyped-def]
    """Start ``flow(i)`` as a process at each message's send time."""
    for i, t in enumerate(wl.send_time.tolist()):
        if t > env.now:
            yield env.timeout(t - env.now)
        env.process(flow(i))


def run_end(sc: Scenario, transport: str, fault: bool) -> float:
    """When the run stops: past ``duration_s`` so messages sent late in the window are delivered,
    and with a fault that starts before ``duration_s``, long enough for everyone to come back."""
    end = sc.duration_s + max(sc.poll_interval_s if transport == "short_polling" else 0.0,
                              0.0) + 4 * sc.rtt_ms / 1000.0 + 1.0
    if fault and sc.crash_at_s < sc.duration_s:
        fault_end = sc.crash_at_s + sc.downtime_s
        back = (fault_end if fault_end != float("inf") else sc.crash_at_s) + sc.backoff_cap_s + sc.connect_timeout_s
        end = max(end, max(sc.duration_s, back) + 2 * sc.poll_interval_s + 5.0)
    return end


class ChatModel:
    """Build with a scenario, a transport, a workload and random streams; :meth:`run` returns
    the filled :class:`Recorder` (and, with *fault*, fills :attr:`incident`).

    *servers*: how many connection servers (``compare`` uses one); *fault*: run the scenario's
    fault; *policy*: the reconnect policy (default: the scenario's)."""

    CONNECTED = ConnectionState.CONNECTED

    def __init__(self, sc: Scenario, transport: str, wl: Workload, rngs: dict[str, np.random.Generator],
                 keep_cpu_samples: bool = False, *, servers: int = 1, fault: bool = False,
                 policy: str | None = None):
        self.sc, self.transport, self.wl = sc, transport, wl
        self.env = simpy.Environment()
        self.end_s = run_end(sc, transport, fault)
        self.rec = Recorder(sc.warmup_s, sc.duration_s, self.end_s, sc.bin_s, keep_cpu_samples)
        self.net = Network(sc.rtt_ms / 1000.0, sc.net_jitter_ms / 1000.0, rngs["jitter"])
        self.cluster = Cluster(self.env, sc, self.rec, servers,
                               ServiceTimes(sc.service_time_dist == "exponential", rngs["service"]), rngs["lb"])
        self.sizes = WireSizes.measure(sc.payload_bytes, sc.user_name_chars, sc.id_digits, sc.group_size == 2)
        ws = transport == "websocket"
        self.send_body = self.sizes.ws_send_frame if ws else self.sizes.send_request
        self.receipt_body = self.sizes.ws_receipt_frame if ws else self.sizes.receipt_request
        # The server answers a receipt with its effective watermark, shaped like the request.
        self.receipt_ack_bytes = self.sizes.receipt_request
        self.req_hdr, self.resp_hdr = sc.http_request_header_bytes, sc.http_response_header_bytes
        self.keepalive_s = sc.http_keepalive_s
        self.watermarks: dict[tuple[int, int], int] = {}  # (reader, DELIVERED/READ) -> newest message
        # Each conversation's messages in order (indices grow with send time, as ids do): a
        # receipt that moves a watermark reaches the senders of every message it passes.
        order = np.argsort(wl.conversation, kind="stable")
        bounds = np.searchsorted(wl.conversation[order], np.arange(len(wl.members) + 1))
        self.conv_msgs: list[np.ndarray] = [order[bounds[c]:bounds[c + 1]] for c in range(len(wl.members))]
        ms = 1e-3
        self.store_s = (sc.queue_latency_ms + sc.persist_latency_ms) * ms
        self.delivery_s = sc.delivery_latency_ms * ms
        self.c_poll = sc.cpu_poll_ms * ms
        self.c_lp_hold = sc.cpu_longpoll_hold_ms * ms
        self.c_lp_release = sc.cpu_longpoll_release_ms * ms
        self.c_http_send = sc.cpu_http_send_ms * ms
        self.c_http_receipt = sc.cpu_http_receipt_ms * ms
        self.c_frame_in = sc.cpu_ws_frame_in_ms * ms
        self.c_frame_out = sc.cpu_ws_frame_out_ms * ms
        self.c_handshake = sc.cpu_handshake_ms * ms
        self.c_ping = sc.cpu_ping_ms * ms
        self.c_event = sc.cpu_per_event_ms * ms
        self.c_connect = sc.connect_cpu_ms * ms
        self.c_reject = sc.reject_cpu_ms * ms
        self.stored: set[int] = set()  # message ids stored (queue) or acknowledged (direct); fault runs only
        self.delivery_alive = True
        self.fault = fault and sc.crash_at_s < self.end_s
        self.incident = IncidentRecorder(self.rec.n_bins, sc.bin_s, sc.crash_at_s) if fault else None
        self.delivery = DESIGNS[sc.delivery_design](self)
        #: message i's flow, started at its send time (and again for a resend): the delivery design's
        self.message_flow = self.delivery.send
        self.attempt_id = 0
        self.waiting = [0] * sc.clients  # the connect attempt each client waits for
        self.lp_expiry = LongPollExpiry(self.env, sc.long_poll_timeout_s) if transport == "long_polling" else None
        cls = CLIENTS[transport]
        self.clients: list[Client] = [cls(self, i) for i in range(sc.clients)]
        if fault:  # each client its own stream, the load generator's (common random numbers)
            for c in self.clients:
                c.backoff = Backoff(policy or sc.reconnect_policy, sc.backoff_base_s, sc.backoff_cap_s,
                                    random.Random(reconnect_seed(sc.seed, c.idx)))

    @staticmethod
    def check_move(current: ConnectionState, to: ConnectionState) -> ConnectionState:
        """A client's connection moves only as ``chatcore.states.CONNECTION_TRANSITIONS`` allows."""
        return check_transition(CONNECTION_TRANSITIONS, current, to)

    def recipients(self, i: int, sender: int | None = None) -> list[Client]:
        """Message *i*'s recipients: its conversation's members but its *sender* (looked up if not given)."""
        if sender is None:
            sender = int(self.wl.sender[i])
        return [self.clients[c] for c in self.wl.members[int(self.wl.conversation[i])] if c != sender]

    def replay_bytes(self, events: list[LogEvent]) -> int:
        """Bytes a resume carries for *events*: frames on a WebSocket, one poll body otherwise."""
        size = sum(ev.size for ev in events)
        if self.transport == "websocket":
            return size + sum(ws_frame_overhead(ev.size, False) for ev in events)
        return self.sizes.poll_body(size, len(events))

    # --- flows -------------------------------------------------------------------------
    def receipts_flow(self, reader: Client, msgs: list[int], at: float) -> Proc:
        """*reader* got *msgs* (one conversation) at *at*: a delivered receipt now,
        a read receipt after the read delay, each covering all of *msgs*."""
        env = self.env
        if at > env.now:
            yield env.timeout(at - env.now)
        newest = max(msgs)  # message indices grow with send time, so with ids in a conversation
        for kind in (DELIVERED, READ):
            if kind == READ:
                yield env.timeout(float(self.wl.read_delay[newest]))
            if reader.lost:
                continue  # the session is gone: the next receipt carries the watermark
            sent = env.now
            server, session = reader.server, reader.session
            epoch = server.epoch
            arrived = yield from reader.upload(kind, self.receipt_body)
            if arrived is None:
                continue  # lost with the session
            yield self.delivery.store(server)
            if server.epoch != epoch or reader.lost:
                continue
            reader.acked(kind, arrived, session)
            # Receipts only move forward: one at or below the reader's stored watermark for
            # this status changes nothing and reaches nobody, as on the server.
            key = (reader.idx, kind)
            stored = self.watermarks.get(key)
            effective, moved = advance_watermark(stored, newest)
            if not moved:
                continue
            self.watermarks[key] = effective
            prev = -1 if stored is None else stored
            # As the server (store.writes, _targets): to whoever sent a message the watermark
            # just passed, (prev, newest] in the conversation, not only the messages this
            # receipt was sent for (a read receipt overtaken by a later batch's covers both).
            conv = self.conv_msgs[int(self.wl.conversation[newest])]
            passed = conv[np.searchsorted(conv, prev, "right"):np.searchsorted(conv, newest, "right")]
            last_of: dict[int, int] = {}
            for i, s in zip(passed.tolist(), self.wl.sender[passed].tolist()):
                if s != reader.idx:
                    last_of[s] = i  # in order: the sender's newest passed message
            for s in sorted(last_of):
                # One event per sender: up_to covers all of its messages; latency is tracked
                # for the newest one.
                yield from self.delivery.publish((self.clients[s],), kind, last_of[s], self.sizes.receipt_event,
                                                 sent, server)

    def run(self) -> Recorder:
        env = self.env
        for c in self.clients:
            p = env.process(c.run())
            if c.pushes:
                c.proc = p  # type: ignore[attr-defined]
        env.process(dispatch(env, self.wl, self.message_flow))
        if self.fault:
            env.process(run_fault(self))
        env.run(until=self.end_s)
        for c in self.clients:
            c.finish(self.end_s)
        if self.incident is not None:
            inc = self.incident
            inc.sess_end.extend([self.end_s] * (len(inc.sess_start) - len(inc.sess_end)))
            inc.backlog_end.extend([self.end_s] * (len(inc.backlog_start) - len(inc.backlog_end)))
        return self.rec

