"""Hostile input, privacy and throttling (issue 10): each test is named after the rule it
protects, and each rule is in docs/PROTOCOL.md or docs/server.md ("Hostile clients").
The fuzz tests (test_fuzz_http.py, test_fuzz_ws.py) look for what these examples miss."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from reference_server import auth as auth_module
from reference_server.clock import FakeClock

from .conftest import PASSWORD, Api, poll_until, stored, wait_until, ws_frames_until, ws_open

BAD_BODIES = {
    "lone surrogate in an unknown key": b'{"user":"alice","password":"pw","\\ud800":1}',
    "lone surrogate in a password": b'{"user":"alice","password":"\\udfff"}',
    "lone surrogate in a message body": b'{"to":"bob","body":"\\ud83d","client_msg_id":"c1"}',
    "arrays 1,100 deep": b"[" * 1100 + b"]" * 1100,
    "objects 1,100 deep": b'{"a":' * 1100 + b"1" + b"}" * 1100,
    "invalid UTF-8": b'{"user":"alice","password":"\xff\xfe"}',
    "NaN": b'{"conversation":"dm:alice:bob","up_to":NaN,"status":"read"}',
    "an integer of 5,000 digits": b'{"conversation":"dm:alice:bob","up_to":' + b"9" * 5000 + b',"status":"read"}',
}


def _no_traceback(records: list[logging.LogRecord]) -> None:
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad]


async def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send *data* on a fresh TCP connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        pass
    writer.close()
    return out


# --- finding 3: bad input is a 4xx (or an error frame / 4001), never a 5xx ---------------
@pytest.mark.parametrize("path", ["/api/register", "/api/login", "/api/messages", "/api/receipts", "/api/groups"])
async def test_lone_surrogate_in_unknown_key_is_a_400_not_a_500(server, api: Api, path: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    token = await api.user("carol")
    before = await stored(server)
    for name, body in BAD_BODIES.items():
        status, answer = await api.call("POST", path, token, data=body,
                                        headers={"Content-Type": "application/json"})
        assert status == 400 and answer["error"] == "bad_request", (name, status, answer)
    assert await stored(server) == before
    _no_traceback(caplog.records)


async def test_non_ascii_authorization_header_is_a_401(server, api: Api) -> None:
    out = await _raw(server.port, b"GET /api/poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  b"Authorization: Bearer \xff\xfe\xc3\xa9\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401 "), out[:200]
    assert b'"unauthorized"' in out


@pytest.mark.parametrize("query", ["limit=" + "9" * 5000, "before=" + "9" * 5000, "limit=1e3", "before=-1"])
async def test_huge_or_malformed_limit_and_before_are_a_400(server, api: Api, query: str) -> None:
    alice, _ = await api.user("alice"), await api.user("bob")
    await api.send(alice, "hi", to="bob")
    status, answer = await api.call("GET", f"/api/conversations/dm:alice:bob/messages?{query}", alice)
    assert status == 400 and answer["error"] == "bad_request", answer
    status, answer = await api.call("GET", "/api/longpoll?timeout=" + "9" * 5000, alice)
    assert status == 400, answer


async def test_websocket_bad_frames_get_an_error_frame_and_the_connection_stays_open(
        server, api: Api, caplog: pytest.LogCaptureFixture) -> None:
    alice, _ = await api.user("alice"), await api.user("bob")
    ws = await ws_open(api, alice)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    before = await stored(server)
    for name, body in BAD_BODIES.items():
        await ws.send_bytes(body) if name == "invalid UTF-8" else await ws.send_str(body.decode())
        frame = (await ws_frames_until(ws, lambda f: True))[0]
        assert frame["type"] == "error" and frame["error"] == "bad_request", (name, frame)
    await ws.send_str('{"type":"send","to":"bob","body":"still open","client_msg_id":"ok1"}')
    assert (await ws_frames_until(ws, lambda f: True))[0]["type"] == "ack"
    await ws.close()
    assert (await stored(server))["messages"] == before["messages"] + 1
    _no_traceback(caplog.records)


@pytest.mark.parametrize("name", [n for n in BAD_BODIES if n != "invalid UTF-8"])
async def test_websocket_bad_auth_frame_closes_4001(server, api: Api, name: str) -> None:
    ws = await api.session.ws_connect(api.ws_url())
    await ws.send_str(BAD_BODIES[name].decode())
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001, (msg, ws.close_code)


async def test_malformed_http_is_logged_at_info_without_traceback(server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        out = await _raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert out.startswith(b"HTTP/1.") and b" 400 " in out.split(b"\r\n")[0], out[:100]
    _no_traceback(caplog.records)
    lines = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert 1 <= len(lines) < 20, "at most one line per interval, not one per request"


# --- finding 6: bounded reads, throttled logins, no user enumeration by timing ------------
async def test_bulk_history_reads_are_refused_429_with_retry_after_and_others_are_served(
        make_server, session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    server = await make_server(clock=clock)
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "hi", to="bob")
    url = "/api/conversations/dm:alice:bob/messages?limit=500"
    answers = await asyncio.gather(*(api.call("GET", url, alice) for _ in range(16)))
    statuses = [s for s, _ in answers]
    # Burst 40, 10 tokens a page of 500: 4 served, 12 refused (the clock does not move).
    assert statuses.count(200) == 4 and statuses.count(429) == 12, statuses
    refusal = next(b for s, b in answers if s == 429)
    assert refusal["error"] == "rate_limited" and refusal["retry_after_ms"] > 0
    async with session.get(server.url + url, headers={"Authorization": f"Bearer {alice}"}) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert (await api.call("GET", url, bob))[0] == 200, "another user's reads are not affected"
    clock.advance(refusal["retry_after_ms"] / 1000)
    assert (await api.call("GET", url, alice))[0] == 200, "served again after retry_after_ms"


async def test_failed_logins_are_throttled_per_account_even_with_the_right_password(
        make_server, session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    server = await make_server(clock=clock, login_failures_per_account_burst=3,
                               login_failures_per_account_per_s=0.1)
    api = Api(session, server.url)
    await api.user("alice", "right")
    for _ in range(3):
        assert (await api.call("POST", "/api/login", json={"user": "alice", "password": "wrong"}))[0] == 401
    status, body = await api.call("POST", "/api/login", json={"user": "alice", "password": "right"})
    assert status == 429 and body["error"] == "rate_limited" and body["retry_after_ms"] == 10_000, body
    # An unknown name is throttled the same way: the answer does not tell who exists.
    for _ in range(3):
        assert (await api.call("POST", "/api/login", json={"user": "nobody", "password": "x"}))[0] == 401
    status, ghost = await api.call("POST", "/api/login", json={"user": "nobody", "password": "x"})
    assert status == 429 and ghost["retry_after_ms"] == body["retry_after_ms"]
    clock.advance(10.0)
    assert (await api.call("POST", "/api/login", json={"user": "alice", "password": "right"}))[0] == 200


async def test_concurrent_failed_logins_cannot_outrun_the_throttle(make_server,
                                                                   session: aiohttp.ClientSession) -> None:
    server = await make_server(clock=FakeClock(), login_failures_per_account_burst=3)
    api = Api(session, server.url)
    await api.user("alice", "right")
    answers = await asyncio.gather(*(api.call("POST", "/api/login", json={"user": "alice", "password": "wrong"})
                                     for _ in range(12)))
    assert sorted(s for s, _ in answers) == [401] * 3 + [429] * 9, "attempts in flight count too"


async def test_failed_logins_are_throttled_per_address(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(clock=FakeClock(), login_failures_per_ip_burst=4)
    api = Api(session, server.url)
    users = [f"ok{i}" for i in range(8)]
    await asyncio.gather(*(api.call("POST", "/api/register", json={"user": u, "password": PASSWORD}) for u in users))
    answers = await asyncio.gather(*(api.call("POST", "/api/login", json={"user": u, "password": PASSWORD})
                                     for u in users))
    assert [s for s, _ in answers] == [200] * 8, "many users behind one address may log in at once"
    for i in range(4):
        assert (await api.call("POST", "/api/login", json={"user": f"u{i}", "password": "x"}))[0] == 401
    status, body = await api.call("POST", "/api/login", json={"user": "u9", "password": "x"})
    assert status == 429 and body["error"] == "rate_limited", body


async def test_unknown_and_known_users_both_run_the_kdf_on_a_failed_login(
        server, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    await api.user("alice", "right")
    calls: list[str] = []
    real = auth_module.verify_password

    def spy(password: str, stored_hash: str) -> bool:
        calls.append(stored_hash)
        return real(password, stored_hash)
    monkeypatch.setattr(auth_module, "verify_password", spy)
    assert (await api.call("POST", "/api/login", json={"user": "alice", "password": "wrong"}))[0] == 401
    assert (await api.call("POST", "/api/login", json={"user": "ghost", "password": "wrong"}))[0] == 401
    assert len(calls) == 2, "both paths run scrypt"
    cost = [h.split("$")[1:4] for h in calls]
    assert cost[0] == cost[1], "the dummy hash has the same cost (N, r, p) as a real one"


# --- finding 7: long polls, slow heads, Origin, headers, tokens ---------------------------
async def test_an_abandoned_long_poll_is_released_and_stops_extending_presence(
        make_server, session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    server = await make_server(clock=clock)
    api = Api(session, server.url)
    alice = await api.user("alice")
    chat = server.chat
    task = asyncio.ensure_future(api.call("GET", "/api/longpoll?timeout=100", alice))
    await wait_until(lambda: chat.metrics.held_longpolls.get() == 1, 10, "the long poll to be held")
    key = f"{chat.config.redis_prefix}:presence:alice"
    (conn, score), = await chat.presence.redis.zrange(key, 0, -1, withscores=True)
    assert score == clock.wall_ms() + chat.presence.ttl_ms + 100_000, "held: alive for the hold + TTL"
    task.cancel()  # the client goes away
    await asyncio.gather(task, return_exceptions=True)
    await session.close()
    await wait_until(lambda: chat.metrics.held_longpolls.get() == 0, 10, "the hold to be released")
    for _ in range(100):  # the release runs right after the hold ends
        score = await chat.presence.redis.zscore(key, conn)
        if score == clock.wall_ms() + chat.presence.ttl_ms:
            break
        await asyncio.sleep(0.05)
    assert score == clock.wall_ms() + chat.presence.ttl_ms, "released: alive one TTL from now, like any poll"


async def test_a_client_dripping_its_request_head_is_cut_off(make_server) -> None:
    server = await make_server(http_header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    start = time.monotonic()
    closed = False
    for i in range(600):  # one header byte every 50 ms: at most 30 s of dripping
        try:
            writer.write(b"X-Drip: y\r\n"[i % 11:i % 11 + 1])
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1024), 0.05)
        except TimeoutError:
            continue
        except ConnectionError:
            closed = True
            break
        if data == b"":
            closed = True
            break
    writer.close()
    assert closed, f"still open after {time.monotonic() - start:.1f} s of dripping"
    async with aiohttp.ClientSession() as s, s.get(server.url + "/healthz") as r:
        assert r.status == 200, "a well-behaved client is served"


async def test_a_body_dripped_too_slowly_is_a_408(make_server) -> None:
    server = await make_server(http_header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 "), head


async def test_an_idle_connection_that_sends_nothing_is_closed(make_server) -> None:
    server = await make_server(http_header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), 30) == b"", "EOF: the server closed it"
    except TimeoutError:
        pytest.fail("an idle connection was still open after 30 s (the head timeout is 0.5 s)")
    finally:
        writer.close()


@pytest.mark.parametrize("origin, allowed", [
    (None, True),                               # not a browser: the Python client, tools
    ("SAME", True),                             # the demo page served by this server
    ("https://chat.example.com", True),         # configured
    ("http://evil.example", False),
    ("null", False),                            # sandboxed frames, file:// pages
])
async def test_websocket_from_a_foreign_origin_is_refused_403_before_the_upgrade(
        make_server, session: aiohttp.ClientSession, origin: str | None, allowed: bool) -> None:
    server = await make_server(ws_allowed_origins=("https://chat.example.com",))
    api = Api(session, server.url)
    token = await api.user("alice")
    headers = {} if origin is None else {"Origin": server.url if origin == "SAME" else origin}
    if allowed:
        ws = await session.ws_connect(api.ws_url(), headers=headers)
        await ws.send_json({"type": "auth", "token": token})
        await ws.send_json({"type": "resume", "after": None})
        assert (await ws_frames_until(ws, lambda f: f["type"] == "resumed"))[-1]["recovered"]
        await ws.close()
    else:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(api.ws_url(), headers=headers)
        assert err.value.status == 403


async def test_pages_carry_security_headers(server, api: Api) -> None:
    for path in ("/", "/static/app.js"):
        async with api.session.get(api.url + path) as r:
            assert r.status == 200, path
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert r.headers["X-Frame-Options"] == "DENY"
    # The API's answers (polled many times a second) carry only nosniff: the rest only
    # means something for a document.
    token = await api.user("alice")
    for path, auth in (("/healthz", None), ("/api/poll", token)):
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        async with api.session.get(api.url + path, headers=headers) as r:
            assert r.status == 200, path
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "X-Frame-Options" not in r.headers and "Referrer-Policy" not in r.headers, path
    async with api.session.get(api.url + "/") as r:
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_logout_revokes_the_token_and_is_idempotent(make_server, session: aiohttp.ClientSession,
                                                          db: str) -> None:
    server = await make_server(db=db)
    api = Api(session, server.url)
    token = await api.user("alice")
    other = (await api.call("POST", "/api/login", json={"user": "alice", "password": PASSWORD}))[1]
    assert (await api.call("GET", "/api/poll", token))[0] == 200
    for _ in range(2):  # idempotent: a retry after a lost answer succeeds too
        status, body = await api.call("POST", "/api/logout", token)
        assert status == 200 and body == {"logged_out": True}
    assert (await api.call("GET", "/api/poll", token))[0] == 401
    assert (await api.call("GET", "/api/poll", other["token"]))[0] == 200, "other devices stay logged in"
    assert (await api.call("POST", "/api/logout"))[0] == 401, "no token at all is still a 401"


async def test_the_python_client_logs_out(server, api: Api) -> None:
    from reference_server.client import ChatClient

    await api.user("alice")
    client = ChatClient(server.url, "alice", PASSWORD, transport="short_polling", session=api.session)
    token = await client.login()
    await client.logout()
    assert client.token is None
    assert (await api.call("GET", "/api/poll", token))[0] == 401


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_tokens_expire_on_the_injected_clock_and_are_pruned(make_server, session: aiohttp.ClientSession,
                                                                  db: str) -> None:
    clock = FakeClock()
    server = await make_server(clock=clock, db=db, token_ttl_s=3600)
    api = Api(session, server.url)
    token = await api.user("alice")
    assert (await api.call("GET", "/api/poll", token))[0] == 200
    assert (await server.chat.store.counts())["tokens"] == 1
    clock.advance(3600)
    assert (await api.call("GET", "/api/poll", token))[0] == 401, "expired by the clock the server was given"
    await server.chat.housekeeping()
    assert (await server.chat.store.counts())["tokens"] == 0, "pruned"


async def test_a_stranger_who_adds_you_to_a_group_sees_nothing_until_you_send(server, api: Api) -> None:
    """Being put in a group is no consent: reading it, acknowledging it and being online
    reveal nothing to its creator; sending in it does."""
    mallory, bob = await api.user("mallory"), await api.user("bob")
    status, group = await api.call("POST", "/api/groups", mallory, json={"members": ["bob"]})
    assert status == 201
    conv = group["conversation"]
    await api.send(mallory, "hi bob", conversation=conv)
    ws = await ws_open(api, bob)
    frames = await ws_frames_until(ws, lambda f: f["type"] == "message")
    status, _ = await api.call("POST", "/api/receipts", bob, json={"conversation": conv, "up_to": 1,
                                                                   "status": "read"})
    assert status == 200
    assert (await api.call("GET", f"/api/conversations/{conv}/messages", bob))[0] == 200
    assert (await api.call("GET", "/api/presence?users=bob", mallory))[1]["presence"] == {"bob": "unknown"}
    events = await poll_until(api, mallory, lambda e: e["type"] == "receipt")
    assert not [e for e in events if e["type"] == "presence"], "no presence event reached the stranger"
    await ws.send_json({"type": "send", "conversation": conv, "body": "who are you?", "client_msg_id": "b1"})
    await ws_frames_until(ws, lambda f: f["type"] == "ack")
    assert (await api.call("GET", "/api/presence?users=bob", mallory))[1]["presence"] == {"bob": "online"}
    assert frames
    await ws.close()


def test_serve_accepts_ws_allow_origin_and_refuses_a_malformed_one() -> None:
    import argparse

    from chatlab import serve_cmd
    from chatlab.errors import UsageError

    parser = argparse.ArgumentParser()
    serve_cmd.add_arguments(parser)
    args = parser.parse_args(["--ws-allow-origin", "https://a.example", "--ws-allow-origin", "http://b:8080"])
    assert serve_cmd.allowed_origins(args) == ("https://a.example", "http://b:8080")
    with pytest.raises(UsageError, match="--ws-allow-origin=https://a.example/path"):
        serve_cmd.allowed_origins(parser.parse_args(["--ws-allow-origin", "https://a.example/path"]))
