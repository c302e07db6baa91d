"""One client class per transport: how it reads its log, how it uploads, and how it notices a
dead session.

* short polling: each client polls every ``poll_interval_s`` at its own phase; a poll returns
  every event in its log. An event waits for the next poll. A poll into a dead server fails:
  the client notices one round trip later (reset) or after ``request_timeout_s`` (silent).
* long polling: the client always has one request held at the server; the delivery service
  wakes it, the response carries every pending event, and the client re-requests at once. An
  event that arrives while no request is held waits for the next request, which returns at
  once. A reset breaks the held request at once; a silent server is noticed when the client's
  own timeout (``long_poll_timeout_s + request_timeout_s`` after sending) expires.
* WebSocket: one connection per client, opened once (handshake); the delivery service pushes
  each event as a frame; the server pings every ``ws_heartbeat_s``. A reset breaks the
  connection at once; a silent server is noticed when no ping came for ``ws_heartbeat_s +
  request_timeout_s``.

Uploads (sends and receipts) are POSTs from a pool of keep-alive connections
(:class:`sim.http.HttpPool`) for the HTTP transports and frames for WebSocket.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import simpy

from chatcore.states import ConnectionState as CS
from chatcore.wire import ws_frame_overhead

from .clients import MSG, Client, LogEvent, Proc, Step, Upload
from .cluster import Server
from .http import HttpConnection, HttpPool
from .network import Link

if TYPE_CHECKING:
    from .model import ChatModel


class HttpClient(Client):
    """Polls on one keep-alive connection; sends messages and receipts as POSTs from a pool
    of them (:class:`HttpPool`). Its session begins when the user's app starts."""

    __slots__ = ("upload_pool", "recv_conn", "polling_since")

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.upload_pool = HttpPool()  # sends and receipts
        self.recv_conn = HttpConnection()  # polls: one at a time
        self.polling_since = -1.0  # arrival of the poll the server is working on or holding

    def start(self) -> None:
        """The app starts: the first request opens the session (no separate connect)."""
        self.move(CS.CONNECTING)
        self.move(CS.CONNECTED)
        self.begin(self.server, float(self.m.wl.start_time[self.idx]))
        self.m.delivery.opened(self)

    def upload(self, kind: int, body: int) -> Upload:
        m = self.m
        env = m.env
        server = self.server
        new = self.upload_pool.acquire(env.now, m.keepalive_s, m.rec)
        delay = m.net.delay() + (m.net.connect_delay() if new else 0.0)
        yield env.timeout(delay)
        if self.lost:
            return None  # into a dead server or a cut network: no answer
        now = env.now
        if kind == MSG:
            m.rec.up("send", now, m.req_hdr, body)
            cost = m.c_http_send
        else:
            m.rec.up("receipt", now, m.req_hdr, body)
            cost = m.c_http_receipt
        ok = yield from server.work("send" if kind == MSG else "receipt", cost + (m.c_handshake if new else 0.0))
        return now if ok else None

    def acked(self, kind: int, arrived: float, session: int) -> None:
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

    def on_lost(self, t: float) -> None:
        if self.polling_since >= 0.0:  # the held or served request ends with the server
            self.m.rec.held(self.polling_since, t)
            self.polling_since = -1.0

    def end_session(self, t: float) -> None:
        m = self.m
        self.upload_pool.close(t, m.keepalive_s, m.rec)
        self.recv_conn.close(t, m.keepalive_s, m.rec)
        self.upload_pool = HttpPool()
        self.recv_conn = HttpConnection()

    def resume(self) -> None:
        # the reconnect opened a connection: the next poll goes out on it
        now = self.m.env.now
        self.recv_conn.opened = now
        self.recv_conn.idle_since = now
        super().resume()

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
    __slots__ = ("next_poll",)
    via = "poll"

    def run(self) -> Proc:
        m = self.m
        interval = m.sc.poll_interval_s
        next_poll = float(m.wl.start_time[self.idx] + m.wl.poll_phase[self.idx] * interval)
        self.start()
        while True:
            yield from self.polls(next_poll)
            yield from self.reconnect()
            next_poll = m.env.now  # the first poll of the new session is the resume

    def polls(self, next_poll: float) -> Proc:
        """Poll on schedule until the session is lost and the client has noticed."""
        # The hot loop of the whole model (a poll per client per interval): the CPU
        # step and the bookkeeping are written out here rather than called, which
        # keeps a poll within 2x a bare SimPy loop (`make bench`).
        m = self.m
        env, net, rec, server = m.env, m.net, m.rec, self.server
        cpu, timeout = server.cpu, env.timeout
        busy, bin_s = server.busy, server.bin_s
        interval = m.sc.poll_interval_s
        keepalive = m.keepalive_s
        c_poll, c_event, c_handshake, req_hdr = m.c_poll, m.c_event, m.c_handshake, m.req_hdr
        resp_hdr, poll_body = m.resp_hdr, m.sizes.poll_body
        exponential = server.exponential
        conn = self.recv_conn
        while True:
            self.next_poll = next_poll
            now = env.now
            send_at = next_poll if next_poll > now else now
            new = conn.acquire(send_at, keepalive, rec)
            arrive = send_at + net.delay() + (net.connect_delay() if new else 0.0)
            yield timeout(arrive - now)
            if self.lost:
                break
            self.polling_since = arrive
            req = cpu.acquire()
            if req is not None:
                yield req
            start = env.now
            # the poll reads the log when its CPU work starts, and pays for what it reads
            events, self.inbox = self.inbox, []
            cost = c_poll + len(events) * c_event + (c_handshake if new else 0.0)
            if exponential:
                cost *= server.unit()
            yield timeout(cost)
            cpu.free(req)
            if self.lost:  # the server died (or the network was cut) while it served the poll
                m.delivery.dropped(events)
                break
            busy[int(start / bin_s)] += cost
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
        yield from self.wait_notice()

    def detect_time(self, t: float, silent: bool) -> float:
        """The next poll at or after *t* fails: a reset answers within a round trip, a silent
        server lets it time out."""
        sc = self.m.sc
        T = sc.poll_interval_s
        nxt = self.next_poll
        slot = nxt if nxt >= t else nxt + T * math.ceil((t - nxt) / T)
        return slot + (sc.request_timeout_s if silent else self.m.net.rtt_s)


class LongPollingClient(HttpClient):
    __slots__ = ("waiter", "lp_sent")
    via = "longpoll"

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.waiter: simpy.Event | None = None
        self.lp_sent = 0.0

    def wake(self) -> None:
        """The delivery service answers the held request, if one is held."""
        w = self.waiter
        if w is not None and not w.triggered:
            w.succeed()

    on_notice = wake  # a reset (or the client's own timeout) ends the held request

    def log(self, ev: LogEvent) -> bool:
        self.inbox.append(ev)
        return self.waiter is not None

    def run(self) -> Proc:
        m = self.m
        yield m.env.timeout(m.wl.start_time[self.idx])
        self.start()
        while True:
            yield from self.polls()
            yield from self.reconnect()

    def polls(self) -> Proc:
        """Hold a request at the server, again and again, until the session is lost and noticed."""
        m = self.m
        env, net, rec, server = m.env, m.net, m.rec, self.server
        cpu, timeout = server.cpu, env.timeout
        busy, bin_s = server.busy, server.bin_s
        keepalive = m.keepalive_s
        c_event = m.c_event
        conn = self.recv_conn
        expiry = m.lp_expiry
        assert expiry is not None
        travel = 0.0  # time the previous response spends on its way back, before the next request
        while True:
            self.lp_sent = env.now + travel
            new = conn.acquire(self.lp_sent, keepalive, rec)
            yield timeout(travel + net.delay() + (net.connect_delay() if new else 0.0))
            if self.lost:
                break
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
                    cost *= server.unit()
                queued = env.now
                req = cpu.acquire()
                if req is not None:
                    yield req
                start = env.now
                yield timeout(cost)
                cpu.free(req)
                if self.lost:
                    break
                busy[int(start / bin_s)] += cost
                rec.cpu(op, queued, start, cost)
                if not held:
                    break
                held = False
                if not self.inbox:  # wait for the delivery service or the timeout
                    waiter = self.waiter = env.event()
                    expiry.hold(env.now, waiter)
                    yield waiter
                    self.waiter = None
                    if self.lost:
                        break
                op = "longpoll_release"
                cost = m.c_lp_release + len(self.inbox) * c_event
            if self.lost:
                break
            events = self.respond("longpoll", arrived)
            travel = net.delay()
            if events:
                self.received(events, env.now + travel)
        yield from self.wait_notice()

    def detect_time(self, t: float, silent: bool) -> float:
        sc = self.m.sc
        if not silent:
            return t + self.m.net.one_way_s  # the reset reaches the client
        return max(t, self.lp_sent + sc.long_poll_timeout_s + sc.request_timeout_s)


class WebSocketClient(Client):
    __slots__ = ("connected", "up_link", "down_link", "opened", "last_ping", "sleeping", "proc")
    via = "push"
    pushes = True

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.connected: simpy.Event = model.env.event()  # the client has the 101 answer
        self.up_link = Link()
        self.down_link = Link()
        self.opened = -1.0
        self.last_ping = 0.0
        self.sleeping = False
        self.proc: simpy.Process | None = None

    def log(self, ev: LogEvent) -> bool:
        reg = self.m.cluster.registry
        if reg.server[self.idx] is not None and self.m.env.now < reg.until[self.idx]:
            return True  # the registry knows a connection: the delivery service pushes
        self.inbox.append(ev)  # replayed when the connection opens
        return False

    def push(self, ev: LogEvent, server: Server) -> Step:
        """Delivery service -> this client's connection on *server*; False if it never got there."""
        m = self.m
        env = m.env
        cost = m.c_frame_out
        if cost > 0.0:  # Server.work, written out: one push per event per recipient
            if server.exponential:
                cost *= server.unit()
            queued = env.now
            epoch = server.epoch
            cpu = server.cpu
            req = cpu.acquire()
            if req is not None:
                yield req
            start = env.now
            yield env.timeout(cost)
            cpu.free(req)
            if server.epoch != epoch:
                return False
            server.busy[int(start / server.bin_s)] += cost
            m.rec.cpu("ws_event", queued, start, cost)
        if self.lost or server is not self.server or not server.alive:
            return False  # a dead connection: the frame goes nowhere
        now = env.now
        m.rec.down("ws_event", now, ws_frame_overhead(ev.size, False), ev.size)
        self.received((ev,), m.net.arrival(now, self.down_link))
        return True

    def upload(self, kind: int, body: int) -> Upload:
        m = self.m
        env = m.env
        if not self.connected.triggered:
            yield self.connected
        server = self.server
        yield env.timeout(m.net.arrival(env.now, self.up_link) - env.now)
        if self.lost:
            return None
        name = "ws_send" if kind == MSG else "ws_receipt"
        arrived = env.now
        m.rec.up(name, arrived, ws_frame_overhead(body, True), body)
        ok = yield from server.work(name, m.c_frame_in)
        return arrived if ok else None

    def acked(self, kind: int, arrived: float, session: int) -> None:
        if kind == MSG:  # receipts are not acknowledged on a WebSocket
            m = self.m
            size = m.sizes.ws_ack_frame
            m.rec.down("ws_ack", m.env.now, ws_frame_overhead(size, False), size)

    def run(self) -> Proc:
        m = self.m
        env = m.env
        yield env.timeout(m.wl.start_time[self.idx])
        self.move(CS.CONNECTING)
        if (yield from self.handshake()):
            yield from self.heartbeats()
        while True:
            yield from self.reconnect()
            yield from self.heartbeats()

    def handshake(self) -> Step:
        """The first connect: TCP, the upgrade on the client's home server, then the replay of
        what its log got before the connection opened. False if the server was dead."""
        m = self.m
        env, net, rec, server = m.env, m.net, m.rec, self.server
        self.opened = env.now
        yield env.timeout(net.connect_delay() + net.delay())
        if self.lost or self.cut or not server.alive:
            self.opened = -1.0
            yield from self.wait_notice()
            return False
        rec.up("handshake", env.now, m.sc.ws_handshake_request_bytes, 0)
        if not (yield from server.work("handshake", m.c_handshake)):
            self.opened = -1.0
            yield from self.wait_notice()
            return False
        rec.down("handshake", env.now, m.sc.ws_handshake_response_bytes, 0)
        self.move(CS.CONNECTED)
        self.begin(server)
        self.last_ping = env.now
        connected = self.connected

        def answered(_e: simpy.Event) -> None:  # the client can send once the answer arrives
            if not connected.triggered:
                connected.succeed()

        env.timeout(net.arrival(env.now, self.down_link) - env.now).callbacks.append(answered)
        m.delivery.opened(self)
        # Replay what the log got before the connection opened, in order.
        backlog, self.inbox = self.inbox, []
        for ev in backlog:
            yield from self.push(ev, server)
        return True

    def heartbeats(self) -> Proc:
        """The server pings every ``ws_heartbeat_s`` until the session is lost and noticed."""
        m = self.m
        env, rec, server = m.env, m.rec, self.server
        heartbeat = m.sc.ws_heartbeat_s
        ping = ws_frame_overhead(0, False)
        pong = ws_frame_overhead(0, True)
        while not self.lost:
            self.sleeping = True
            try:
                yield env.timeout(heartbeat)
            except simpy.Interrupt:
                break
            finally:
                self.sleeping = False
            if self.lost:
                break
            if not (yield from server.work("ping", m.c_ping)) or self.lost:
                break
            rec.down("ping", env.now, ping, 0)
            # The pong reaches the server one round trip later; counted now (same bin).
            rec.up("pong", env.now, pong, 0)
            self.last_ping = env.now + m.net.one_way_s
        yield from self.wait_notice()

    def on_notice(self) -> None:
        if self.sleeping and self.proc is not None:
            self.proc.interrupt()

    def on_lost(self, t: float) -> None:
        if self.opened >= 0.0:
            self.m.rec.connection(self.opened, t)
            self.opened = -1.0

    def resume(self) -> None:
        """Reconnected: the upgrade went with the connect; resume, then replay on the new server."""
        m = self.m
        env, rec = m.env, m.rec
        self.opened = env.now
        rec.up("handshake", env.now, m.sc.ws_handshake_request_bytes, 0)
        rec.down("handshake", env.now, m.sc.ws_handshake_response_bytes, 0)
        if not self.connected.triggered:  # sends queued behind a first connect that failed go now
            self.connected.succeed()
        self.last_ping = env.now
        super().resume()
        env.process(self.replay(self.server))

    def replay(self, server: Server) -> Proc:
        """The resume answer as a burst of frames, after reading them from the log."""
        m = self.m
        backlog, self.inbox = self.inbox, []
        if not backlog:
            return
        if not (yield from server.work("resume", m.c_poll + len(backlog) * m.c_event)):
            return
        for ev in backlog:
            if not (yield from self.push(ev, server)):
                return

    def detect_time(self, t: float, silent: bool) -> float:
        sc = self.m.sc
        if not silent:
            return t + self.m.net.one_way_s  # the reset reaches the client
        return max(t, self.last_ping + sc.ws_heartbeat_s + sc.request_timeout_s)

    def finish(self, end: float) -> None:
        if self.opened >= 0.0:
            self.m.rec.connection(self.opened, end)


CLIENTS: dict[str, type[Client]] = {"short_polling": ShortPollingClient, "long_polling": LongPollingClient,
                                    "websocket": WebSocketClient}
