"""The crash and reconnect model (issue: crash scenarios). Fixed seeds; each
tolerance says where it comes from."""

import math

import numpy as np
import pytest

from sim import Scenario, analytic
from sim.crash import run_crash

# A storm that one surviving server cannot absorb at once: 500 clients lose their server;
# the survivor accepts 1 core / 20 ms = 50 connects/s and clients give up after 2 s.
STORM = dict(clients=1000, servers=2, server_cores=1, connect_cpu_ms=20, connect_timeout_s=2,
             connect_ramp_s=30, crash_at_s=60, duration_s=150, bin_s=0.1, msg_rate_per_min=0.5,
             transports="websocket")


def storm(**kw):
    return Scenario().with_overrides({**STORM, **kw})


def attempts_after_crash(r):
    b = r.bins[r.bins.t_s >= r.scenario.crash_at_s]
    return b.connect_attempts_per_s.to_numpy() * r.scenario.bin_s


def test_without_jitter_attempts_come_in_synchronized_waves_and_full_jitter_cuts_the_peak():
    sync = run_crash(storm(), "websocket", "exponential")
    jitter = run_crash(storm(), "websocket", "full_jitter")
    a_sync, a_jit = attempts_after_crash(sync), attempts_after_crash(jitter)

    def top_share(a):  # share of all attempts that fall in the busiest 5 % of bins
        k = max(1, a.size // 20)
        return np.sort(a)[::-1][:k].sum() / a.sum()

    assert top_share(a_sync) > 0.9      # waves: nearly every attempt lands in a few 0.1 s bins
    assert top_share(a_jit) < 0.6       # spread out
    # 500 clients detect within the same 0.1 s: without jitter they all retry in one bin
    # (5,000/s); full jitter spreads the first retry over U(0, 1 s): ~50 per bin.
    assert sync.summary["reconnect_peak_per_s"] >= 4 * jitter.summary["reconnect_peak_per_s"]


def test_metastable_failure_and_its_cures():
    stuck = run_crash(storm(), "websocket", "immediate")
    assert stuck.summary["time_to_reconnect_all_s"] is None      # never recovers within the run
    assert stuck.summary["clients_not_reconnected"] > 100
    assert stuck.summary["wasted_connects"] > 1000                # the survivor works for clients that left
    jitter = run_crash(storm(), "websocket", "full_jitter")
    admitted = run_crash(storm(max_connects_per_s=40), "websocket", "immediate")
    for cured in (jitter, admitted):
        assert cured.summary["clients_not_reconnected"] == 0
    assert admitted.summary["wasted_connects"] == 0  # refused cheaply instead of timed out


@pytest.mark.parametrize("policy,rate", [("immediate", 40), ("full_jitter", 0), ("full_jitter", 40),
                                         ("equal_jitter", 40), ("decorrelated_jitter", 0)])
def test_recovery_is_never_faster_than_clients_over_accept_rate(policy, rate):
    sc = storm(max_connects_per_s=rate)
    r = run_crash(sc, "websocket", policy)
    s = r.summary
    live = sc.servers - sc.crashed_servers
    accept_rate = live * sc.server_cores / (sc.connect_cpu_ms / 1000)
    if rate:
        accept_rate = min(accept_rate, live * rate)
    assert s["time_to_reconnect_all_s"] is not None
    assert s["time_to_reconnect_all_s"] >= analytic.min_recovery_time(s["affected_clients"], accept_rate)


@pytest.fixture(scope="module")
def held_in_memory():
    """Short polling every 10 s: a message waits in the recipient's server until the next poll."""
    base = dict(clients=400, servers=4, msg_rate_per_min=10, poll_interval_s=10, duration_s=100,
                crash_at_s=60, transports="short_polling", seed=2)
    return {d: run_crash(Scenario().with_overrides({**base, "delivery_design": d}), "short_polling")
            for d in ("queue", "direct")}


def test_queue_design_loses_nothing(held_in_memory):
    s = held_in_memory["queue"].summary
    assert s["messages_lost"] == 0 and s["messages_undelivered_unacked"] == 0
    assert s["messages_recovered"] > 0  # what the crashed server's clients missed came back by replay


def test_direct_design_loses_what_the_crashed_server_held(held_in_memory):
    r = held_in_memory["direct"]
    s, sc = r.summary, r.scenario
    assert s["messages_lost"] == s["messages_lost_in_memory"] + s["messages_lost_to_dead_server"]
    # At the crash, the crashed server holds the messages waiting for its 100 clients' next poll:
    # arrival rate lambda = 100 x 10/60 per s, each waits U(0, 10 s): Little's law gives 83.3 on
    # average. Per recipient the count is Poisson with a uniform mean, so the variance is
    # lambda_r T/2 + lambda_r^2 T^2/12 = 1.065 per recipient, sd 10.3 for 100: 4 sd = 41.
    lam = (sc.clients / sc.servers) * sc.msg_rate_per_min / 60
    expected = lam * sc.poll_interval_s / 2
    assert abs(s["messages_lost_in_memory"] - expected) < 41
    # every lost message had been acknowledged: none is left in a sender's outbox to resend
    assert s["messages_undelivered_unacked"] == 0


def test_every_replayed_message_is_delivered_once_after_deduplication():
    # Silent crash: WebSocket clients notice only by a missed heartbeat (up to 35 s). Pushes into
    # the dead connections are reclaimed after the visibility timeout and pushed again, some
    # after the resume already replayed them: duplicates, which the client drops.
    sc = Scenario().with_overrides(dict(clients=400, servers=4, msg_rate_per_min=20, crash_mode="silent",
                                        visibility_timeout_s=20, duration_s=150, transports="websocket",
                                        seed=4))
    r = run_crash(sc, "websocket")
    s = r.summary
    assert s["messages_lost"] == 0
    assert s["messages_recovered"] > 0
    assert s["messages_duplicated"] > 0
    assert not r.messages.duplicated(["msg", "recipient"]).any()
    assert len(r.messages) == s["messages_expected_deliveries"] - s["messages_undelivered_unacked"]


@pytest.mark.parametrize("transport", ["short_polling", "long_polling", "websocket"])
def test_detection_delay_follows_the_transport(transport):
    sc = Scenario().with_overrides(dict(clients=200, servers=2, crash_mode="silent", msg_rate_per_min=1,
                                        duration_s=150, reconnect_policy="immediate", transports=transport))
    r = run_crash(sc, transport)
    ttr = r.summary["time_to_reconnect_all_s"]
    # silent: a failed poll times out (<= T + request timeout); a held long poll only when its
    # client-side timeout expires (<= hold + request timeout); a WebSocket after a missed
    # heartbeat (<= heartbeat + request timeout). Reconnecting itself takes < 1 s here.
    bound = {"short_polling": sc.poll_interval_s, "long_polling": sc.long_poll_timeout_s,
             "websocket": sc.ws_heartbeat_s}[transport] + sc.request_timeout_s
    assert sc.request_timeout_s <= ttr <= bound + 1.0


def test_presence_flaps_are_counted_and_vanish_when_the_ttl_outlasts_detection_and_reconnect():
    flaps = {}
    for ttl in (1, 10, 30, 60, 120):
        sc = Scenario().with_overrides(dict(clients=400, servers=4, crash_mode="silent", presence_ttl_s=ttl,
                                            duration_s=150, transports="websocket", seed=6))
        flaps[ttl] = run_crash(sc, "websocket").summary
    affected = flaps[1]["affected_clients"]
    # TTL 1 s: every affected user's presence expires before it is back
    assert flaps[1]["presence_flaps"] >= 0.9 * affected
    counts = [flaps[t]["presence_flaps"] for t in (1, 10, 30, 60, 120)]
    assert counts == sorted(counts, reverse=True)
    # detection <= 25 + 10 s after the crash, last refresh <= 25 s before it, reconnect < 2 s:
    # a 120 s TTL covers it all
    assert flaps[120]["presence_flaps"] == 0


def test_delivery_outage_builds_a_backlog_that_drains():
    sc = Scenario().with_overrides(dict(clients=300, fault="delivery", crash_at_s=60, downtime_s=20,
                                        msg_rate_per_min=6, duration_s=120, transports="websocket"))
    r = run_crash(sc, "websocket")
    b = r.bins
    during = b[(b.t_s >= 61) & (b.t_s < 80)].queue_backlog
    after = b[b.t_s >= 82].queue_backlog
    assert during.max() > 50 and after.max() == 0
    assert r.summary["messages_lost"] == 0
    sp = run_crash(sc.with_overrides({"transports": "short_polling"}), "short_polling")
    # short polls read the durable log directly: the outage does not delay them
    assert sp.summary["p99_incident_latency_ms"] < 1000 * sc.poll_interval_s + 500


def test_partition_heals_and_everyone_comes_back():
    sc = Scenario().with_overrides(dict(clients=200, fault="partition", partition_fraction=0.2, crash_at_s=60,
                                        downtime_s=15, duration_s=120, transports="long_polling"))
    r = run_crash(sc, "long_polling")
    s = r.summary
    assert s["affected_clients"] == 40
    assert s["time_to_reconnect_all_s"] >= sc.downtime_s
    assert s["messages_lost"] == 0


def test_same_seed_same_crash():
    a = run_crash(storm(), "websocket", "full_jitter").summary
    b = run_crash(storm(), "websocket", "full_jitter").summary
    assert a == b


def test_crash_for_good():
    r = run_crash(storm(downtime_s=math.inf, max_connects_per_s=40), "websocket", "full_jitter")
    assert r.summary["clients_not_reconnected"] == 0
    assert not r.servers.alive_at_end.iloc[0]


# --- the session registry learns of a death late (docs/CRASH.md, "Routing that learns late") -------
# 1 of 4 servers crashes for good; its 500 users stay away until after every entry has lapsed (a
# fixed 120 s backoff: they return at about 150 s), so each one's registry entry names the dead
# server until it lapses.
LATE = dict(clients=2000, servers=4, crashed_servers=1, transports="websocket", msg_rate_per_min=6,
            presence_heartbeat_s=10, connect_ramp_s=10, crash_at_s=30, downtime_s=math.inf,
            reconnect_policy="fixed", backoff_base_s=120, backoff_cap_s=120, duration_s=80, warmup_s=20,
            receipts=False)  # receipts do not change what is routed; without them the runs take half the time


@pytest.fixture(scope="module")
def late_routing():
    return {(d, ttl): run_crash(Scenario().with_overrides({**LATE, "delivery_design": d, "registry_ttl_s": ttl}),
                                "websocket")
            for d, ttls in (("direct", (0, 15, 30, 45)), ("queue", (0, 45))) for ttl in ttls}


@pytest.mark.slow
@pytest.mark.parametrize("ttl", [0, 15, 30, 45])
def test_direct_loses_what_is_routed_to_the_dead_server_until_the_registry_entry_lapses(late_routing, ttl):
    r = late_routing[("direct", ttl)]
    sc = r.scenario
    # Users i = 0 mod 4 sit on the crashed server; each one's partner (i + 1) is on a live one and
    # sends lam = msg_rate_per_min / 60 per second, all to it. An entry last refreshed a seconds
    # before the crash, a ~ U[0, hb) (starts are uniform over a ramp of exactly hb), names the dead
    # server for max(0, ttl - a) more seconds: E[lost] = N lam E[max(0, ttl - a)]
    # = N lam (ttl - hb/2) for ttl >= hb, and 0 for ttl = 0 (instant knowledge).
    n = sc.clients // sc.servers
    lam = sc.msg_rate_per_min / 60
    expected, sigma = analytic.registry_ttl_loss(n, lam, ttl, sc.presence_heartbeat_s)
    assert expected == pytest.approx(n * lam * (ttl - sc.presence_heartbeat_s / 2) if ttl else 0.0)
    # Poisson counts with a mean that varies with a: Var = E + N lam^2 Var(a) = E + N lam^2 hb^2 / 12
    # (42 here) for ttl >= hb; 4 sigma.
    lost = r.summary["messages_lost_to_dead_server"]
    assert abs(lost - expected) <= 4 * sigma + 1, (lost, expected, sigma)
    assert r.summary["messages_lost"] == lost + r.summary["messages_lost_in_memory"]


@pytest.mark.slow
def test_loss_grows_with_the_registry_ttl_and_the_queue_design_loses_nothing(late_routing):
    lost = [late_routing[("direct", ttl)].summary["messages_lost"] for ttl in (0, 15, 30, 45)]
    assert lost[0] <= 2 and lost[1] < lost[2] < lost[3]
    for ttl in (0, 45):
        s = late_routing[("queue", ttl)].summary
        assert s["messages_lost"] == 0
        assert s["messages_recovered"] > 1000  # the durable log replays them when the users return
