"""Property-based fuzzing of every HTTP endpoint (docs/PROTOCOL.md, "Hostile clients"):
whatever arrives, the answer is never a 5xx, the log gets no traceback and no ERROR, and a
refused write stores nothing. One server for the module (fuzz_support.py), on the embedded
fakeredis; ``make soak`` runs 10,000 examples per endpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ..soak import size
from .conftest import PASSWORD
from .fuzz_support import (FUZZ_SETTINGS, FuzzServer, bodies, check_answer, client_msg_ids, conversations,
                           header_bytes, http, json_values, nasty_text, shaped, start, user_names)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(size(300, 7200))]


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    yield from start(tmp_path_factory.mktemp("fuzz-http"))


def _post(fs: FuzzServer, path: str, body: bytes, token: str | None) -> tuple[int, bytes]:
    status, answer = http(fs.port, "POST", path, body, token=token)
    check_answer(status, answer, (path, body[:200]))
    fs.trap.check()
    return status, answer


def _get(fs: FuzzServer, target: str | bytes, token: str | None = None,
         headers: list[bytes] | None = None) -> tuple[int, bytes]:
    status, answer = http(fs.port, "GET", target, token=token, headers=headers)
    check_answer(status, answer, target)
    fs.trap.check()
    return status, answer


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='', errors='surrogatepass')}={quote(v, safe='', errors='surrogatepass')}"
                    for k, v in pairs)


credentials = shaped({"user": user_names, "password": st.one_of(st.just(PASSWORD), nasty_text)})
sends = shaped({"body": nasty_text, "client_msg_id": client_msg_ids},
               {"to": user_names, "conversation": conversations})
receipts = shaped({"conversation": conversations, "up_to": st.integers(-3, 2 ** 54),
                   "status": st.sampled_from(["read", "delivered", "seen", ""])})
groups = shaped({"members": st.lists(user_names, max_size=5)})
query_values = st.one_of(nasty_text, st.integers(-10, 10 ** 30).map(str),
                         st.sampled_from(["", "1e3", "nan", "inf", "-0", "0x10", "９", "1" * 5000]))


@FUZZ_SETTINGS
@given(body=bodies(credentials))
def test_register_never_5xx(fs: FuzzServer, body: bytes) -> None:
    before = fs.counts()
    status, _ = _post(fs, "/api/register", body, None)
    if status != 201:
        assert fs.counts() == before


@FUZZ_SETTINGS
@given(body=bodies(credentials))
def test_login_never_5xx(fs: FuzzServer, body: bytes) -> None:
    _post(fs, "/api/login", body, None)


@FUZZ_SETTINGS
@given(auth=st.one_of(header_bytes, st.just(b"FRESH")), body=st.one_of(st.none(), bodies(json_values)))
def test_logout_never_5xx_and_is_idempotent(fs: FuzzServer, auth: bytes, body: bytes | None) -> None:
    headers = [b"Authorization: " + auth] if auth != b"FRESH" else None
    token = None
    if auth == b"FRESH":
        status, answer = _post(fs, "/api/login", json.dumps({"user": "carol", "password": PASSWORD}).encode(), None)
        token = json.loads(answer)["token"]
    status, answer = http(fs.port, "POST", "/api/logout", body, token=token, headers=headers)
    check_answer(status, answer, (auth, body))
    fs.trap.check()
    if token is not None and body is None:
        assert status == 200 and _get(fs, "/api/poll", token)[0] == 401, "revoked"


@FUZZ_SETTINGS
@given(body=bodies(sends), who=st.sampled_from(["alice", "bob", "carol"]))
def test_send_never_5xx_and_a_refused_send_stores_nothing(fs: FuzzServer, body: bytes, who: str) -> None:
    before = fs.counts()
    status, _ = _post(fs, "/api/messages", body, fs.tokens[who])
    after = fs.counts()
    if status != 200:
        assert after == before, "a refused send stored something"
    else:
        assert after["messages"] - before["messages"] in (0, 1)


@FUZZ_SETTINGS
@given(body=bodies(receipts), who=st.sampled_from(["alice", "bob", "carol"]))
def test_receipt_never_5xx_and_a_refused_receipt_stores_nothing(fs: FuzzServer, body: bytes, who: str) -> None:
    before = fs.counts()
    status, _ = _post(fs, "/api/receipts", body, fs.tokens[who])
    if status != 200:
        assert fs.counts() == before


@FUZZ_SETTINGS
@given(body=bodies(groups))
def test_create_group_never_5xx_and_a_refused_one_stores_nothing(fs: FuzzServer, body: bytes) -> None:
    before = fs.counts()
    status, _ = _post(fs, "/api/groups", body, fs.tokens["alice"])
    if status != 201:
        assert fs.counts() == before


@FUZZ_SETTINGS
@given(conv=st.one_of(conversations, nasty_text),
       params=st.lists(st.tuples(st.sampled_from(["before", "limit", "after", "x"]), query_values), max_size=3))
def test_history_never_5xx(fs: FuzzServer, conv: str, params: list[tuple[str, str]]) -> None:
    target = f"/api/conversations/{quote(conv, safe='', errors='surrogatepass')}/messages"
    _get(fs, target + ("?" + _query(params) if params else ""), fs.tokens["alice"])


@FUZZ_SETTINGS
@given(users=st.one_of(st.lists(st.one_of(user_names, nasty_text), max_size=120).map(",".join), query_values),
       extra=st.lists(st.tuples(st.sampled_from(["users", "x"]), query_values), max_size=2))
def test_presence_never_5xx(fs: FuzzServer, users: str, extra: list[tuple[str, str]]) -> None:
    _get(fs, "/api/presence?" + _query([("users", users), *extra]), fs.tokens["alice"])


def _after_values(fs: FuzzServer) -> st.SearchStrategy[str]:
    # Never a cursor past events the user has: a long poll would then be held for its timeout.
    return st.one_of(query_values, st.just(f"{fs.server.chat.store.epoch}.0"),
                     st.integers(-5, 10 ** 25).map(lambda n: f"ffffffff.{n}"))


@FUZZ_SETTINGS
@given(data=st.data())
def test_poll_never_5xx(fs: FuzzServer, data: st.DataObject) -> None:
    params = data.draw(st.lists(st.tuples(st.sampled_from(["after", "timeout", "token"]), _after_values(fs)),
                                max_size=3))
    _get(fs, "/api/poll" + ("?" + _query(params) if params else ""), fs.tokens["carol"])


@FUZZ_SETTINGS
@given(data=st.data())
def test_long_poll_never_5xx(fs: FuzzServer, data: st.DataObject) -> None:
    params = data.draw(st.lists(st.tuples(st.sampled_from(["after", "timeout"]), _after_values(fs)), max_size=3))
    if not any(k == "after" for k, _ in params):
        params.append(("timeout", data.draw(query_values)))
    _get(fs, "/api/longpoll?" + _query(params), fs.tokens["carol"])  # carol has events: answered at once


@FUZZ_SETTINGS
@given(query=st.one_of(st.just(""), query_values), auth=st.one_of(st.none(), header_bytes))
def test_healthz_and_metrics_never_5xx(fs: FuzzServer, query: str, auth: bytes | None) -> None:
    headers = None if auth is None else [b"Authorization: " + auth]
    status, _ = _get(fs, "/healthz?" + quote(query, errors="surrogatepass"), headers=headers)
    assert status in (200, 400)  # 400: a header aiohttp cannot parse (a NUL byte, say)
    _get(fs, "/metrics?" + quote(query, errors="surrogatepass"), headers=headers)
    _get(fs, "/metrics", fs.tokens["bob"])


@FUZZ_SETTINGS
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD", "BREW", "get"]),
       path=st.one_of(st.sampled_from(["/api/register", "/api/login", "/api/logout", "/api/messages",
                                       "/api/receipts", "/api/groups", "/api/presence", "/api/poll",
                                       "/api/longpoll?after=x", "/metrics", "/healthz", "/", "/ws",
                                       "/static/app.js", "/static/../../etc/passwd", "/api/conversations//messages"]),
                      nasty_text.map(lambda t: "/" + quote(t, errors="surrogatepass"))),
       auth=st.one_of(st.none(), header_bytes, st.sampled_from([b"Bearer", b"Bearer ", b"bearer x" * 40])),
       extra=st.lists(header_bytes, max_size=3))
def test_any_method_path_and_headers_never_5xx(fs: FuzzServer, method: str, path: str, auth: bytes | None,
                                               extra: list[bytes]) -> None:
    headers = ([b"Authorization: " + auth] if auth is not None else []) + [b"X-Fuzz: " + h for h in extra]
    before = fs.counts()
    status, answer = http(fs.port, method, path, b"{}" if method in ("POST", "PUT") else None, headers=headers)
    if method != "HEAD":
        check_answer(status, answer, (method, path, headers))
    fs.trap.check()
    assert fs.counts() == before or status < 300


@FUZZ_SETTINGS
@given(raw=st.one_of(st.binary(max_size=300),
                     st.lists(header_bytes, min_size=1, max_size=6).map(
                         lambda hs: b"GET /healthz HTTP/1.1\r\n" + b"\r\n".join(hs) + b"\r\n\r\n")))
def test_garbage_on_the_socket_is_refused_without_a_traceback(fs: FuzzServer, raw: bytes) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", fs.port), timeout=10) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if out.startswith(b"HTTP/1."):
        assert int(out.split(b" ", 2)[1]) < 500, out[:200]
    fs.trap.check()


def test_the_fuzz_server_still_works(fs: FuzzServer) -> None:
    """After everything above: a plain send and read still succeed (nothing was wedged)."""
    body = json.dumps({"to": "bob", "body": "still here", "client_msg_id": uuid.uuid4().hex}).encode()
    assert _post(fs, "/api/messages", body, fs.tokens["alice"])[0] == 200
    status, answer = _get(fs, "/api/conversations/dm:alice:bob/messages?limit=1", fs.tokens["bob"])
    page: dict[str, Any] = json.loads(answer)
    assert status == 200 and page["messages"][-1]["body"] == "still here"
