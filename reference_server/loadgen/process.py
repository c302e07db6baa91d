"""The reference server as a separate process (:class:`ServerProcess`), so that its CPU is
its own and can be read from ``/proc/<pid>/stat`` and so that it can be killed (SIGKILL) and
restarted. The child runs ``python -m reference_server.loadgen.server_proc``
(:mod:`.server_proc`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

#: Clock ticks per second for /proc/<pid>/stat (utime, stime).
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        text = f.read().decode()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking Linux to send *sig* to the child when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing."""
    def preexec() -> None:
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    return preexec


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (inherited by the children) to *want*, or as
    far as allowed; returns the soft limit now in force."""
    inf = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == inf or soft >= want:
        return soft
    for new_hard in ((hard,) if hard == inf else (max(hard, want), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
            break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ServerFailed(RuntimeError):
    """The server did not start or stopped answering; the message says why."""


@dataclass
class ServerProcess:
    """One ``server_proc`` child. :meth:`start` returns once ``/healthz`` answers."""

    data_dir: Path
    redis_url: str | None = None
    redis_prefix: str = "chatlab"
    port: int = 0
    start_timeout_s: float = 20.0
    #: A server of a cluster: its name, and the shared PostgreSQL database (docs/server.md).
    server_id: str = ""
    db_url: str | None = None
    #: "loadtest" (rate limit raised, cheap scrypt) or "default" (the server as users run it).
    profile: str = "loadtest"
    #: Linux: the signal the child gets if this process dies first (0: none), so that a
    #: supervisor killed without a chance to clean up leaves no server behind.
    parent_death_signal: int = 0
    #: ServerConfig overrides after the profile (``--set NAME=VALUE``), e.g. ``{"admission": False}``.
    settings: dict[str, Any] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    #: When (``time.monotonic()``) the last start said the port accepts connections: its
    #: start-up line, a few milliseconds before ``/healthz`` answers.
    available_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerFailed("server not started")
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    async def start(self) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "server.log", "ab")
        cmd = [sys.executable, "-m", "reference_server.loadgen.server_proc", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--redis-prefix", self.redis_prefix]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        if self.server_id:
            cmd += ["--server-id", self.server_id]
        if self.db_url:
            cmd += ["--db-url", self.db_url]
        if self.profile != "loadtest":
            cmd += ["--profile", self.profile]
        for name, value in self.settings.items():
            cmd += ["--set", f"{name}={value}"]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent(self.parent_death_signal) if self.parent_death_signal else None,
            start_new_session=bool(self.parent_death_signal))
        log.close()
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), self.start_timeout_s)
        except asyncio.TimeoutError:
            await self.kill()
            raise ServerFailed(f"server did not start within {self.start_timeout_s:g} s "
                               f"(log: {self.data_dir / 'server.log'})") from None
        self.available_at = time.monotonic()
        text = line.decode(errors="replace")
        if "chat server on http://" not in text:
            await self.proc.wait()
            raise ServerFailed(f"server exited at start-up: {self._log_tail()}")
        self.port = int(text.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])
        asyncio.create_task(self._drain_stdout(self.proc))
        await self.wait_healthy(self.start_timeout_s)
        return self

    @staticmethod
    async def _drain_stdout(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(Exception):
            while await proc.stdout.read(65536):
                pass

    def _log_tail(self) -> str:
        try:
            lines = (self.data_dir / "server.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "no output"

    async def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise ServerFailed(f"server exited with status {self.proc.returncode}: {self._log_tail()}")
                try:
                    async with s.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise ServerFailed(f"server at {self.url} did not answer /healthz within {timeout_s:g} s")
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: the process dies at once and the kernel resets its connections."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5.0)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except asyncio.TimeoutError:
                await self.kill()
