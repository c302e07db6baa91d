"""Fixtures for the browser tests: a real reference server and a headless Chromium.

The server is the real one (``reference_server.app.run_server``, embedded fakeredis and
SQLite in a fresh directory), run in this process on a thread of its own with its own
event loop, with a cheap scrypt so that logins cost milliseconds. Set
``CHATLAB_TEST_SERVER_URL`` to test a server that is already running instead (e.g.
``chatlab serve``). Chromium comes from the system (``CHATLAB_CHROMIUM``, default
``/usr/bin/chromium``); Playwright's own browser download is never used. A missing
Chromium fails the tests: CI installs it, so a skip would hide a broken setup.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from typing import Iterator

import pytest

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium phones home at start-up, and the closed network refuses it.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_TIMEOUT_S = 30.0


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

    from reference_server.app import run_server
    from reference_server.config import ServerConfig

    config = ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path_factory.mktemp("server-data"),
                          redis_prefix=f"chatlab-browser-{uuid.uuid4().hex[:12]}", scrypt_n=16)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="chat-server", daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(run_server(config), loop).result(SERVER_START_TIMEOUT_S)
        try:
            if not _healthy(server.url):
                pytest.fail(f"the reference server on {server.url} does not answer GET /healthz")
            yield server.url
        finally:
            fut = asyncio.run_coroutine_threadsafe(server.stop(), loop)
            import concurrent.futures, sys, traceback
            try:
                fut.result(8)
            except concurrent.futures.TimeoutError:
                for t in asyncio.all_tasks(loop):
                    print("TASK", t, file=sys.stderr)
                    t.print_stack(file=sys.stderr)
                for tid, fr in sys._current_frames().items():
                    print("THREAD", tid, file=sys.stderr); traceback.print_stack(fr, file=sys.stderr)
                raise
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHATLAB_CHROMIUM", "/usr/bin/chromium")
    resolved = shutil.which(path)
    if resolved is None:
        pytest.fail(f"Chromium not found at {path!r} (set CHATLAB_CHROMIUM to its path; "
                    "on Debian/Ubuntu: apt-get install chromium). The browser tests need it.")
    return resolved


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
