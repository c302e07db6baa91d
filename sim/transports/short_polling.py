"""Short polling: a poll every ``poll_interval_s`` at the client's own phase; a poll into a dead
server fails, and the client notices one round trip later (reset) or after ``request_timeout_s``."""

from __future__ import annotations

import math

from ..clients import Proc
from .http import HttpClient


class ShortPollingClient(HttpClient):
    __slots__ = ("next_poll",)
    via = "poll"

    def run(self) -> Proc:
        """The client's process: start, then poll, session after session. It is the polls()
        generator itself, so the hot loop's yields are not delegated through another frame."""
        m = self.m
        next_poll = float(m.wl.start_time[self.idx] + m.wl.poll_phase[self.idx] * m.sc.poll_interval_s)
        self.start()
        return self.polls(next_poll)

    def polls(self, next_poll: float) -> Proc:
        """Poll on schedule; when the session is lost and the client has noticed, reconnect and go on."""
        # The hot loop of the whole model (a poll per client per interval): the CPU
        # step and the bookkeeping are written out here rather than called, which
        # keeps a poll within 2x a bare SimPy loop (`make bench`).
        m = self.m
        while True:  # one session per turn
            env, net, rec, server = m.env, m.net, m.rec, self.server
            cpu, timeout = server.cpu, env.timeout
            busy = server.busy
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
                # the response: every event read (HttpClient.respond, written out)
                now = env.now
                size = 0
                for ev in events:
                    size += ev.size
                rec.poll("poll", arrive, start, cost, now, req_hdr, resp_hdr, poll_body(size, len(events)),
                         len(events), busy)
                self.polling_since = -1.0
                conn.release(now)
                received_at = now + net.delay()
                if events:
                    self.received(events, received_at)
                next_poll += interval
                if next_poll < received_at:  # never two polls outstanding
                    next_poll = received_at
            yield from self.wait_notice()
            yield from self.reconnect()
            next_poll = env.now  # the first poll of the new session is the resume

    def next_attempt_at(self, t: float) -> float:
        """The poll timer goes on through a reconnect, one slot per attempt, as the load
        generator's client (its ``next_poll`` advances by one interval per poll, failed or
        not): an attempt waits for that slot if the backoff ended sooner, and goes at once if
        it ended later (after a long backoff the attempts fall off the original schedule)."""
        self.next_poll += self.m.sc.poll_interval_s
        return max(t, self.next_poll)

    def detect_time(self, t: float, silent: bool) -> float:
        """The next poll at or after *t* fails: a reset answers within a round trip, a silent
        server lets it time out."""
        sc = self.m.sc
        T = sc.poll_interval_s
        nxt = self.next_poll
        slot = nxt if nxt >= t else nxt + T * math.ceil((t - nxt) / T)
        return slot + (sc.request_timeout_s if silent else self.m.net.rtt_s)
