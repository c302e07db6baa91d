"""sim.cpu.Cpu: a simpy.Resource that skips the events nobody waits on must grant cores
exactly when a plain Resource does, so whole runs come out identical."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy

import sim
import sim.cluster
import sim.crash
from sim.cpu import Cpu
from sim.params import Scenario


class PlainCpu(simpy.Resource):
    """The model's CPU before sim.cpu existed: plain request()/release(), not waiting on
    a request granted at once (what the model did then)."""

    def __init__(self, env: simpy.Environment, capacity: int = 1) -> None:
        super().__init__(env, capacity)
        self._at_once: list = []  # requests granted at once, not yet released

    def acquire(self):
        req = self.request()
        if req.triggered:
            self._at_once.append(req)
            return None
        return req

    def free(self, grant) -> None:
        self.release(self._at_once.pop() if grant is None else grant)  # all cores are alike


def _grants(cpu_class, cores: int, seed: int) -> list[tuple[int, float, float, float]]:
    """(job, arrived, granted, finished) for 2,000 jobs with random arrivals and service times,
    some arriving at the very instant another finishes."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    cpu = cpu_class(env, cores)
    out: list[tuple[int, float, float, float]] = []

    def job(i: int, service: float):
        arrived = env.now
        req = cpu.acquire()
        if req is not None:
            yield req
        start = env.now
        yield env.timeout(service)
        cpu.free(req)
        out.append((i, arrived, start, env.now))
        if i % 7 == 0:  # a follow-up job at the instant of the release
            env.process(job(-i - 1, service / 2))

    def source():
        for i in range(2000):
            yield env.timeout(float(rng.exponential(0.01)) if i % 5 else 0.0)
            env.process(job(i, float(rng.exponential(0.018 * cores))))

    env.process(source())
    env.run()
    return out


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_grants_match_a_plain_resource(cores: int) -> None:
    fast, plain = _grants(Cpu, cores, seed=cores), _grants(PlainCpu, cores, seed=cores)
    assert len(fast) == 2000 + len(range(0, 2000, 7))
    waited = sum(1 for _, arrived, start, _ in fast if start > arrived)
    assert waited > 500  # the load (about 90 % busy) makes jobs queue
    assert fast == plain


def test_cpu_keeps_resource_bookkeeping() -> None:
    env = simpy.Environment()
    cpu = Cpu(env, 2)
    a, b = cpu.acquire(), cpu.acquire()
    assert a is None and b is None and cpu.count == 2
    c = cpu.acquire()
    assert c is not None and not c.triggered and list(cpu.queue) == [c]
    cpu.free(a)
    assert c.triggered and cpu.count == 2 and not cpu.queue
    cpu.free(c)
    cpu.free(b)
    assert cpu.count == 0
    req = cpu.request()  # the plain interface still works beside the fast one
    assert req.triggered and cpu.count == 1
    cpu.release(req)
    assert cpu.count == 0


def test_acquire_never_overtakes_a_request_queued_behind_a_plain_release() -> None:
    """A plain release() frees the core at once but grants the queue only when its Release
    event is processed; an acquire() in between must queue, not take the core."""
    env = simpy.Environment()
    cpu = Cpu(env, 1)
    order: list[str] = []

    def holder():
        req = cpu.request()
        yield req
        yield env.timeout(1.0)
        cpu.release(req)
        late = cpu.acquire()  # same instant, before the Release event is processed
        if late is not None:
            yield late
        order.append("late")
        cpu.free(late)

    def queued():
        yield env.timeout(0.5)
        req = cpu.acquire()
        assert req is not None
        yield req
        order.append("queued")
        yield env.timeout(1.0)
        cpu.free(req)

    env.process(holder())
    env.process(queued())
    env.run()
    assert order == ["queued", "late"]


def _heavy(dist: str) -> Scenario:
    """One core over 80 % busy under short polling: queues form. Deterministic service
    times make exact ties (same instant) common."""
    return Scenario().with_overrides(dict(clients=4000, duration_s=40, warmup_s=5, server_cores=1,
                                          service_time_dist=dist, group_size=3))


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["exponential", "deterministic"])
@pytest.mark.parametrize("transport", ["short_polling", "long_polling", "websocket"])
def test_model_runs_are_identical_with_a_plain_resource(transport: str, dist: str, monkeypatch) -> None:
    sc = _heavy(dist)
    fast = sim.run(sc, transport)
    monkeypatch.setattr(sim.cluster, "Cpu", PlainCpu)
    plain = sim.run(sc, transport)
    assert fast.summary == plain.summary
    for table in ("messages", "receipts", "classes", "bins"):
        pd.testing.assert_frame_equal(getattr(fast, table), getattr(plain, table))
    if transport == "short_polling":
        assert fast.summary["server_cpu_utilization"] > 0.8


def test_crash_runs_are_identical_with_a_plain_resource(monkeypatch) -> None:
    sc = Scenario().with_overrides(dict(clients=1500, servers=2, server_cores=1, service_time_dist="exponential",
                                        duration_s=60, warmup_s=0, crash_at_s=20, downtime_s=5))
    fast = sim.crash.run_crash(sc, "websocket")
    monkeypatch.setattr(sim.cluster, "Cpu", PlainCpu)
    plain = sim.crash.run_crash(sc, "websocket")
    assert fast.summary == plain.summary
    for table in ("bins", "messages", "servers"):
        pd.testing.assert_frame_equal(getattr(fast, table), getattr(plain, table))
