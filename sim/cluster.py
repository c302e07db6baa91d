"""The connection servers, the load balancer in front of them and the session registry.

* :class:`Server`: one connection server, its CPU (:class:`sim.cpu.Cpu` of ``server_cores``),
  an admission token bucket (``max_connects_per_s``), and what a crash wipes (its CPU queue,
  its connections, in the ``direct`` design the messages in its memory). ``epoch`` counts its
  crashes: work that started before a crash finds a different epoch when it ends, and dies.
* :class:`Registry`: user -> connection server, as the delivery path sees it (the seed design's
  session registry): written when a connection opens, refreshed by every
  ``presence_heartbeat_s``, dropped when a live server closes the session, and after a crash
  still pointing at the dead server until ``registry_ttl_s`` after its last refresh
  (``registry_ttl_s = 0``: the registry learns of a death at once).
* :class:`Cluster`: the servers and the sticky load balancer: client *i* starts on server
  ``i mod servers`` and keeps it while it lives; a reconnect from a client whose server is dead
  goes to a uniformly random live one.

``chatlab compare`` runs a cluster of one server that never fails.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Generator

import numpy as np
import simpy

from .cpu import Cpu
from .params import Scenario

if TYPE_CHECKING:
    from .clients import LogEvent
    from .recorder import Recorder

Work = Generator[simpy.Event, object, bool]


class ServiceTimes:
    """The factor each CPU service time is multiplied by: 1 (deterministic) or an exponential
    of mean 1, drawn in blocks from one stream that every server shares."""

    __slots__ = ("exponential", "_rng", "_pool")

    def __init__(self, exponential: bool, rng: np.random.Generator):
        self.exponential = exponential
        self._rng = rng
        self._pool: list[float] = []

    def unit(self) -> float:
        if not self._pool:
            self._pool = self._rng.exponential(1.0, 8192).tolist()
        return self._pool.pop()


class Committer:
    """A server's group commit (``cpu_commit_batch_ms`` > 0, queue design; docs/MODEL.md,
    "Group commit"). A write that has done its own work joins (:meth:`join`) the pending batch and
    waits on the batch's event. When the committer is free it takes every pending write,
    charges ``cpu_commit_batch_ms`` once on the server's CPU (FIFO with all other work), waits
    the commit (``persist_latency_ms``) and is free again; the batch's writes go on together
    ``queue_latency_ms`` later (the queue append of one commit is one XADD). Writes that join
    while a batch commits form the next one, as in the reference server's
    ``store/committer.py``."""

    __slots__ = ("server", "env", "cost_s", "persist_s", "queue_s", "pending", "size", "idle", "batches")

    def __init__(self, server: "Server", cost_s: float, persist_s: float, queue_s: float):
        self.server, self.env = server, server.env
        self.cost_s, self.persist_s, self.queue_s = cost_s, persist_s, queue_s
        self.pending: simpy.Event | None = None  # the batch being built
        self.size = 0  # writes in it
        self.idle: simpy.Event | None = None  # set while the committer waits for a write
        self.batches: list[int] = []  # size of each committed batch (for tests and checks)
        self.env.process(self._run())

    def join(self) -> simpy.Event:
        """The event a write waits on: its batch committed and was appended to the queue."""
        if self.pending is None:
            self.pending = self.env.event()
        self.size += 1
        idle = self.idle
        if idle is not None and not idle.triggered:
            idle.succeed()
        return self.pending

    def _run(self) -> Generator[simpy.Event, object, None]:
        env = self.env
        while True:
            if self.pending is None:
                self.idle = env.event()
                yield self.idle
                self.idle = None
                continue
            batch, n = self.pending, self.size
            self.pending, self.size = None, 0
            if self.server.alive:  # a dead server's CPU does no commit (its writes are gone with it)
                yield from self.server.work("commit", self.cost_s)
            if self.persist_s > 0.0:
                yield env.timeout(self.persist_s)
            self.batches.append(n)
            if self.queue_s > 0.0:
                env.timeout(self.queue_s).callbacks.append(_Release(batch))
            else:
                batch.succeed()


class _Release:
    """Callback: the batch's writes go on (its queue append is done)."""

    __slots__ = ("batch",)

    def __init__(self, batch: simpy.Event):
        self.batch = batch

    def __call__(self, _e: simpy.Event) -> None:
        self.batch.succeed()


class Server:
    """One connection server. :meth:`work` holds a core, FIFO with all other work."""

    def __init__(self, env: simpy.Environment, sc: Scenario, rec: "Recorder", service: ServiceTimes, idx: int):
        self.env, self.rec, self.idx = env, rec, idx
        self.cores = sc.server_cores
        self.cpu = Cpu(env, capacity=sc.server_cores)
        self.exponential = service.exponential
        self.unit = service.unit
        self.alive = True
        self.epoch = 0
        self.died_at = math.inf
        self.silent = False  # a silent crash: the host stops answering instead of resetting
        self.rate = sc.max_connects_per_s
        self.tokens = max(1.0, self.rate)
        self.token_t = 0.0
        self.busy = rec.new_cpu_bins()  # CPU seconds started in each bin
        # direct design: messages this server keeps in memory for a recipient with no session
        self.held: dict[int, list["LogEvent"]] = {}
        #: the group commit (queue design with cpu_commit_batch_ms > 0), else None
        self.committer = (Committer(self, sc.cpu_commit_batch_ms * 1e-3, sc.persist_latency_ms * 1e-3,
                                    sc.queue_latency_ms * 1e-3)
                          if sc.cpu_commit_batch_ms > 0.0 and sc.delivery_design == "queue" else None)

    def work(self, op: str, cost_s: float) -> Work:
        """Hold one core for *cost_s*; return False if the server crashed meanwhile."""
        epoch = self.epoch
        if cost_s <= 0.0:
            return self.alive
        if self.exponential:
            cost_s *= self.unit()
        env = self.env
        arrival = env.now
        cpu = self.cpu
        req = cpu.acquire()
        if req is not None:  # every core busy: wait in the FIFO queue
            yield req
        start = env.now
        yield env.timeout(cost_s)
        cpu.free(req)
        if self.epoch != epoch:
            return False
        self.rec.cpu(op, arrival, start, cost_s, self.busy)
        return True

    def admit(self, now: float) -> bool:
        """Token bucket of ``max_connects_per_s`` (burst: one second's worth); 0 = no limit."""
        if self.rate <= 0:
            return True
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.token_t) * self.rate)
        self.token_t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def crash(self, silent: bool) -> None:
        """Queued and running work dies with the process; so does what it held in memory."""
        self.alive = False
        self.silent = silent
        self.epoch += 1
        self.died_at = self.env.now
        self.cpu = Cpu(self.env, capacity=self.cores)

    def restart(self) -> None:
        self.alive = True
        self.silent = False
        self.tokens = max(1.0, self.rate)
        self.token_t = self.env.now


def last_refresh(since: float, t: float, period: float) -> float:
    """The last refresh at or before *t* of something written at *since* and refreshed every *period*."""
    if t <= since:
        return since
    return since + math.floor((t - since) / period) * period


class Registry:
    """user -> connection server, with the expiry rule of a TTL'd key refreshed by heartbeat."""

    __slots__ = ("ttl", "period", "server", "since", "until")

    def __init__(self, users: int, ttl_s: float, refresh_s: float):
        self.ttl, self.period = ttl_s, refresh_s
        self.server: list[Server | None] = [None] * users
        self.since = [0.0] * users
        self.until = [math.inf] * users

    def register(self, user: int, server: Server, now: float) -> None:
        """A connection opened on *server* (it overwrites whatever the entry said)."""
        self.server[user] = server
        self.since[user] = now
        self.until[user] = math.inf

    def server_died(self, server: Server, now: float) -> None:
        """Nobody refreshes the entries of *server* any more: each lapses ``ttl`` after its last refresh."""
        for u, s in enumerate(self.server):
            if s is server and self.until[u] > now:
                self.until[u] = (last_refresh(self.since[u], now, self.period) + self.ttl) if self.ttl > 0 else now

    def close(self, user: int, at: float) -> None:
        """A live server closes the user's session at *at* and deletes the entry."""
        if at < self.until[user]:
            self.until[user] = at

    def lookup(self, user: int, now: float) -> Server | None:
        """Where the delivery path sends the user's events now (None: the user has no session)."""
        if now >= self.until[user]:
            return None
        return self.server[user]


class Cluster:
    """``servers`` connection servers behind a sticky load balancer, and the session registry."""

    def __init__(self, env: simpy.Environment, sc: Scenario, rec: "Recorder", n_servers: int,
                 service: ServiceTimes, lb_rng: np.random.Generator):
        self.servers = [Server(env, sc, rec, service, i) for i in range(n_servers)]
        self.registry = Registry(sc.clients, sc.registry_ttl_s, sc.presence_heartbeat_s)
        self._rng = lb_rng

    def home(self, client: int) -> Server:
        """The server a client starts on."""
        return self.servers[client % len(self.servers)]

    def pick(self, current: Server) -> Server | None:
        """Sticky: the client's own server while it lives, else a random live one (None: none lives)."""
        if current.alive:
            return current
        live = [s for s in self.servers if s.alive]
        if not live:
            return None
        return live[int(self._rng.integers(len(live)))]
