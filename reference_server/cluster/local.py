"""A cluster on one machine: N connection servers, a shared Redis and PostgreSQL, and
HAProxy in front (docs/server.md, "A cluster").

    cluster = await LocalCluster(ClusterSpec(servers=4)).start()
    print(cluster.url)                  # the one URL clients use (HAProxy)
    await cluster.kill(0)               # SIGKILL server s1; HAProxy sends its clients elsewhere
    await cluster.restart(0)            # same port, same database
    await cluster.stop()                # everything, in order

Redis and PostgreSQL are the ones given (``redis_url``, ``db_url``) or private ones started
here (:mod:`.components`). Each server is ``python -m reference_server.loadgen.server_proc``
with ``--server-id s<i>``, so its CPU can be read and it can be SIGKILLed. A start that fails
stops whatever it had started and raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..loadgen.server_proc import ServerFailed, ServerProcess
from .components import Backend, ComponentFailed, HAProxy, MissingComponent, PrivatePostgres, PrivateRedis

#: Most servers one command starts (each is a process with its own connections to Redis and PostgreSQL).
MAX_SERVERS = 16


@dataclass(frozen=True)
class ClusterSpec:
    """What to start. ``port`` 0 = any free port for the front door."""

    servers: int = 4
    host: str = "127.0.0.1"
    port: int = 0
    #: Shared Redis and PostgreSQL; None = start private ones in the work directory.
    redis_url: str | None = None
    db_url: str | None = None
    #: Where logs, HAProxy's configuration and private databases go (None: a temporary
    #: directory, deleted at stop).
    work_dir: Path | None = None
    #: "default" (the server as users run it) or "loadtest" (rate limit raised, cheap scrypt).
    profile: str = "default"
    redis_prefix: str = ""
    #: HAProxy's health-check interval; a server is marked down after two failed checks.
    check_inter_ms: int = 1000
    start_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.servers <= MAX_SERVERS:
            raise ValueError(f"servers={self.servers}: expected an integer 1-{MAX_SERVERS}")
        if self.profile not in ("default", "loadtest"):
            raise ValueError(f"profile={self.profile}: expected default or loadtest")


class LocalCluster:
    """See the module docstring. Also an async context manager (stops on exit)."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.redis: PrivateRedis | None = None
        self.postgres: PrivatePostgres | None = None
        self.servers: list[ServerProcess] = []
        self.haproxy: HAProxy | None = None
        self.redis_url = spec.redis_url
        self.db_url = spec.db_url
        self.prefix = spec.redis_prefix or f"chatlab-cluster-{uuid.uuid4().hex[:8]}"
        self._own_dir = spec.work_dir is None
        self.work_dir = Path(spec.work_dir) if spec.work_dir else Path(tempfile.mkdtemp(prefix="chatlab-cluster-"))

    # --- what clients and tools read ------------------------------------------------------
    @property
    def url(self) -> str:
        """The front door (HAProxy)."""
        if self.haproxy is None:
            raise ComponentFailed("the cluster is not started")
        return self.haproxy.url

    @property
    def port(self) -> int:
        return self.haproxy.port if self.haproxy is not None else 0

    def server_ids(self) -> list[str]:
        return [s.server_id for s in self.servers]

    def cpu_seconds(self, which: str = "servers") -> float:
        """CPU seconds so far of the connection servers (``servers``; a dead one counts what
        it had used when it was last read) or of ``haproxy``."""
        if which == "haproxy":
            from ..loadgen.server_proc import cpu_seconds

            assert self.haproxy is not None and self.haproxy.child.proc is not None
            return cpu_seconds(self.haproxy.child.proc.pid)
        total = 0.0
        for s in self.servers:
            with contextlib.suppress(OSError, ValueError, ServerFailed):
                self._last_cpu[s.server_id] = s.cpu_seconds()
            total += self._base_cpu.get(s.server_id, 0.0) + self._last_cpu.get(s.server_id, 0.0)
        return total

    _last_cpu: dict[str, float]
    _base_cpu: dict[str, float]

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> "LocalCluster":
        self._last_cpu, self._base_cpu = {}, {}
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        spec = self.spec
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.redis_url is None:
            self.redis = await PrivateRedis(self.work_dir / "redis").start()
            self.redis_url = self.redis.url
        if self.db_url is None:
            self.postgres = await PrivatePostgres(self.work_dir / "postgres").start()
            self.db_url = self.postgres.url()
        self.servers = [ServerProcess(self.work_dir / f"s{i + 1}", redis_url=self.redis_url,
                                      redis_prefix=self.prefix, server_id=f"s{i + 1}", db_url=self.db_url,
                                      profile=spec.profile, start_timeout_s=spec.start_timeout_s,
                                      parent_death_signal=9)
                        for i in range(spec.servers)]
        # The first creates the schema (under an advisory lock anyway); the rest start together.
        await self.servers[0].start()
        await asyncio.gather(*(s.start() for s in self.servers[1:]))
        self.haproxy = HAProxy(self.work_dir / "haproxy",
                               [Backend(s.server_id, "127.0.0.1", s.port) for s in self.servers],
                               host=spec.host, port=spec.port, check_inter_ms=spec.check_inter_ms)
        await self.haproxy.start()
        await self.haproxy.wait_states({s.server_id: "UP" for s in self.servers}, spec.start_timeout_s)

    async def kill(self, index: int) -> None:
        """SIGKILL server *index*: it dies at once, the kernel resets its connections."""
        s = self.servers[index]
        self.cpu_seconds()
        await s.kill()
        self._base_cpu[s.server_id] = self._base_cpu.get(s.server_id, 0.0) + self._last_cpu.pop(s.server_id, 0.0)

    async def restart(self, index: int, wait_up: bool = True) -> None:
        """Start server *index* again (same port, same database) and, with *wait_up*, wait
        until HAProxy's health checks see it up."""
        s = self.servers[index]
        await s.start()
        if wait_up and self.haproxy is not None:
            await self.haproxy.wait_states({s.server_id: "UP"}, self.spec.start_timeout_s)

    async def stop(self) -> None:
        """Stop everything that runs, in order (front door, servers, Redis, PostgreSQL),
        and delete the temporary directory. Safe to call twice or after a failed start."""
        if self.haproxy is not None:
            await self.haproxy.stop()
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)
        if self.redis is not None:
            await self.redis.stop()
        if self.postgres is not None:
            await self.postgres.stop()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    async def __aenter__(self) -> "LocalCluster":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ClusterTarget:
    """A cluster as the load generator's target (``reference_server.loadgen.runner.Target``):
    clients reach HAProxy; the crash SIGKILLs server *victim* and restarts it."""

    def __init__(self, cluster: LocalCluster, victim: int = 0) -> None:
        self.cluster = cluster
        self.victim = victim
        #: When the last restart's server was back in HAProxy's rotation.
        self.available_at = 0.0

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def proc(self) -> asyncio.subprocess.Process | None:
        return self.cluster.haproxy.child.proc if self.cluster.haproxy is not None else None

    def cpu_seconds(self) -> float:
        """All connection servers' CPU seconds so far."""
        return self.cluster.cpu_seconds()

    async def kill(self) -> None:
        await self.cluster.kill(self.victim)

    async def start(self) -> None:
        """Restart the victim; returns once HAProxy's health checks see it up."""
        await self.cluster.restart(self.victim)
        self.available_at = time.monotonic()


__all__ = ["ClusterSpec", "ClusterTarget", "ComponentFailed", "LocalCluster", "MissingComponent", "ServerFailed"]
