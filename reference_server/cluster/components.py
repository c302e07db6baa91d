"""The real components a local cluster runs on, each a child process of its own:
a private Redis (``redis-server``), a private PostgreSQL (``initdb`` + ``postgres``) and
HAProxy, all from the machine's packages (Debian: ``redis-server``, ``postgresql``,
``haproxy``). Nothing here is a mock; a component that is not installed raises
:class:`MissingComponent` naming the package to install.

Every child is started in a session of its own (Ctrl-C in the terminal reaches only the
supervisor, which stops them in order) and, on Linux, asks the kernel to SIGKILL it if
the supervisor dies first (``PR_SET_PDEATHSIG``), so no component outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..loadgen.server_proc import die_with_parent

TEMPLATE = Path(__file__).resolve().parent / "haproxy.cfg.in"


class MissingComponent(RuntimeError):
    """A program the cluster needs is not installed; the message says what to install."""


class ComponentFailed(RuntimeError):
    """A component did not start or stopped; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_program(name: str, package: str, env: str | None = None, extra_dirs: tuple[str, ...] = ()) -> str:
    """The path of *name* (``$env`` first, then PATH, then *extra_dirs*), or
    :class:`MissingComponent` saying which Debian package provides it."""
    if env and os.environ.get(env):
        path = os.environ[env]
        if shutil.which(path):
            return str(shutil.which(path))
        raise MissingComponent(f"{env}={path}: no such program (install Debian's {package}: "
                               f"apt-get install {package})")
    found = shutil.which(name) or next((str(Path(d) / name) for d in extra_dirs
                                        if (Path(d) / name).is_file()), None)
    if found is None:
        raise MissingComponent(f"{name} is not installed: `apt-get install {package}` (as root), "
                               f"or `make services`; see README.md, 'A cluster'")
    return found


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (``initdb`` and ``postgres`` live there)."""
    if os.environ.get("CHATLAB_PG_BINDIR"):
        given = Path(os.environ["CHATLAB_PG_BINDIR"])
        if (given / "initdb").is_file():
            return given
        raise MissingComponent(f"CHATLAB_PG_BINDIR={given}: no initdb there")
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in p.split("/")[-2].split(".")
                                                                        if x.isdigit()])
    for d in reversed(dirs):
        if (Path(d) / "initdb").is_file():
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise MissingComponent("PostgreSQL is not installed: `apt-get install postgresql` (as root), "
                           "or pass --db postgresql://... of a running one")


def _as_user_kwargs(user: str | None) -> dict[str, Any]:
    return {"user": user, "group": user, "extra_groups": []} if user else {}


@dataclass
class Child:
    """One component process: started in a session of its own, stdout and stderr to *log*."""

    name: str
    proc: asyncio.subprocess.Process | None = None
    log: Path | None = None

    async def spawn(self, cmd: list[str], log: Path, user: str | None = None) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL), **_as_user_kwargs(user))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines() if self.log else []
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "no output"

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise ComponentFailed(f"{self.name} exited with status {self.proc.returncode}: {self.tail()}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """*sig*, then SIGKILL after *timeout* seconds; waits until the process is gone."""
        if not self.running:
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def _wait(what: str, child: Child, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        child.check_alive()
        if await probe():
            return
        if time.monotonic() > deadline:
            raise ComponentFailed(f"{what} did not answer within {timeout:g} s (log: {child.log})")
        await asyncio.sleep(0.05)


async def _tcp_answers(host: str, port: int, payload: bytes = b"", expect: bytes = b"") -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        if payload:
            writer.write(payload)
            data = await asyncio.wait_for(reader.read(64), 1.0)
            return data.startswith(expect)
        return True
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class PrivateRedis:
    """``redis-server`` on a free loopback port, in memory (no RDB, no AOF), its files in *dir*."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = 0
        self.child = Child("redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> "PrivateRedis":
        exe = find_program("redis-server", "redis-server", "CHATLAB_REDIS_SERVER")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        await self.child.spawn([exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"],
                               self.dir / "redis.log")
        await _wait(f"redis-server on port {self.port}", self.child,
                    lambda: _tcp_answers("127.0.0.1", self.port, b"PING\r\n", b"+PONG"), timeout)
        return self

    async def stop(self) -> None:
        await self.child.stop(signal.SIGTERM)


class PrivatePostgres:
    """A PostgreSQL cluster of its own: ``initdb`` into *directory*, ``postgres`` on a free
    loopback port, trust authentication for loopback only, one database ``chat``. As root it
    runs as the ``postgres`` user (PostgreSQL refuses root), in a temporary directory of that
    user's own (it may not be able to reach *directory*), which *directory* links to."""

    def __init__(self, directory: Path, database: str = "chat") -> None:
        self.dir = directory
        self.database = database
        self.port = 0
        self.child = Child("postgres")
        self.user = "postgres" if os.geteuid() == 0 else None
        self._temp: Path | None = None

    def url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database or self.database}"

    async def _run(self, cmd: list[str], what: str) -> None:
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, **_as_user_kwargs(self.user))
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:  # stopped while starting: leave nothing running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            last = out.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ComponentFailed(f"{what} failed (status {proc.returncode}): {last[0][:300]}")

    async def start(self, timeout: float = 30.0) -> "PrivatePostgres":
        bindir = pg_bindir()
        home = self.dir
        if self.user:
            import pwd
            import tempfile

            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise MissingComponent("PostgreSQL's user 'postgres' does not exist: "
                                       "`apt-get install postgresql` creates it") from None
            home = self._temp = Path(tempfile.mkdtemp(prefix="chatlab-pg-"))
            os.chown(home, pw.pw_uid, pw.pw_gid)
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            self.dir.symlink_to(home, target_is_directory=True)
        else:
            home.mkdir(parents=True, exist_ok=True)
        data = home / "data"
        await self._run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                         "--no-sync", "-E", "UTF8", "--locale=C"], "initdb")
        self.port = free_port()
        await self.child.spawn([str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                                "-k", str(home), "-c", "listen_addresses=127.0.0.1",
                                "-c", "max_connections=200"],
                               home / "postgres.log", self.user)
        await _wait(f"PostgreSQL on port {self.port}", self.child, self._accepts, timeout)
        await self.create_database(self.database)
        return self

    async def _accepts(self) -> bool:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self.url("postgres"), connect_timeout=2)
        except psycopg.OperationalError:
            return False
        await conn.close()
        return True

    async def create_database(self, name: str) -> str:
        """Create database *name* (letters, digits, underscores); returns its URL."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and underscores only")
        async with await psycopg.AsyncConnection.connect(self.url("postgres"), autocommit=True) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def stop(self) -> None:
        await self.child.stop(signal.SIGINT, timeout=10.0)  # SIGINT: PostgreSQL's fast shutdown
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.dir.unlink()


def max_connections() -> int:
    """HAProxy's maxconn: two descriptors per connection and some spare, within the hard
    limit on open files (HAProxy raises its own soft limit up to it)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return max(256, min(20_000, (limit - 200) // 2))


@dataclass
class Backend:
    """One connection server as HAProxy sees it."""

    server_id: str
    host: str
    port: int


@dataclass
class HAProxy:
    """HAProxy as the cluster's front door, from the template ``haproxy.cfg.in``: sticky by
    the ``SERVERID`` cookie, health checks on ``/healthz`` every *check_inter_ms*, a stats
    page (and HAProxy's own Prometheus metrics at ``/metrics``) on *stats_port*."""

    directory: Path
    backends: list[Backend]
    host: str = "127.0.0.1"
    port: int = 0
    stats_port: int = 0
    check_inter_ms: int = 1000
    nbthread: int = 1
    child: Child = field(default_factory=lambda: Child("haproxy"))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/"

    @property
    def config_path(self) -> Path:
        return self.directory / "haproxy.cfg"

    def render(self) -> str:
        """The configuration text (the template with this cluster's ports and servers)."""
        ids = [b.server_id for b in self.backends]
        pins = "\n".join(
            f"    http-request deny deny_status 503 if {{ var(txn.pin) -m str {b.server_id} }} "
            f"!{{ srv_is_up(servers/{b.server_id}) }}\n"
            f"    use-server {b.server_id} if {{ var(txn.pin) -m str {b.server_id} }}" for b in self.backends)
        servers = "\n".join(f"    server {b.server_id} {b.host}:{b.port} cookie {b.server_id}" for b in self.backends)
        bind_host = f"[{self.host}]" if ":" in self.host else self.host
        return string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
            maxconn=max_connections(), nbthread=self.nbthread, stats_socket=str(self.directory / "haproxy.sock"),
            bind=f"{bind_host}:{self.port}", check_inter_ms=f"{self.check_inter_ms}ms",
            server_ids=" ".join(ids), pin_rules=pins, server_lines=servers,
            stats_bind=f"127.0.0.1:{self.stats_port}")

    async def start(self, timeout: float = 15.0) -> "HAProxy":
        exe = find_program("haproxy", "haproxy", "CHATLAB_HAPROXY", ("/usr/sbin", "/usr/local/sbin"))
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if not self.stats_port:
            self.stats_port = free_port()
        self.config_path.write_text(self.render(), encoding="utf-8")
        check = await asyncio.create_subprocess_exec(exe, "-c", "-q", "-f", str(self.config_path),
                                                     stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.STDOUT)
        out, _ = await check.communicate()
        if check.returncode != 0:
            lines = [x for x in out.decode(errors="replace").splitlines() if "ALERT" in x] or ["no output"]
            raise ComponentFailed(f"haproxy refused {self.config_path}: {lines[0][:300]}")
        await self.child.spawn([exe, "-db", "-f", str(self.config_path)], self.directory / "haproxy.log")
        await _wait(f"HAProxy on {self.host}:{self.port}", self.child,
                    lambda: _tcp_answers(self.host, self.port), timeout)
        return self

    async def server_states(self) -> dict[str, str]:
        """Each server's state as HAProxy's health checks see it (``UP``, ``DOWN``, ...),
        from the stats page's CSV."""
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.get(self.stats_url + ";csv", timeout=aiohttp.ClientTimeout(total=3)) as r:
                text = await r.text()
        states = {}
        for line in text.splitlines()[1:]:
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "servers" and cols[1] not in ("BACKEND", "FRONTEND"):
                states[cols[1]] = cols[17].split(" ")[0]
        return states

    async def wait_states(self, want: dict[str, str], timeout: float) -> None:
        """Until every named server is in the wanted state (``UP`` or ``DOWN``)."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            self.child.check_alive()
            with contextlib.suppress(OSError, asyncio.TimeoutError, Exception):
                states = await self.server_states()
                if all(states.get(k) == v for k, v in want.items()):
                    return
            if time.monotonic() > deadline:
                raise ComponentFailed(f"HAProxy's health checks: wanted {want}, have {states} after {timeout:g} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.child.stop(signal.SIGTERM)
