"""A measured crash run and its simulation share their random numbers: the load generator's
client i backs off by the draws the simulation's client i makes (chatcore.reconnect_seed), so the
validation compares the mechanism, not two samples of the slowest of many random delays."""

import asyncio
import random
import uuid
from pathlib import Path

from chatcore.backoff import Backoff, reconnect_seed
from chatlab import validation as v
from chatlab.validate_cmd import crash_scenario
from reference_server.loadgen.process import ServerProcess
from reference_server.loadgen.runner import LoadRun


def crash_run(tmp_path, transport: str, clients: int, overrides: list[str]):
    """One measured crash run (a private server process, SIGKILLed and restarted): the load
    generator's configuration, its LoadRun (the clients' timings) and its result."""
    base = v.load_scenario(v.VALIDATION_DEFAULTS, None, None, overrides)
    cfg = v.load_config(crash_scenario(base, transport, clients), transport, crash=True)

    async def run():
        srv = ServerProcess(Path(tmp_path) / "server", redis_prefix=f"pair-{uuid.uuid4().hex[:8]}")
        await srv.start()
        try:
            lr = LoadRun(cfg, srv)
            return lr, await lr.run()
        finally:
            await srv.stop()

    lr, res = asyncio.run(run())
    assert lr.crash is not None and res.crash is not None
    return cfg, lr, res


def test_measured_clients_back_off_by_their_seeded_draws(tmp_path):
    cfg, lr, _ = crash_run(tmp_path, "websocket", 8,
                           ["duration_s=7", "warmup_s=2", "connect_ramp_s=1", "msg_rate_per_min=6", "seed=5"])
    killed = lr.t0 + lr.crash["killed_at_s"]
    checked = 0
    for i, c in enumerate(lr.clients):
        lost = [t for t in c.lost_at if t >= killed]
        tries = [t for t in c.attempt_at if lost and t >= lost[0]]
        if not tries:
            continue
        first = Backoff(cfg.reconnect_policy, cfg.backoff_base_s, cfg.backoff_cap_s,
                        random.Random(reconnect_seed(cfg.seed, i))).next_delay()
        # the first attempt began one draw after the loss was noticed (a timer's lateness apart)
        assert 0 <= tries[0] - lost[0] - first < 0.05, (i, tries[0] - lost[0], first)
        checked += 1
    assert checked == cfg.clients


def test_a_long_poller_is_back_when_its_resumed_poll_could_be_answered_not_when_it_is(tmp_path):
    """At one message per minute a resumed long poll is held for seconds: the client counts as
    back two round trips after the connection that carried it opened, not at its late answer.
    (Only clients whose poll had been answered before the crash were connected, so only they
    count as affected: at this rate, a few.)"""
    cfg, lr, res = crash_run(tmp_path, "long_polling", 16,
                             ["duration_s=9", "warmup_s=2", "connect_ramp_s=1", "msg_rate_per_min=1", "seed=2"])
    killed = lr.t0 + lr.crash["killed_at_s"]
    rtt = cfg.rtt_ms / 1000
    checked = 0
    for c in lr.clients:
        lost = [t for t in c.lost_at if t >= killed]
        back = [t for t in c.reconnected_at if lost and t >= lost[0]]
        if not back:
            continue
        began = [t for t in c.attempt_at if lost[0] <= t <= back[0]]
        assert began, "the poll that came back began after the loss"
        # the last poll's connection opened at most one refused try (a round trip) after it began
        assert back[0] - began[-1] <= 3 * rtt + 0.05
        checked += 1
    assert checked >= 2
    assert res.crash["time_to_reconnect_all_s"] is not None
