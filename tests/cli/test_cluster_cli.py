"""``chatlab cluster``: bad input and a missing component are one line and exit status 2;
a cluster stops every process it started on SIGTERM or Ctrl-C (SIGINT), and a start that
fails leaves none behind. Processes are found by their command lines, which all name the
cluster's work directory (servers' data dirs, HAProxy's configuration, Redis' and
PostgreSQL's directories)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.server.conftest import PG_ADMIN_URL, REDIS_URL

ROOT = Path(__file__).resolve().parents[2]


def chatlab(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    # Without asyncio's debug mode (make test sets it): its slow-callback reports would be
    # lines of stderr that a user of the command never sees.
    return subprocess.run([sys.executable, "-m", "chatlab.cli", "cluster", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONASYNCIODEBUG": "", **(env or {})})


def processes_naming(path: Path) -> list[str]:
    """Command lines of live processes that mention *path*."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd and int(pid) != os.getpid():
            found.append(f"{pid}: {cmd[:160]}")
    return found


@pytest.mark.parametrize("args, names", [
    (["--servers", "0"], "--servers=0"),
    (["--servers", "17"], "--servers=17"),
    (["--servers", "four"], "--servers=four"),
    (["--port", "70000"], "--port=70000"),
    (["--host", "999.1.1.1"], "--host=999.1.1.1"),
    (["--db", "var/chat.sqlite3"], "--db=var/chat.sqlite3"),
    (["--redis-url", "http://x"], "--redis-url=http://x"),
    (["--redis-url", "redis://127.0.0.1:1/0"], "Redis does not answer"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_and_status_2(args: list[str], names: str) -> None:
    r = chatlab(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and names in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("var, package", [("CHATLAB_HAPROXY", "haproxy"),
                                          ("CHATLAB_REDIS_SERVER", "redis-server")])
def test_a_missing_component_is_one_line_naming_the_package(var: str, package: str, tmp_path: Path) -> None:
    r = chatlab("--work-dir", str(tmp_path / "w"), env={var: str(tmp_path / "not-installed")})
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and f"apt-get install {package}" in r.stderr, r.stderr
    assert not processes_naming(tmp_path)


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``chatlab cluster`` until its banner; returns the process and the banner."""
    proc = subprocess.Popen([sys.executable, "-m", "chatlab.cli", "cluster", "--servers", "2", "--port", "0",
                             "--work-dir", str(tmp_path / "w"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Kill a server"):
            return proc, "".join(lines)
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"no banner: {''.join(lines)}{out} {err}")


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_process(sig: int, tmp_path: Path) -> None:
    """Given Redis and PostgreSQL: the servers and HAProxy stop on SIGTERM or Ctrl-C."""
    import asyncio

    from tests.server.conftest import _pg_admin

    name = f"chatlab_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        proc, banner = _start(tmp_path, "--redis-url", REDIS_URL, "--db", PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        url = re.search(r"chat cluster on (http://\S+)/", banner)
        assert url is not None, banner
        with urllib.request.urlopen(url.group(1) + "/", timeout=5) as r:  # the demo page, through HAProxy
            assert r.status == 200 and "SERVERID=s" in r.headers.get("Set-Cookie", "")
        assert len(processes_naming(tmp_path)) >= 3, "two servers and HAProxy"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)  # also closes the pipes
        assert proc.returncode in (0, 130), err
        assert "stopping" in out
        assert not processes_naming(tmp_path)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.slow
def test_a_failed_start_leaves_no_process(tmp_path: Path) -> None:
    """Private Redis and PostgreSQL start, two servers start, then HAProxy refuses to run
    (a stand-in program that exits 1): everything started is stopped, one error line."""
    fake = tmp_path / "haproxy"
    fake.write_text("#!/bin/sh\necho '[ALERT] refusing on purpose' >&2\nexit 1\n")
    fake.chmod(0o755)
    pg_before = set(processes_naming(Path(tempfile.gettempdir()) / "chatlab-pg-"))
    r = chatlab("--servers", "2", "--port", "0", "--work-dir", str(tmp_path / "w"),
                env={"CHATLAB_HAPROXY": str(fake)}, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("error: the cluster did not start") and "refusing on purpose" in r.stderr, r.stderr
    assert (tmp_path / "w" / "s2" / "server.log").exists(), "the servers had started"
    assert not processes_naming(tmp_path)
    # As root the private PostgreSQL lives in a temporary directory of the postgres user's own
    # (chatlab-pg-*), not under the work directory: no new one may survive either.
    assert set(processes_naming(Path(tempfile.gettempdir()) / "chatlab-pg-")) <= pg_before
    assert not (tmp_path / "w" / "postgres").exists()
