"""Fixtures for the browser tests: a real reference server and a headless Chromium.

The server runs as a subprocess (``python -m chatlab.cli serve``) with its embedded
backends and a fresh data directory. Set ``CHATLAB_TEST_SERVER_URL`` to test a server
that is already running instead. Chromium comes from the system (``CHATLAB_CHROMIUM``,
default ``/usr/bin/chromium``); Playwright's own browser download is never used. A
missing Chromium fails the tests: CI installs it, so a skip would hide a broken setup.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium phones home at start-up, and the closed network refuses it.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running reference server, e.g. ``http://127.0.0.1:41234``."""
    external = os.environ.get("CHATLAB_TEST_SERVER_URL")
    if external:
        url = external.rstrip("/")
        if not _healthy(url):
            pytest.fail(f"CHATLAB_TEST_SERVER_URL={external}: GET /healthz does not answer 200")
        yield url
        return

    yield from _running_server(tmp_path_factory.mktemp("server-data"))


#: The key of the server that `instructor_server_url` starts (docs/WORKSHOP.md).
INSTRUCTOR_KEY = "browser-test-instructor"


@pytest.fixture(scope="session")
def instructor_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own started with ``--instructor-key INSTRUCTOR_KEY``: the tests that take
    it down do not disturb the shared one."""
    yield from _running_server(tmp_path_factory.mktemp("instructor-server-data"),
                               "--instructor-key", INSTRUCTOR_KEY)


def _running_server(data_dir: Path, *extra: str) -> Iterator[str]:
    """``chatlab serve`` on a free port with *data_dir* (and *extra* arguments) until the
    generator is closed; yields its URL once /healthz answers."""
    log_path = data_dir / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "chatlab.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), *extra]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"`{' '.join(cmd)}` exited with status {proc.returncode}:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer {url}/healthz within "
                            f"{SERVER_START_TIMEOUT_S:.0f} s; log:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHATLAB_CHROMIUM", "/usr/bin/chromium")
    resolved = shutil.which(path)
    if resolved is None:
        pytest.fail(f"Chromium not found at {path!r} (set CHATLAB_CHROMIUM to its path; "
                    "on Debian/Ubuntu: apt-get install chromium). The browser tests need it.")
    return resolved


@pytest.fixture(scope="module")
def browser(chromium_path: str):
    # Module scope: Playwright's sync API keeps an event loop running in this thread while it
    # is open, which would break every asyncio test that runs after this module.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
