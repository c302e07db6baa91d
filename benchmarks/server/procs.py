"""Child processes of ``make bench-server``: the servers under test (pinned to CPU 0) and the
load generator (pinned to CPU 1), started so that none can outlive the benchmark.

Every child is started through ``taskset -c CPU`` (which execs the command: the pid is the
command's own), in a session of its own (a Ctrl-C in the terminal reaches the orchestrator
only, which then stops the children in order), with ``PR_SET_PDEATHSIG`` = SIGKILL (if the
orchestrator itself is killed, the kernel kills its children), and is recorded in a registry
that :func:`stop_all` and an ``atexit`` hook empty.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from reference_server.loadgen.process import cpu_seconds, die_with_parent, raise_nofile

__all__ = ["Child", "ChildFailed", "cpu_seconds", "raise_nofile", "rss_bytes", "stop_all"]

SERVER_CPU = "0"
LOADGEN_CPU = "1"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_URL = re.compile(r"on (http://[0-9.]+:\d+)")
_LIVE: set["Child"] = set()


class ChildFailed(RuntimeError):
    """A child did not start, did not answer, or exited; the message says which and why."""


def rss_bytes(pid: int) -> int:
    """Resident set size of process *pid* (``/proc/<pid>/statm``, field 2, in pages)."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """``{cpu: (busy, total)}`` ticks from ``/proc/stat``, busy including steal."""
    out = {}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                out[name[3:]] = (sum(v) - v[3] - v[4], sum(v))
    return out


async def wait_quiet(max_wait_s: float, threshold: float = 0.15, cpus: tuple[str, ...] = (SERVER_CPU, LOADGEN_CPU)
                     ) -> tuple[float, dict[str, float]]:
    """Wait (at most *max_wait_s*, checking each second) until each of *cpus* was busy less
    than *threshold* of the last second: other processes on a shared machine. Returns the
    time waited and the last busy fractions."""
    t0 = time.monotonic()
    while True:
        a = cpu_ticks()
        await asyncio.sleep(1.0)
        b = cpu_ticks()
        busy = {c: (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in cpus if c in a and c in b}
        waited = time.monotonic() - t0
        if all(x < threshold for x in busy.values()) or waited >= max_wait_s:
            return waited, busy


#: Debug switches a benchmark must not inherit: PYTHONASYNCIODEBUG turns on asyncio's debug
#: mode for *any* non-empty value, "0" included (the Makefile exports it), and that mode
#: tracks every coroutine's origin and times every callback, several times slower.
_DEBUG_ENV = ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "NODE_OPTIONS", "DEBUG")


def bench_env() -> dict[str, str]:
    """This process's environment without debug switches, for the children."""
    return {k: v for k, v in os.environ.items() if k not in _DEBUG_ENV}


def pinning_available() -> bool:
    """True when ``taskset`` exists and the machine has CPUs 0 and 1."""
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0) & {0, 1}) == 2


@dataclass(eq=False)
class Child:
    """One child process. :meth:`start` returns once it has printed its URL (``... on
    http://HOST:PORT``, for servers) and, with *health_path*, once that path answers 200."""

    name: str
    cmd: list[str]
    cpu: str | None
    log_path: Path
    cwd: Path | None = None
    health_path: str | None = None
    start_timeout_s: float = 30.0
    expect_url: bool = True
    stdin_pipe: bool = False
    proc: asyncio.subprocess.Process | None = None
    url: str = ""
    _drain: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ChildFailed(f"{self.name}: not started")
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    async def start(self) -> "Child":
        cmd = (["taskset", "-c", self.cpu] if self.cpu is not None else []) + self.cmd
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=self.cwd, env=bench_env(), stdout=asyncio.subprocess.PIPE, stderr=log,
                stdin=asyncio.subprocess.PIPE if self.stdin_pipe else asyncio.subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL), limit=64 * 1024 * 1024)
        _LIVE.add(self)
        if not self.expect_url:
            return self
        try:
            line = await asyncio.wait_for(self.readline(), self.start_timeout_s)
        except asyncio.TimeoutError:
            await self.stop()
            raise ChildFailed(f"{self.name}: did not start within {self.start_timeout_s:g} s "
                              f"(log: {self.log_path})") from None
        m = _URL.search(line)
        if not m:
            await self.stop()
            raise ChildFailed(f"{self.name}: exited at start-up: {self.log_tail()}")
        self.url = m.group(1)
        self._drain = asyncio.create_task(self._drain_stdout())
        if self.health_path:
            await self.wait_healthy()
        return self

    async def readline(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        return (await self.proc.stdout.readline()).decode(errors="replace")

    async def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(Exception):
            while await self.proc.stdout.read(65536):
                pass

    def log_tail(self, n: int = 3) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(line[:300] for line in lines[-n:]) if lines else "no output"

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        async with aiohttp.ClientSession() as s:
            while True:
                if not self.alive:
                    raise ChildFailed(f"{self.name}: exited with status {self.proc.returncode}: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    async with s.get(self.url + str(self.health_path), timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise ChildFailed(f"{self.name}: {self.url}{self.health_path} did not answer within "
                                      f"{self.start_timeout_s:g} s")
                await asyncio.sleep(0.05)

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after *grace_s*; idempotent."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 5.0)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain
        _LIVE.discard(self)


async def stop_all() -> None:
    """Stop every child still running (in parallel)."""
    await asyncio.gather(*(c.stop(grace_s=3.0) for c in list(_LIVE)), return_exceptions=True)


@atexit.register
def _kill_leftovers() -> None:
    # Last resort (an exception escaped the event loop): SIGKILL whatever is left.
    for c in list(_LIVE):
        if c.proc is not None and c.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
