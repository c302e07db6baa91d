"""Group commit in the model (``cpu_commit_batch_ms``, :class:`sim.cluster.Committer`): off, the
model is what it was; on, each batch of writes pays the per-batch CPU once, its writes go on
together after one commit, and the batches grow with the load."""

import numpy as np
import pandas as pd
import pytest
import simpy

from sim import Scenario, run
from sim.cluster import Server, ServiceTimes
from sim.delivery import QueueDelivery
from sim.recorder import Recorder

SMALL = dict(clients=60, msg_rate_per_min=6, duration_s=60, warmup_s=10)


def one_server(**kw):
    sc = Scenario().with_overrides({"server_cores": 1, "queue_latency_ms": 0.2, "persist_latency_ms": 4.0, **kw})
    env = simpy.Environment()
    rec = Recorder(0.0, 10.0, 10.0, 1.0)
    return env, Server(env, sc, rec, ServiceTimes(False, np.random.default_rng(0)), 0)


def writes(env, server, n, w_s):
    """*n* writes reaching the server at time 0, each *w_s* of its own CPU, then the commit;
    returns {write: time it was released}."""
    released = {}

    def write(i):
        yield from server.work("send", w_s)
        yield server.committer.join()
        released[i] = env.now

    for i in range(n):
        env.process(write(i))
    env.run(until=1.0)
    return released


def test_off_means_no_committer():
    env, server = one_server()
    assert server.committer is None
    _, direct = one_server(cpu_commit_batch_ms=2.0, delivery_design="direct")
    assert direct.committer is None  # the direct design acknowledges from memory: nothing commits


def test_writes_arriving_together_pay_one_batch_and_are_released_together():
    env, server = one_server(cpu_commit_batch_ms=2.0)
    released = writes(env, server, 8, 0.0)
    assert server.committer.batches == [8]
    assert sum(server.busy) == pytest.approx(2.0e-3)  # N * 0 + 1 batch * B
    # one batch: B of CPU, the commit (persist), the queue append, all eight at the same instant
    assert list(released.values()) == [pytest.approx((2.0 + 4.0 + 0.2) * 1e-3)] * 8


def test_batches_form_while_the_previous_one_commits():
    """One core, 8 writes of w = 0.5 ms each at t = 0, B = 2 ms. The first write is done at
    0.5 ms and is a batch alone; its B queues behind the other 7 writes (FIFO), runs 4-6 ms,
    commits until 10 ms; the 7 others joined meanwhile: B 10-12 ms, commit until 16 ms."""
    env, server = one_server(cpu_commit_batch_ms=2.0)
    released = writes(env, server, 8, 0.5e-3)
    assert server.committer.batches == [1, 7]
    assert sum(server.busy) == pytest.approx(8 * 0.5e-3 + 2 * 2.0e-3)  # N * w + batches * B
    assert released[0] == pytest.approx(10.2e-3)
    assert [released[i] for i in range(1, 8)] == [pytest.approx(16.2e-3)] * 7


def small(transport, **kw):
    return Scenario().with_overrides({**SMALL, "transports": transport, **kw})


@pytest.mark.parametrize("transport", ["long_polling", "websocket"])
def test_off_is_the_plain_store_delay(transport, monkeypatch):
    """cpu_commit_batch_ms = 0 gives the results of a model whose store is the fixed delay."""
    a = run(small(transport), transport)
    monkeypatch.setattr(QueueDelivery, "store", lambda self, server: self.m.env.timeout(self.store_s))
    b = run(small(transport), transport)
    assert a.summary == b.summary
    for table in ("messages", "receipts", "classes", "bins"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))
    assert "commit" not in set(a.classes["class"])


def test_batches_grow_with_the_load_and_the_cpu_per_write_falls():
    b_ms = 1.0
    out = {}
    for rate in (2, 60):  # 200 clients: about 20 and 600 writes/s against a 6 ms commit
        r = run(small("websocket", clients=200, msg_rate_per_min=rate, cpu_commit_batch_ms=b_ms,
                      persist_latency_ms=5.0), "websocket")
        cls = r.classes.set_index("class")
        n_writes = int(cls.loc["ws_send", "cpu_ops"] + cls.loc["ws_receipt", "cpu_ops"])
        n_batches = int(cls.loc["commit", "cpu_ops"])
        assert cls.loc["commit", "cpu_busy_s"] == pytest.approx(n_batches * b_ms * 1e-3)
        assert r.summary["messages_delivered"] == r.summary["messages_sent"] > 0
        out[rate] = (n_writes / n_batches, cls["cpu_busy_s"].sum() / n_writes)
    (size_lo, cpu_lo), (size_hi, cpu_hi) = out[2], out[60]
    # alone a write makes two commits (its own and its fan-out's): at least half a write per commit
    assert size_lo >= 0.5 and size_hi > 1.5 * size_lo
    assert cpu_hi < cpu_lo


def test_a_lone_write_pays_its_two_whole_commits_at_light_load():
    """WebSocket, 20 messages/s, no receipts: the fastest message takes the analytic light-load
    latency (its frame, a batch of its own, the commit, the queue, the delivery, its fan-out's
    commit, the push); a message that finds a batch committing waits for it, at most one commit
    more (2.2 ms) at each of its two commits, which a few % of messages do (40 commits/s x
    2.2 ms): the mean stays within 0.5 ms."""
    from sim import analytic
    sc = small("websocket", clients=200, receipts=False, cpu_commit_batch_ms=1.0, seed=3)
    r = run(sc, "websocket")
    lat = r.messages.loc[r.messages.in_window, "latency_ms"].to_numpy()
    floor = analytic.websocket_mean_latency(sc) * 1000
    assert lat.size > 500
    assert lat.min() == pytest.approx(floor)
    assert 0.0 <= lat.mean() - floor < 0.5
    assert lat.max() <= floor + 2 * (1.0 + 1.2) + 1.0  # a commit's wait at each of its two, a little queueing
