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
