"""The demo page (reference_server/static/) in headless Chromium against the real server.

Two browser contexts, alice and bob, chat over each transport: bob sees alice's
message, and alice's message climbs to the blue "read" tick.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.browser

TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)
_names = itertools.count()


def unique(name: str) -> str:
    """A user name no other test uses, so the tests share one server without interfering."""
    return f"{name}_{os.getpid() % 10000}_{next(_names)}"


class Client:
    """One user in their own browser context (own storage, own connections)."""

    def __init__(self, browser: Browser, base_url: str, user: str) -> None:
        self.user = user
        self.context = browser.new_context(viewport={"width": 1200, "height": 640})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(base_url + "/")

    def tid(self, testid: str):
        return self.page.get_by_test_id(testid)

    def login(self, transport: str, poll_interval_s: float | None = None) -> None:
        self.tid("transport-select").select_option(transport)
        if poll_interval_s is not None:
            self.tid("poll-interval").fill(str(poll_interval_s))
        self.tid("login-user").fill(self.user)
        self.tid("login-password").fill("correct horse battery")
        self.tid("login-submit").click()
        expect(self.tid("whoami")).to_contain_text(self.user)
        expect(self.tid("conn-status")).to_have_attribute("data-state", "connected")

    def open_chat(self, peer: str) -> None:
        self.tid("peer-input").fill(peer)
        self.tid("peer-open").click()
        expect(self.peer_item(peer)).to_have_class(re.compile("open"))

    def send(self, text: str) -> None:
        self.tid("message-input").fill(text)
        self.tid("send-button").click()

    def rows(self, direction: str, text: str):
        return self.tid("messages").locator(f'[data-testid="message"][data-direction="{direction}"]',
                                            has_text=text)

    def peer_item(self, peer: str):
        return self.tid("peer-list").locator(f'[data-testid="peer"][data-user="{peer}"]')

    def presence(self, peer: str):
        return self.tid("peer-list").locator(f'[data-testid="presence-dot"][data-user="{peer}"]')

    def close(self) -> None:
        if self.page.is_closed():
            return
        self.context.close()
        assert not self.errors, f"JavaScript errors on {self.user}'s page: {self.errors}"


@pytest.fixture
def clients(browser: Browser, server_url: str) -> Iterator[Callable[[str], "Client"]]:
    made: list[Client] = []

    def make(name: str) -> Client:
        made.append(Client(browser, server_url, unique(name)))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.mark.parametrize("transport", ["websocket", "long_polling", "short_polling"])
def test_message_reaches_read_tick(clients, transport: str, tmp_path) -> None:
    alice, bob = clients("alice"), clients("bob")
    interval = 0.5 if transport == "short_polling" else None
    alice.login(transport, interval)
    bob.login(transport, interval)
    alice.open_chat(bob.user)
    bob.open_chat(alice.user)   # bob looks at the conversation, so his page sends "read"

    alice.send("hello bob")
    expect(bob.rows("in", "hello bob")).to_have_count(1)
    mine = alice.rows("out", "hello bob")
    expect(mine).to_have_count(1)
    expect(mine).to_have_attribute("data-state", "read")
    expect(mine.get_by_test_id("ticks")).to_have_text("✓✓")

    bob.send("hi alice")
    expect(alice.rows("in", "hi alice")).to_have_count(1)
    expect(bob.rows("out", "hi alice")).to_have_attribute("data-state", "read")

    # Both are logged in, so each sees the other online.
    expect(alice.presence(bob.user)).to_have_attribute("data-status", "online")
    expect(bob.presence(alice.user)).to_have_attribute("data-status", "online")

    # The meter counted this transport's traffic.
    if transport == "websocket":
        expect(alice.tid("count-frames-up")).not_to_have_text("0")
        expect(alice.tid("count-frames-down")).not_to_have_text("0")
    else:
        expect(alice.tid("count-requests")).not_to_have_text("0")
        expect(alice.tid("count-frames-up")).to_have_text("0")
    if transport == "short_polling":
        expect(alice.tid("count-empty-polls")).not_to_have_text("0")
    expect(alice.tid("count-bytes-down")).not_to_have_text("0")

    alice.page.screenshot(path=tmp_path / f"alice-{transport}.png")
    bob.page.screenshot(path=tmp_path / f"bob-{transport}.png")


def test_ticks_go_sent_delivered_read(clients) -> None:
    """While bob looks at another conversation alice's message stops at "delivered";
    it turns "read" when bob opens the conversation. Alice leaving turns her dot grey."""
    alice, bob = clients("alice"), clients("bob")
    alice.login("websocket")
    bob.login("websocket")
    bob.open_chat(unique("carol"))
    alice.open_chat(bob.user)

    alice.send("are you there?")
    mine = alice.rows("out", "are you there?")
    expect(mine).to_have_attribute("data-state", "delivered")
    expect(bob.peer_item(alice.user).locator(".badge")).to_have_text("1")
    alice.page.wait_for_timeout(300)
    expect(mine).to_have_attribute("data-state", "delivered")   # still: bob has not looked

    bob.peer_item(alice.user).click()
    expect(mine).to_have_attribute("data-state", "read")

    expect(bob.presence(alice.user)).to_have_attribute("data-status", "online")
    alice.close()   # her socket closes: the server announces her offline to her contacts
    expect(bob.presence(alice.user)).to_have_attribute("data-status", "offline")


def test_websocket_reconnects_and_resumes(clients) -> None:
    """Alice's socket drops; bob writes meanwhile; alice reconnects with backoff, resumes
    from her cursor and shows the message exactly once."""
    alice, bob = clients("alice"), clients("bob")
    alice.login("websocket")
    bob.login("websocket")
    alice.open_chat(bob.user)
    bob.open_chat(alice.user)
    bob.send("before the drop")
    expect(alice.rows("in", "before the drop")).to_have_count(1)

    # Drop alice's socket and hold her reconnect back until bob's next message is stored.
    alice.page.evaluate("""() => {
        const t = window.chatlab.state.transport;
        window.chatlab.reconnect = t.connect.bind(t);
        t.connect = () => { t.ctx.status('backing_off', 'held by the test'); };
        t.ws.close(4000, 'dropped by the test');
    }""")
    expect(alice.tid("conn-status")).to_have_attribute("data-state", "backing_off")
    bob.send("during the drop")
    expect(bob.rows("out", "during the drop")).to_have_attribute("data-state", "sent")

    alice.page.evaluate("""() => {
        const t = window.chatlab.state.transport;
        delete t.connect;   // back to the prototype's method
        window.chatlab.reconnect();
    }""")
    expect(alice.tid("conn-status")).to_have_attribute("data-state", "connected")
    expect(alice.rows("in", "during the drop")).to_have_count(1)
    expect(bob.rows("out", "during the drop")).to_have_attribute("data-state", "read")
    expect(alice.rows("in", "before the drop")).to_have_count(1)   # the replay added no copy

    # The same socket drop through the page's own button: full-jitter backoff, then resume.
    alice.tid("drop-connection").click()
    expect(alice.tid("conn-status")).to_have_attribute("data-state", "connected")
    bob.send("after the button")
    expect(alice.rows("in", "after the button")).to_have_count(1)
    expect(alice.tid("messages").locator('[data-testid="message"]')).to_have_count(3)


def test_refused_message_is_marked_failed(clients) -> None:
    """A message to a user who does not exist is refused (404): the row says so."""
    alice = clients("alice")
    alice.login("long_polling")
    nobody = unique("nobody")
    alice.open_chat(nobody)
    expect(alice.presence(nobody)).to_have_attribute("data-status", "unknown")
    alice.send("anyone there?")
    row = alice.rows("out", "anyone there?")
    expect(row).to_have_attribute("data-state", "failed")
    expect(row).to_have_attribute("title", re.compile("no such user"))


def _wire_log(client: Client):
    return client.tid("wire-log").locator("li")


def test_drop_shows_the_backoff_delay_and_the_reconnect(clients) -> None:
    """Each drop: the status badge and the wire log say which delay full jitter chose (base 1 s,
    so retry 1 waits U(0, 1 s)), then the wire log says the page is back and from where."""
    alice = clients("alice")
    alice.login("websocket")
    for n in (1, 2):
        alice.tid("drop-connection").click()
        expect(_wire_log(alice).filter(has_text="the page closes its WebSocket")).to_have_count(n)
        expect(_wire_log(alice).filter(
            has_text=re.compile(r"backoff\s+closed \(\d+\): retry 1 in [01]\.\d\d s = U\(0, 1 s\) full jitter"))) \
            .to_have_count(n)
        expect(_wire_log(alice).filter(has_text=re.compile(r"reconnected after 1 retry, \d+\.\d s away"))) \
            .to_have_count(n)
        expect(alice.tid("conn-status")).to_have_attribute("data-state", "connected")


def test_backoff_numbers_are_chatcore_defaults() -> None:
    """The page's reconnect policy is the simulation's and the Python client's documented one."""
    from pathlib import Path

    from chatcore.params import DEFAULTS  # the defaults docs/PARAMETERS.md lists

    js = (Path(__file__).resolve().parents[2] / "reference_server" / "static" / "transports.js").read_text()
    base = float(re.search(r"BACKOFF_BASE_S = ([\d.]+);", js).group(1))
    cap = float(re.search(r"BACKOFF_CAP_S = ([\d.]+);", js).group(1))
    assert (base, cap) == (DEFAULTS["backoff_base_s"], DEFAULTS["backoff_cap_s"])
    assert DEFAULTS["reconnect_policy"] == "full_jitter"


def test_instructor_takes_the_server_down_and_up(browser: Browser, instructor_server_url: str) -> None:
    """The instructor's panel (/#instructor) takes the server down: alice's page backs off with
    growing windows (retry 2 waits U(0, 2 s)) while bob's message waits unsent; up again, both
    pages resume and the message arrives once."""
    from .conftest import INSTRUCTOR_KEY

    alice = Client(browser, instructor_server_url, unique("alice"))
    bob = Client(browser, instructor_server_url, unique("bob"))
    teacher = Client(browser, instructor_server_url, unique("teacher"))
    teacher.page.goto(instructor_server_url + "/#instructor")
    try:
        for c in (alice, bob):
            c.login("websocket")
        alice.open_chat(bob.user)
        bob.open_chat(alice.user)
        bob.send("before the outage")
        expect(alice.rows("in", "before the outage")).to_have_count(1)

        expect(teacher.tid("instructor-panel")).to_be_visible()
        expect(alice.tid("instructor-panel")).to_be_hidden()
        teacher.tid("instructor-key").fill("not-the-key")
        teacher.tid("instructor-down").click()
        expect(teacher.tid("instructor-state")).to_contain_text("refused")
        expect(alice.tid("conn-status")).to_have_attribute("data-state", "connected")

        teacher.tid("instructor-key").fill(INSTRUCTOR_KEY)
        teacher.tid("instructor-for").fill("0")
        teacher.tid("instructor-down").click()
        expect(teacher.tid("instructor-state")).to_contain_text("server DOWN: 2 connections cut")
        expect(alice.tid("conn-status")).to_have_attribute("data-state", "backing_off")
        expect(alice.tid("conn-status")).to_contain_text("retry")
        # Each failed reconnect widens the window: U(0, 1 s), U(0, 2 s), ...
        expect(_wire_log(alice).filter(has_text=re.compile(r"retry 2 in \d\.\d\d s = U\(0, 2 s\)"))) \
            .to_have_count(1, timeout=30_000)
        bob.send("during the outage")
        expect(bob.rows("out", "during the outage")).to_have_attribute("data-state", "pending")

        teacher.tid("instructor-up").click()
        expect(teacher.tid("instructor-state")).to_have_text("server up")
        for c in (alice, bob):   # the longest wait is one full-jitter window, at most 30 s
            expect(c.tid("conn-status")).to_have_attribute("data-state", "connected", timeout=60_000)
        expect(_wire_log(alice).filter(has_text=re.compile(r"reconnected after [2-9]\d* retries"))).to_have_count(1)
        expect(alice.rows("in", "during the outage")).to_have_count(1, timeout=30_000)
        expect(bob.rows("out", "during the outage")).to_have_attribute("data-state", "read")
        expect(alice.rows("in", "before the outage")).to_have_count(1)
    finally:
        for c in (alice, bob, teacher):
            c.close()
