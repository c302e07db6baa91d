"""The demo page, unchanged, through `chatlab cluster` (two servers behind HAProxy): alice
on s1 and bob on s2 chat; then bob's server is SIGKILLed, his page reconnects with backoff
through HAProxy to s1, resumes, and the conversation goes on with nothing lost or shown twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.server.conftest import PG_ADMIN_URL, REDIS_URL

from .test_demo_page import TIMEOUT_MS, Client, unique

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]


def _pg(sql: str) -> None:
    """Synchronously (Playwright's sync API keeps an event loop running in this thread)."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} does not answer ({str(exc).strip()[:120]})")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """``chatlab cluster --servers 2`` on the real Redis and a database of its own: (URL, pid of each server)."""
    name = f"chatlab_test_{uuid.uuid4().hex[:12]}"
    _pg(f'CREATE DATABASE "{name}"')
    work = tmp_path_factory.mktemp("cluster")
    proc = subprocess.Popen([sys.executable, "-m", "chatlab.cli", "cluster", "--servers", "2", "--port", "0",
                             "--redis-url", REDIS_URL, "--db", PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
                             "--work-dir", str(work / "w")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (banner and banner[-1].startswith("Kill a server")):
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line)
        text = "".join(banner)
        url = re.search(r"chat cluster on (http://\S+)/", text)
        pids = {sid: int(pid) for sid, pid in re.findall(r"^  (s\d+): pid (\d+)", text, re.M)}
        assert url is not None and len(pids) == 2, text
        yield url.group(1), pids
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PinnedClient(Client):
    """A user whose browser starts with HAProxy's cookie for *server*, so the test knows
    where each page lives."""

    def __init__(self, browser: Browser, base_url: str, user: str, server: str) -> None:
        self.user = user
        self.context = browser.new_context(viewport={"width": 1200, "height": 640})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.add_cookies([{"name": "SERVERID", "value": server, "url": base_url}])
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(base_url + "/")

    def server(self) -> str | None:
        return next((c["value"] for c in self.context.cookies() if c["name"] == "SERVERID"), None)


def test_the_page_survives_its_server_being_killed(browser: Browser, cluster: tuple[str, dict[str, int]]) -> None:
    url, pids = cluster
    alice = PinnedClient(browser, url, unique("alice"), "s1")
    bob = PinnedClient(browser, url, unique("bob"), "s2")
    try:
        alice.login("websocket")
        bob.login("websocket")
        alice.open_chat(bob.user)
        bob.open_chat(alice.user)
        alice.send("before the crash")
        expect(bob.rows("in", "before the crash")).to_have_count(1)
        assert (alice.server(), bob.server()) == ("s1", "s2")

        os.kill(pids["s2"], signal.SIGKILL)  # bob's server dies; the kernel resets his WebSocket
        deadline = time.monotonic() + 15
        while bob.server() != "s1" and time.monotonic() < deadline:
            bob.page.wait_for_timeout(100)   # his page backs off, reconnects, HAProxy re-pins it
        assert bob.server() == "s1", "HAProxy moved bob's page to the live server"
        expect(bob.tid("conn-status")).to_have_attribute("data-state", "connected")

        alice.send("after the crash")
        expect(bob.rows("in", "after the crash")).to_have_count(1)
        bob.send("still here")
        expect(alice.rows("in", "still here")).to_have_count(1)
        expect(alice.rows("out", "after the crash")).to_have_attribute("data-state", "read")
        expect(bob.rows("in", "before the crash")).to_have_count(1)  # the resume showed nothing twice
    finally:
        alice.close()
        bob.close()
