"""How a client's reconnect attempts are timed after its server is SIGKILLed and restarted:
the draws each client backs off by, the HTTP library's retry of a broken poll, and short
polling's timer. Each was found by pairing a measured crash run with its simulation client
by client (docs/VALIDATION.md, "The crash rows, client by client")."""

import math
import random

from chatcore.backoff import Backoff, reconnect_seed
from sim import Scenario
from sim import reconnect as rc
from sim.crash import run_crash
from sim.model import ChatModel
from sim.workload import draw, streams

# One server, killed at 10 s and back 0.6 s later: the validation's crash case.
ONE = dict(clients=40, servers=1, crashed_servers=1, crash_at_s=10.0, downtime_s=0.6, duration_s=20.0,
           warmup_s=2.0, connect_ramp_s=2.0, msg_rate_per_min=6, rtt_ms=50, registry_ttl_s=0, seed=3)


def attempts(transport, **kw):
    """Run the crash and log every connect: (client, began, ended, accepted)."""
    sc = Scenario().with_overrides({**ONE, **kw})
    log = []
    once = rc._once

    def logged(m, c):
        t = m.env.now
        out = yield from once(m, c)
        log.append((c.idx, t, m.env.now, out[0] is not None))
        return out

    rc._once = logged
    try:
        rngs = streams(sc.seed)
        m = ChatModel(sc, transport, draw(sc, rngs), rngs, servers=1, fault=True)
        m.run()
    finally:
        rc._once = once
    return sc, m, log


def test_each_client_backs_off_by_the_draws_of_its_own_seeded_stream():
    """Client i's first delay is the first draw of random.Random(reconnect_seed(seed, i)), the
    stream the load generator gives its client i: the two sides share their random numbers."""
    sc, m, log = attempts("websocket")
    checked = 0
    for c in m.clients:
        mine = [a for a in log if a[0] == c.idx]
        if not mine:
            continue
        first = Backoff(sc.reconnect_policy, sc.backoff_base_s, sc.backoff_cap_s,
                        random.Random(reconnect_seed(sc.seed, c.idx))).next_delay()
        # noticed one one-way delay after the kill (a reset), then the delay, then the attempt
        assert abs(mine[0][1] - (sc.crash_at_s + sc.rtt_ms / 2000 + first)) < 1e-9
        checked += 1
    assert checked == sc.clients  # every client was on the killed server


def test_http_clients_retry_the_broken_poll_at_once_and_websockets_do_not():
    _, _, ws = attempts("websocket")
    sc, _, lp = attempts("long_polling")
    one_way = sc.rtt_ms / 2000
    # long polling: every client's first attempt is the retry, right when it notices the reset
    firsts = {}
    for a in lp:
        firsts.setdefault(a[0], a)
    assert len(firsts) == sc.clients
    assert all(abs(a[1] - (sc.crash_at_s + one_way)) < 1e-9 and not a[3] for a in firsts.values())
    # ... and in the backoff loop a refused attempt is tried again the moment it is refused
    assert retried_at_once(lp) > 0
    # WebSocket: no client attempts before its first backoff delay has run
    assert all(a[1] > sc.crash_at_s + one_way for a in ws)
    assert retried_at_once(ws) == 0
    _, _, off = attempts("long_polling", http_retry_once=False)
    assert retried_at_once(off) == 0 and len(off) < len(lp)
    assert all(a[1] > sc.crash_at_s + one_way for a in off)


def retried_at_once(log):
    """Connects that began the instant the same client's previous connect was refused."""
    ends = {(a[0], round(a[2], 9)) for a in log if not a[3]}
    return sum(1 for a in log if (a[0], round(a[1], 9)) in ends)


def test_short_polling_reconnects_on_its_poll_timer():
    """A short-polling client's attempt after a backoff waits for its next scheduled poll, so with
    a downtime shorter than the poll interval only the retry of the broken poll can be refused."""
    sc = Scenario().with_overrides({**ONE, "transports": "short_polling"})
    s = run_crash(sc, "short_polling").summary
    assert s["affected_clients"] == sc.clients
    assert 0 < s["connects_rejected"] <= s["affected_clients"]
    # every client connected once at its start, then once more after the crash
    assert s["connect_attempts"] == sc.clients + s["affected_clients"] + s["connects_rejected"]
    _, m, log = attempts("short_polling")
    T = sc.poll_interval_s
    later = 0
    for c in m.clients:
        phase = float(m.wl.start_time[c.idx] + m.wl.poll_phase[c.idx] * T)
        failed_slot = phase + T * math.ceil((sc.crash_at_s - phase) / T)  # the poll the crash broke
        for a in [a for a in log if a[0] == c.idx][1:]:  # after the immediate retry
            assert a[1] >= failed_slot + T - 1e-9
            later += 1
    assert later > 0
