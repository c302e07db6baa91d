"""One reconnect attempt: the load balancer picks a server, the connect crosses the network,
admission control may refuse it cheaply, the server spends ``connect_cpu_ms`` (TLS, auth,
session restore) FIFO with all its other work, and the client gives up after
``connect_timeout_s`` without the server knowing (its work is then wasted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generator

import simpy

from .cluster import Server

if TYPE_CHECKING:
    from .clients import Client
    from .model import ChatModel

#: The least time a refused connect attempt takes (the client's own work), so that a zero
#: round trip and a zero backoff cannot loop without simulated time passing.
MIN_ATTEMPT_S = 0.001

Attempt = Generator[simpy.Event, object, "Server | None"]


def attempt(m: "ChatModel", c: "Client", retries: int = 0) -> Attempt:
    """Try once; return the server that accepted the client, or None (refused or timed out).

    A connection refused for want of a live server is tried again at once up to *retries*
    times: an HTTP client retries an idempotent request (a poll) once on a new connection when
    its connection breaks (RFC 9112, 9.3.1; aiohttp does), and a refusal behind a TCP proxy or
    load balancer is a connection accepted, then reset. A timeout or a server's refusal is an
    answer, not a broken connection, and is not retried.
    """
    for _ in range(retries):
        server, refused = yield from _once(m, c)
        if not refused:
            return server
    server, _ = yield from _once(m, c)
    return server


def _once(m: "ChatModel", c: "Client") -> Generator[simpy.Event, object, "tuple[Server | None, bool]"]:
    """One connect: (the server that accepted, or None; whether no live server was there)."""
    env, sc, net, inc = m.env, m.sc, m.net, m.incident
    assert inc is not None
    now = env.now
    inc.attempt(now)
    server = m.cluster.pick(c.server)
    if server is None:  # the load balancer has no live server: refused after a round trip
        yield env.timeout(max(net.rtt_s, MIN_ATTEMPT_S))
        inc.rejected(env.now)
        return None, True
    c.server = server  # sticky from now on, whatever the answer
    m.attempt_id += 1
    aid = m.attempt_id
    m.waiting[c.idx] = aid
    answer = env.event()
    env.process(_server_side(m, server, c, aid, answer))
    yield answer | env.timeout(sc.connect_timeout_s)
    if not answer.triggered:
        m.waiting[c.idx] = 0  # stop waiting: a late answer finds nobody
        inc.timed_out(env.now)
        return None, False
    if answer.value != "accepted":
        inc.rejected(env.now)
        if env.now - now < MIN_ATTEMPT_S:  # an attempt never takes zero time, even on rtt_ms=0
            yield env.timeout(MIN_ATTEMPT_S - (env.now - now))
        return None, False
    inc.accepted(env.now)
    return server, False


def _server_side(m: "ChatModel", s: Server, c: "Client", aid: int, answer: simpy.Event) -> Generator[
        simpy.Event, object, None]:
    env, net = m.env, m.net
    epoch = s.epoch
    if c.cut:
        return  # nothing gets through
    yield env.timeout(net.connect_delay() + net.delay())
    if s.epoch != epoch or not s.alive or c.cut:
        return
    if not s.admit(env.now):
        if not (yield from s.work("connect_refused", m.c_reject)):
            return
        status = "rejected"
    else:
        if not (yield from s.work("reconnect", m.c_connect)):
            return
        status = "accepted"
    yield env.timeout(net.delay())
    if m.waiting[c.idx] == aid and not answer.triggered:
        answer.succeed(status)
    elif status == "accepted":
        assert m.incident is not None
        m.incident.wasted(env.now)  # the client gave up: the work was wasted
