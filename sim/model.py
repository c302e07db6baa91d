"""The discrete-event model: one server, N clients, one transport.

The three transports share everything but client and server behaviour: the
same workload (:mod:`sim.workload`), the same network object
(:mod:`sim.network`), the same server pipeline and CPU. Pipeline of a message::

    sender --network--> connection server (CPU: simpy.Resource of server_cores)
           --> ordered queue (queue_latency_ms) --> persistence (persist_latency_ms)
           --> ack to the sender; event appended to every recipient's log
           --> delivery service (delivery_latency_ms) --> recipient's connection

How a recipient reads its log is the transport:

* short polling: each client polls every ``poll_interval_s`` at its own phase;
  a poll returns every event in its log. An event waits for the next poll.
* long polling: the client always has one request held at the server; the
  delivery service wakes it, the response carries every pending event, and the
  client re-requests at once. An event that arrives while no request is held
  waits for the next request, which returns at once.
* WebSocket: one connection per client, opened once (handshake); the delivery
  service pushes each event as a frame; the server pings every
  ``ws_heartbeat_s``.

Receipts ("delivered" when the recipient gets the message, "read" after a read
delay) travel back up over the recipient's transport, through the same
pipeline, and down to the sender over the sender's transport.
"""

from __future__ import annotations

from collections import deque
from typing import Generator, Iterable

import numpy as np
import simpy

from chatcore.wire import WireSizes, ws_frame_overhead

from .cpu import Cpu
from .network import Link, Network
from .params import Scenario
from .recorder import Recorder
from .workload import Workload

MSG, DELIVERED, READ = 0, 1, 2
_STATUS = {DELIVERED: "delivered", READ: "read"}

Proc = Generator[simpy.Event, object, None]
Upload = Generator[simpy.Event, object, float]


class LogEvent:
    """One event in a user's log: a message or a receipt."""

    __slots__ = ("kind", "msg", "size", "available", "sent")

    def __init__(self, kind: int, msg: int, size: int, available: float, sent: float):
        self.kind, self.msg, self.size, self.available, self.sent = kind, msg, size, available, sent


class Server:
    """Connection-server CPU plus the pipeline stages' latencies."""

    def __init__(self, env: simpy.Environment, sc: Scenario, rec: Recorder, rng: np.random.Generator):
        self.env, self.rec = env, rec
        self.cpu = Cpu(env, capacity=sc.server_cores)
        self.exponential = sc.service_time_dist == "exponential"
        self._rng = rng
        self._pool: list[float] = []
        self.store_s = (sc.queue_latency_ms + sc.persist_latency_ms) / 1000.0
        self.delivery_s = sc.delivery_latency_ms / 1000.0

    def _unit(self) -> float:
        if not self._pool:
            self._pool = self._rng.exponential(1.0, 8192).tolist()
        return self._pool.pop()

    def work(self, op: str, cost_s: float) -> Proc:
        """Hold one core for *cost_s* (FIFO among waiting operations)."""
        if cost_s <= 0.0:
            return
        if self.exponential:
            cost_s *= self._unit()
        env = self.env
        arrival = env.now
        req = self.cpu.acquire()
        if req is not None:  # every core busy: wait in the FIFO queue
            yield req
        start = env.now
        yield env.timeout(cost_s)
        self.cpu.free(req)
        self.rec.cpu(op, arrival, start, cost_s)


class HttpConnection:
    """Keep-alive bookkeeping of one client's HTTP connection: it closes after
    ``http_keepalive_s`` idle, and the next request opens a new one."""

    __slots__ = ("opened", "idle_since", "busy")

    def __init__(self) -> None:
        self.opened = -1.0
        self.idle_since = 0.0
        self.busy = 0

    def acquire(self, now: float, keepalive: float, rec: Recorder) -> bool:
        """Use the connection for a request sent at *now*; True if it had to be opened."""
        new = False
        if self.opened < 0.0:
            new = True
        elif self.busy == 0 and now - self.idle_since > keepalive:
            rec.connection(self.opened, self.idle_since + keepalive)
            new = True
        if new:
            self.opened = now
        self.busy += 1
        return new

    def release(self, now: float) -> None:
        self.busy -= 1
        if self.busy == 0:
            self.idle_since = now

    def close(self, end: float, keepalive: float, rec: Recorder) -> None:
        if self.opened >= 0.0:
            closes = end if self.busy else min(end, self.idle_since + keepalive)
            rec.connection(self.opened, max(closes, self.opened))


class HttpPool:
    """A client's keep-alive connections for uploads (sends and receipts).

    HTTP/1.1 carries one request at a time on a connection, and the client can reuse it
    only once the response has arrived, so an upload that finds every connection busy
    opens another and pays the TCP connect. An idle one is reused longest-idle first
    (aiohttp's pool since 3.11, which the reference client uses), and one idle longer than
    ``http_keepalive_s`` is closed. Connections are not told apart: which one a request
    takes does not change how many are open at any time."""

    __slots__ = ("idle", "busy")

    def __init__(self) -> None:
        self.idle: list[tuple[float, float]] = []  # (free at the client since, opened)
        self.busy: list[float] = []  # opened times of the connections carrying a request

    def acquire(self, now: float, keepalive: float, rec: Recorder) -> bool:
        """Take a connection for a request sent at *now*; True if it had to be opened."""
        expired = [c for c in self.idle if now - c[0] > keepalive]
        if expired:
            for since, opened in expired:
                rec.connection(opened, since + keepalive)  # timed out while idle
            self.idle = [c for c in self.idle if now - c[0] <= keepalive]
        free = [c for c in self.idle if c[0] <= now]  # not those whose answer is still on the way
        if free:
            longest_idle = min(free)
            self.idle.remove(longest_idle)
            self.busy.append(longest_idle[1])
            return False
        self.busy.append(now)
        return True

    def release(self, free_at: float) -> None:
        """The response to a request arrives at the client at *free_at*."""
        self.idle.append((free_at, self.busy.pop()))

    def close(self, end: float, keepalive: float, rec: Recorder) -> None:
        for opened in self.busy:
            rec.connection(opened, end)
        for since, opened in self.idle:
            rec.connection(opened, max(opened, min(end, since + keepalive)))


class Client:
    """What every transport's client shares: its log at the server, receiving
    events and sending receipts."""

    __slots__ = ("m", "idx", "inbox")

    def __init__(self, model: "ChatModel", idx: int):
        self.m = model
        self.idx = idx
        self.inbox: list[LogEvent] = []  # events in the log not yet read by this client

    # --- server side: the client's event log ---------------------------------------
    def log(self, ev: LogEvent) -> bool:
        """Append *ev* to this user's log. True if the delivery service should push it."""
        self.inbox.append(ev)
        return False

    def push(self, ev: LogEvent) -> Proc:
        """Delivery service -> this client's connection."""
        return
        yield  # pragma: no cover  (a generator with nothing to do)

    # --- client side ----------------------------------------------------------------
    def received(self, events: Iterable[LogEvent], at: float) -> None:
        """The client has *events* at time *at* (possibly in the future of now)."""
        m = self.m
        msgs = None
        for ev in events:
            if ev.kind == MSG:
                m.rec.delivery(ev.msg, self.idx, ev.available, at)
                if msgs is None:
                    msgs = [ev.msg]
                else:
                    msgs.append(ev.msg)
            else:
                m.rec.receipt(ev.msg, _STATUS[ev.kind], ev.sent, at)
        if msgs is not None and m.sc.receipts:
            m.env.process(m.receipts_flow(self, msgs, at))

    # --- transport-specific: subclasses implement --------------------------------------
    def upload(self, kind: int, body: int) -> Upload:
        """Carry a send (kind=MSG) or a receipt to the server and through its CPU;
        return the time it reached the server."""
        raise NotImplementedError  # pragma: no cover - abstract

    def acked(self, kind: int, arrived: float) -> None:
        """The server answers the upload (after the durable append)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def run(self) -> Proc:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, end: float) -> None:
        pass


class HttpClient(Client):
    """Polls on one keep-alive connection; sends messages and receipts as POSTs from a pool
    of them (:class:`HttpPool`)."""

    __slots__ = ("upload_pool", "recv_conn", "polling_since")

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.upload_pool = HttpPool()  # sends and receipts
        self.recv_conn = HttpConnection()  # polls: one at a time
        self.polling_since = -1.0  # arrival of the poll the server is working on or holding

    def upload(self, kind: int, body: int) -> Upload:
        m = self.m
        env = m.env
        new = self.upload_pool.acquire(env.now, m.keepalive_s, m.rec)
        delay = m.net.delay() + (m.net.connect_delay() if new else 0.0)
        yield env.timeout(delay)
        now = env.now
        if kind == MSG:
            m.rec.up("send", now, m.req_hdr, body)
            cost = m.c_http_send
        else:
            m.rec.up("receipt", now, m.req_hdr, body)
            cost = m.c_http_receipt
        yield from m.server.work("send" if kind == MSG else "receipt",
                                 cost + (m.c_handshake if new else 0.0))
        return now

    def acked(self, kind: int, arrived: float) -> None:
        m = self.m
        now = m.env.now
        m.rec.down("send" if kind == MSG else "receipt", now, m.resp_hdr,
                   m.sizes.ack if kind == MSG else m.receipt_ack_bytes)
        m.rec.held(arrived, now)
        self.upload_pool.release(now + m.net.delay())  # reusable once the answer reaches the client

    def finish(self, end: float) -> None:
        if self.polling_since >= 0.0:  # still held when the run ends
            self.m.rec.held(self.polling_since, end)
        self.upload_pool.close(end, self.m.keepalive_s, self.m.rec)
        self.recv_conn.close(end, self.m.keepalive_s, self.m.rec)

    def respond(self, name: str, arrived: float) -> list[LogEvent]:
        """Write a poll response with every pending event; return the events."""
        m = self.m
        now = m.env.now
        events = self.inbox
        self.inbox = []
        size = 0
        for ev in events:
            size += ev.size
        m.rec.down(name, now, m.resp_hdr, m.sizes.poll_body(size, len(events)))
        m.rec.poll_response(now, len(events))
        m.rec.held(arrived, now)
        self.polling_since = -1.0
        self.recv_conn.release(now)
        return events


class ShortPollingClient(HttpClient):
    __slots__ = ()

    def run(self) -> Proc:
        # The hot loop of the whole model (a poll per client per interval): the CPU
        # step and the bookkeeping are written out here rather than called, which
        # keeps a poll within 2x a bare SimPy loop (`make bench`).
        m = self.m
        env, net, rec, server = m.env, m.net, m.rec, m.server
        cpu, timeout = server.cpu, env.timeout
        interval = m.sc.poll_interval_s
        keepalive = m.keepalive_s
        c_poll, c_event, c_handshake, req_hdr = m.c_poll, m.c_event, m.c_handshake, m.req_hdr
        resp_hdr, poll_body = m.resp_hdr, m.sizes.poll_body
        exponential = server.exponential
        conn = self.recv_conn
        next_poll = float(m.wl.start_time[self.idx] + m.wl.poll_phase[self.idx] * interval)
        while True:
            now = env.now
            send_at = next_poll if next_poll > now else now
            new = conn.acquire(send_at, keepalive, rec)
            arrive = send_at + net.delay() + (net.connect_delay() if new else 0.0)
            yield timeout(arrive - now)
            self.polling_since = arrive
            req = cpu.acquire()
            if req is not None:
                yield req
            start = env.now
            # the poll reads the log when its CPU work starts, and pays for what it reads
            events, self.inbox = self.inbox, []
            cost = c_poll + len(events) * c_event + (c_handshake if new else 0.0)
            if exponential:
                cost *= server._unit()
            yield timeout(cost)
            cpu.free(req)
            # the response: every event read (HttpClient.respond, written out)
            now = env.now
            size = 0
            for ev in events:
                size += ev.size
            rec.poll("poll", arrive, start, cost, now, req_hdr, resp_hdr, poll_body(size, len(events)),
                     len(events))
            self.polling_since = -1.0
            conn.release(now)
            received_at = now + net.delay()
            if events:
                self.received(events, received_at)
            next_poll += interval
            if next_poll < received_at:  # never two polls outstanding
                next_poll = received_at


class LongPollingClient(HttpClient):
    __slots__ = ("waiter",)

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.waiter: simpy.Event | None = None

    def push(self, ev: LogEvent) -> Proc:
        self.wake()
        return
        yield  # pragma: no cover

    def wake(self) -> None:
        """The delivery service answers the held request, if one is held."""
        w = self.waiter
        if w is not None and not w.triggered:
            w.succeed()

    def log(self, ev: LogEvent) -> bool:
        self.inbox.append(ev)
        return self.waiter is not None

    def run(self) -> Proc:
        m = self.m
        env, net, rec, server = m.env, m.net, m.rec, m.server
        cpu, timeout = server.cpu, env.timeout
        keepalive = m.keepalive_s
        c_event = m.c_event
        conn = self.recv_conn
        expiry = m.lp_expiry
        yield timeout(m.wl.start_time[self.idx])
        travel = 0.0  # time the previous response spends on its way back, before the next request
        while True:
            new = conn.acquire(env.now + travel, keepalive, rec)
            yield timeout(travel + net.delay() + (net.connect_delay() if new else 0.0))
            arrived = self.polling_since = env.now
            rec.up("longpoll", arrived, m.req_hdr, 0)
            # Hold (or, with events waiting, hold and release at once) on one core.
            held = not self.inbox
            op = "longpoll"
            cost = m.c_lp_hold + (m.c_handshake if new else 0.0)
            if not held:
                cost += m.c_lp_release + len(self.inbox) * c_event
            while True:
                if server.exponential:
                    cost *= server._unit()
                queued = env.now
                req = cpu.acquire()
                if req is not None:
                    yield req
                start = env.now
                yield timeout(cost)
                cpu.free(req)
                rec.cpu(op, queued, start, cost)
                if not held:
                    break
                held = False
                if not self.inbox:  # wait for the delivery service or the timeout
                    waiter = self.waiter = env.event()
                    expiry.hold(env.now, waiter)
                    yield waiter
                    self.waiter = None
                op = "longpoll_release"
                cost = m.c_lp_release + len(self.inbox) * c_event
            events = self.respond("longpoll", arrived)
            travel = net.delay()
            if events:
                self.received(events, env.now + travel)


class LongPollExpiry:
    """Ends held long polls after ``long_poll_timeout_s``. Every hold lasts the same
    time, so deadlines come in the order holds start: one queue and one process
    replace a timeout event per held request (holds answered early are skipped)."""

    def __init__(self, env: simpy.Environment, hold_s: float):
        self.env, self.hold_s = env, hold_s
        self.queue: deque[tuple[float, simpy.Event]] = deque()
        self.idle: simpy.Event | None = None
        env.process(self._run())

    def hold(self, now: float, waiter: simpy.Event) -> None:
        self.queue.append((now + self.hold_s, waiter))
        if self.idle is not None and not self.idle.triggered:
            self.idle.succeed()

    def _run(self) -> Proc:
        env, queue = self.env, self.queue
        while True:
            while queue and queue[0][1].triggered:
                queue.popleft()
            if not queue:
                self.idle = env.event()
                yield self.idle
                self.idle = None
                continue
            deadline, waiter = queue[0]
            if deadline > env.now:
                yield env.timeout(deadline - env.now)
            while queue and queue[0][0] <= env.now:
                _, w = queue.popleft()
                if not w.triggered:
                    w.succeed()


class WebSocketClient(Client):
    __slots__ = ("connected", "open", "up_link", "down_link", "opened")

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.open = False  # the server has accepted the connection
        self.connected: simpy.Event = model.env.event()  # the client has the 101 answer
        self.up_link = Link()
        self.down_link = Link()
        self.opened = -1.0

    def log(self, ev: LogEvent) -> bool:
        if self.open:
            return True
        self.inbox.append(ev)  # replayed when the connection opens
        return False

    def push(self, ev: LogEvent) -> Proc:
        m = self.m
        env, server = m.env, m.server
        cost = m.c_frame_out
        if cost > 0.0:  # Server.work, written out: one push per event per recipient
            if server.exponential:
                cost *= server._unit()
            queued = env.now
            req = server.cpu.acquire()
            if req is not None:
                yield req
            start = env.now
            yield env.timeout(cost)
            server.cpu.free(req)
            m.rec.cpu("ws_event", queued, start, cost)
        now = env.now
        m.rec.down("ws_event", now, ws_frame_overhead(ev.size, False), ev.size)
        self.received((ev,), m.net.arrival(now, self.down_link))

    def upload(self, kind: int, body: int) -> Upload:
        m = self.m
        env = m.env
        if not self.connected.triggered:
            yield self.connected
        yield env.timeout(m.net.arrival(env.now, self.up_link) - env.now)
        name = "ws_send" if kind == MSG else "ws_receipt"
        arrived = env.now
        m.rec.up(name, arrived, ws_frame_overhead(body, True), body)
        yield from m.server.work(name, m.c_frame_in)
        return arrived

    def acked(self, kind: int, arrived: float) -> None:
        if kind == MSG:  # receipts are not acknowledged on a WebSocket
            m = self.m
            size = m.sizes.ws_ack_frame
            m.rec.down("ws_ack", m.env.now, ws_frame_overhead(size, False), size)

    def run(self) -> Proc:
        m = self.m
        env, net, rec, server = m.env, m.net, m.rec, m.server
        yield env.timeout(m.wl.start_time[self.idx])
        self.opened = env.now
        yield env.timeout(net.connect_delay() + net.delay())
        rec.up("handshake", env.now, m.sc.ws_handshake_request_bytes, 0)
        yield from server.work("handshake", m.c_handshake)
        rec.down("handshake", env.now, m.sc.ws_handshake_response_bytes, 0)
        self.open = True
        connected = self.connected
        env.timeout(net.arrival(env.now, self.down_link) - env.now).callbacks.append(
            lambda _e: connected.succeed())  # the client can send once the answer arrives
        # Replay what the log got before the connection opened, in order.
        backlog, self.inbox = self.inbox, []
        for ev in backlog:
            yield from self.push(ev)
        heartbeat = m.sc.ws_heartbeat_s
        ping = ws_frame_overhead(0, False)
        pong = ws_frame_overhead(0, True)
        while True:
            yield env.timeout(heartbeat)
            yield from server.work("ping", m.c_ping)
            rec.down("ping", env.now, ping, 0)
            # The pong reaches the server one round trip later; counted now (same bin).
            rec.up("pong", env.now, pong, 0)

    def finish(self, end: float) -> None:
        if self.opened >= 0.0:
            self.m.rec.connection(self.opened, end)


CLIENTS = {"short_polling": ShortPollingClient, "long_polling": LongPollingClient,
           "websocket": WebSocketClient}


def dispatch(env: simpy.Environment, wl: Workload, flow) -> Proc:
    """Start ``flow(i)`` as a process at each message's send time (shared with ``sim.crash``)."""
    for i, t in enumerate(wl.send_time.tolist()):
        if t > env.now:
            yield env.timeout(t - env.now)
        env.process(flow(i))


class ChatModel:
    """Build with a scenario, a transport, a workload and random streams; :meth:`run`
    returns the filled :class:`Recorder`."""

    def __init__(self, sc: Scenario, transport: str, wl: Workload,
                 rngs: dict[str, np.random.Generator], keep_cpu_samples: bool = False):
        self.sc, self.transport, self.wl = sc, transport, wl
        self.env = simpy.Environment()
        # Run past duration_s so messages sent late in the window are delivered.
        self.end_s = sc.duration_s + max(sc.poll_interval_s if transport == "short_polling" else 0.0,
                                         0.0) + 4 * sc.rtt_ms / 1000.0 + 1.0
        self.rec = Recorder(sc.warmup_s, sc.duration_s, self.end_s, sc.bin_s, keep_cpu_samples)
        self.net = Network(sc.rtt_ms / 1000.0, sc.net_jitter_ms / 1000.0, rngs["jitter"])
        self.server = Server(self.env, sc, self.rec, rngs["service"])
        self.sizes = WireSizes.measure(sc.payload_bytes, sc.user_name_chars, sc.id_digits, sc.group_size == 2)
        # The server answers a receipt with its effective watermark, shaped like the request.
        self.receipt_ack_bytes = self.sizes.receipt_request
        self.req_hdr, self.resp_hdr = sc.http_request_header_bytes, sc.http_response_header_bytes
        self.keepalive_s = sc.http_keepalive_s
        self.watermarks: dict[tuple[int, int], int] = {}  # (reader, DELIVERED/READ) -> newest message
        ms = 1e-3
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
        self.lp_expiry = LongPollExpiry(self.env, sc.long_poll_timeout_s) if transport == "long_polling" else None
        cls = CLIENTS[transport]
        self.clients: list[Client] = [cls(self, i) for i in range(sc.clients)]

    # --- flows -------------------------------------------------------------------------
    def publish(self, targets: Iterable[Client], kind: int, msg: int, size: int, sent: float) -> Proc:
        """Append an event to each target's log, then let the delivery service push it."""
        now = self.env.now
        to_push = []
        for c in targets:
            ev = LogEvent(kind, msg, size, now, sent)
            if c.log(ev):
                to_push.append((c, ev))
        if to_push:
            yield self.env.timeout(self.server.delivery_s)
            if self.transport == "long_polling":
                for c, _ in to_push:
                    c.wake()  # type: ignore[attr-defined]
            else:
                for c, ev in to_push:
                    yield from c.push(ev)

    def message_flow(self, i: int) -> Proc:
        wl = self.wl
        sender = self.clients[int(wl.sender[i])]
        sent = self.env.now
        started = float(wl.start_time[sender.idx])
        if started > sent:  # the user's app is not running yet: it sends once it starts
            yield self.env.timeout(started - sent)
        body = self.sizes.ws_send_frame if self.transport == "websocket" else self.sizes.send_request
        arrived = yield from sender.upload(MSG, body)
        yield self.env.timeout(self.server.store_s)
        sender.acked(MSG, arrived)
        members = wl.members[int(wl.conversation[i])]
        targets = [self.clients[c] for c in members if c != sender.idx]
        yield from self.publish(targets, MSG, i, self.sizes.message_event, sent)

    def receipts_flow(self, reader: Client, msgs: list[int], at: float) -> Proc:
        """*reader* got *msgs* (one conversation) at *at*: a delivered receipt now,
        a read receipt after the read delay, each covering all of *msgs*."""
        env = self.env
        if at > env.now:
            yield env.timeout(at - env.now)
        body = self.sizes.ws_receipt_frame if self.transport == "websocket" else self.sizes.receipt_request
        senders = sorted({int(self.wl.sender[i]) for i in msgs})
        newest = max(msgs)  # message indices grow with send time, so with ids in a conversation
        for kind in (DELIVERED, READ):
            if kind == READ:
                yield env.timeout(float(self.wl.read_delay[newest]))
            sent = env.now
            arrived = yield from reader.upload(kind, body)
            yield env.timeout(self.server.store_s)
            reader.acked(kind, arrived)
            # Receipts only move forward (chatcore.states): one at or below the reader's stored
            # watermark for this status changes nothing and reaches nobody, as on the server.
            key = (reader.idx, kind)
            prev = self.watermarks.get(key, -1)
            if newest <= prev:
                continue
            self.watermarks[key] = newest
            for s in senders:
                # One event per sender: up_to covers all of its messages; latency is tracked
                # for the newest one.
                last = max(i for i in msgs if int(self.wl.sender[i]) == s)
                if last > prev:
                    yield from self.publish((self.clients[s],), kind, last, self.sizes.receipt_event, sent)

    def run(self) -> Recorder:
        env = self.env
        for c in self.clients:
            env.process(c.run())
        env.process(dispatch(env, self.wl, self.message_flow))
        env.run(until=self.end_s)
        for c in self.clients:
            c.finish(self.end_s)
        return self.rec
