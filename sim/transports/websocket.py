"""WebSocket: one connection, pushed frames, server pings; a reset breaks it at once, a silent
server is noticed after a missed heartbeat."""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from chatcore.states import ConnectionState as CS
from chatcore.wire import ws_frame_overhead

from ..clients import MSG, Client, LogEvent, Proc, Step, Upload
from ..cluster import Server
from ..network import Link

if TYPE_CHECKING:
    from ..model import ChatModel


class WebSocketClient(Client):
    __slots__ = ("open", "connected", "up_link", "down_link", "opened", "last_ping", "sleeping", "proc")
    via = "push"
    pushes = True

    def __init__(self, model: "ChatModel", idx: int):
        super().__init__(model, idx)
        self.connected: simpy.Event = model.env.event()  # the client has the 101 answer
        self.up_link = Link()
        self.down_link = Link()
        self.opened = -1.0
        self.open = False  # the server holds this client's connection (it dies with the server)
        self.last_ping = 0.0
        self.sleeping = False
        self.proc: simpy.Process | None = None

    def log(self, ev: LogEvent) -> bool:
        if self.open:
            return True  # the delivery service pushes to the open connection
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
            m.rec.cpu("ws_event", queued, start, cost, server.busy)
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
        self.open = True
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
        self.open = False
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
        self.open = True
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
