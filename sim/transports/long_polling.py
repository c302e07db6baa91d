"""Long polling: one request always held at the server, woken by the delivery service or its
timeout; a reset breaks it at once, a silent server is noticed by the client's own timeout."""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from ..clients import LogEvent, Proc
from .http import HttpClient

if TYPE_CHECKING:
    from ..model import ChatModel


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
        """The client's process (the polls() generator itself: the hot loop is not delegated)."""
        return self.polls()

    def polls(self) -> Proc:
        """Start, then hold a request at the server, again and again; when the session is lost and the
        client has noticed, reconnect and go on."""
        m = self.m
        yield m.env.timeout(m.wl.start_time[self.idx])
        self.start()
        while True:  # one session per turn
            env, net, rec, server = m.env, m.net, m.rec, self.server
            cpu, timeout = server.cpu, env.timeout
            busy = server.busy
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
                    rec.cpu(op, queued, start, cost, busy)
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
            yield from self.reconnect()

    def detect_time(self, t: float, silent: bool) -> float:
        sc = self.m.sc
        if not silent:
            return t + self.m.net.one_way_s  # the reset reaches the client
        return max(t, self.lp_sent + sc.long_poll_timeout_s + sc.request_timeout_s)
