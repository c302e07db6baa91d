import time
from playwright.sync_api import expect
from tests.browser.test_demo_page import Client, unique

def test_timing(browser, server_url):
    T=time.time()
    def lap(w): print(f"{time.time()-T:6.2f} {w}")
    alice = Client(browser, server_url, unique("alice")); lap("ctx a")
    bob = Client(browser, server_url, unique("bob")); lap("ctx b")
    alice.login("websocket"); lap("login a")
    bob.login("websocket"); lap("login b")
    alice.open_chat(bob.user); lap("open a")
    bob.open_chat(alice.user); lap("open b")
    alice.send("hello bob"); lap("send")
    expect(bob.rows("in", "hello bob")).to_have_count(1); lap("bob sees")
    expect(alice.rows("out", "hello bob")).to_have_attribute("data-state", "read"); lap("read")
    expect(alice.presence(bob.user)).to_have_attribute("data-status", "online"); lap("presence")
    alice.close(); bob.close(); lap("close")
