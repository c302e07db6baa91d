"""PROTOCOL.md "Errors": every class of bad input is refused with a 4xx, a JSON error body
naming the problem, and nothing stored. Never a 5xx. One row per class (h11-style table)."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from chatcore import MAX_BODY_BYTES, MAX_MESSAGE_BODY_CHARS

from .conftest import Api, stored


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    status: int
    error: str
    body: Any = None            # JSON-encoded unless raw is given
    raw: bytes | None = None
    auth: str = "alice"         # "alice", "none", "bogus", "empty"
    message: str = ""           # substring the message must contain


def _send(**kw: Any) -> dict[str, Any]:
    return {"to": "bob", "body": "hi", "client_msg_id": "c-1", **kw}


ROWS = [
    # --- authentication (401) ---
    Row("no token", "POST", "/api/messages", 401, "unauthorized", _send(), auth="none"),
    Row("unknown token", "POST", "/api/messages", 401, "unauthorized", _send(), auth="bogus"),
    Row("empty bearer", "POST", "/api/messages", 401, "unauthorized", _send(), auth="empty"),
    Row("token in the URL is not a token", "GET", "/api/poll?token=x", 401, "unauthorized", auth="none"),
    Row("poll without token", "GET", "/api/poll", 401, "unauthorized", auth="none"),
    Row("metrics without token", "GET", "/metrics", 401, "unauthorized", auth="none"),
    Row("wrong password", "POST", "/api/login", 401, "unauthorized", {"user": "alice", "password": "nope"},
        auth="none"),
    Row("login unknown user", "POST", "/api/login", 401, "unauthorized", {"user": "zed", "password": "x"},
        auth="none"),
    # --- membership (403) ---
    Row("history of another pair's dm", "GET", "/api/conversations/dm:bob:carol/messages", 403, "forbidden"),
    Row("send into another pair's dm", "POST", "/api/messages", 403, "forbidden",
        {"conversation": "dm:bob:carol", "body": "hi", "client_msg_id": "c-2"}),
    Row("receipt in another pair's dm", "POST", "/api/receipts", 403, "forbidden",
        {"conversation": "dm:bob:carol", "up_to": 1, "status": "read"}),
    # --- unknown things (404) ---
    Row("send to unknown user", "POST", "/api/messages", 404, "not_found", _send(to="nobody")),
    Row("send to unknown group", "POST", "/api/messages", 404, "not_found",
        {"conversation": "g:999", "body": "hi", "client_msg_id": "c-3"}),
    Row("history of unknown conversation", "GET", "/api/conversations/g:999/messages", 404, "not_found"),
    Row("history of a dm never started", "GET", "/api/conversations/dm:alice:carol/messages", 404, "not_found"),
    Row("group with unknown member", "POST", "/api/groups", 404, "not_found", {"members": ["bob", "nobody"]}),
    Row("unknown route", "GET", "/api/nothing", 404, "not_found"),
    # --- malformed requests (400) ---
    Row("malformed JSON", "POST", "/api/messages", 400, "bad_request", raw=b'{"to": "bob",', message="JSON"),
    Row("empty body", "POST", "/api/messages", 400, "bad_request", raw=b"", message="empty"),
    Row("not UTF-8", "POST", "/api/messages", 400, "bad_request", raw=b'{"to":"\xff"}'),
    Row("array, not object", "POST", "/api/messages", 400, "bad_request", ["bob", "hi"], message="object"),
    Row("unknown field (sender)", "POST", "/api/messages", 400, "bad_request", _send(sender="bob"),
        message="sender"),
    Row("missing field", "POST", "/api/messages", 400, "bad_request", {"to": "bob", "body": "hi"},
        message="client_msg_id"),
    Row("wrong type: body", "POST", "/api/messages", 400, "bad_request", _send(body=42), message="body"),
    Row("wrong type: client_msg_id", "POST", "/api/messages", 400, "bad_request", _send(client_msg_id=7)),
    Row("both to and conversation", "POST", "/api/messages", 400, "bad_request",
        _send(conversation="dm:alice:bob"), message="exactly one"),
    Row("empty message body", "POST", "/api/messages", 400, "bad_request", _send(body="")),
    Row("message body too long", "POST", "/api/messages", 400, "bad_request",
        _send(body="x" * (MAX_MESSAGE_BODY_CHARS + 1)), message=str(MAX_MESSAGE_BODY_CHARS)),
    Row("message to yourself", "POST", "/api/messages", 400, "bad_request", _send(to="alice")),
    Row("bad user name", "POST", "/api/messages", 400, "bad_request", _send(to="Bob!")),
    Row("bad conversation id", "POST", "/api/messages", 400, "bad_request",
        {"conversation": "dm:bob:alice", "body": "hi", "client_msg_id": "c-4"}, message="sorted"),
    Row("receipt up_to not an integer", "POST", "/api/receipts", 400, "bad_request",
        {"conversation": "dm:alice:bob", "up_to": "1", "status": "read"}),
    Row("receipt up_to boolean", "POST", "/api/receipts", 400, "bad_request",
        {"conversation": "dm:alice:bob", "up_to": True, "status": "read"}),
    Row("receipt unknown status", "POST", "/api/receipts", 400, "bad_request",
        {"conversation": "dm:alice:bob", "up_to": 1, "status": "seen"}),
    Row("receipt beyond the last message", "POST", "/api/receipts", 400, "bad_request",
        {"conversation": "dm:alice:bob", "up_to": 99, "status": "read"}, message="last message"),
    Row("group members not a list", "POST", "/api/groups", 400, "bad_request", {"members": "bob"}),
    Row("group of one", "POST", "/api/groups", 400, "bad_request", {"members": ["alice"]}),
    Row("register bad name", "POST", "/api/register", 400, "bad_request", {"user": "Al ice", "password": "x"},
        auth="none"),
    Row("register empty password", "POST", "/api/register", 400, "bad_request", {"user": "dan", "password": ""},
        auth="none"),
    Row("unknown query parameter", "GET", "/api/poll?since=1", 400, "bad_request", message="since"),
    Row("repeated query parameter", "GET", "/api/poll?after=a.1&after=a.2", 400, "bad_request"),
    Row("malformed cursor", "GET", "/api/poll?after=nope", 400, "bad_request", message="cursor"),
    Row("long-poll timeout not a number", "GET", "/api/longpoll?timeout=soon", 400, "bad_request"),
    Row("long-poll timeout NaN", "GET", "/api/longpoll?timeout=nan", 400, "bad_request"),
    Row("long-poll timeout too long", "GET", "/api/longpoll?timeout=121", 400, "bad_request"),
    Row("history limit 0", "GET", "/api/conversations/dm:alice:bob/messages?limit=0", 400, "bad_request"),
    Row("history before not an integer", "GET", "/api/conversations/dm:alice:bob/messages?before=x", 400,
        "bad_request"),
    Row("presence without users", "GET", "/api/presence", 400, "bad_request"),
    # --- other refusals ---
    Row("body over 16 KiB", "POST", "/api/messages", 413, "too_large", raw=b" " * (MAX_BODY_BYTES + 1)),
    Row("register taken name", "POST", "/api/register", 409, "user_exists", {"user": "bob", "password": "x"},
        auth="none"),
    Row("wrong method", "DELETE", "/api/messages", 405, "method_not_allowed"),
]


@pytest.fixture
async def world(server, api: Api) -> dict[str, str]:
    """alice, bob and carol; bob and carol share a dm; alice and bob have one message."""
    tokens = {u: await api.user(u) for u in ("alice", "bob", "carol")}
    await api.send(tokens["bob"], "psst", to="carol")
    await api.send(tokens["alice"], "hello", to="bob")
    return tokens


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
async def test_refused(row: Row, server, api: Api, world: dict[str, str]) -> None:
    headers = {"Authorization": {"alice": f"Bearer {world['alice']}", "bogus": "Bearer not-a-token",
                                 "empty": "Bearer ", "none": ""}[row.auth]}
    if not headers["Authorization"]:
        headers = {}
    data = row.raw if row.raw is not None else (None if row.body is None else json.dumps(row.body).encode())
    before = await stored(server)
    status, body = await api.call(row.method, row.path, data=data, headers=headers)
    assert status == row.status, body
    assert isinstance(body, dict) and body["error"] == row.error, body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert row.message in body["message"], body
    assert await stored(server) == before, "a refused request stored nothing"


async def test_expired_token(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(token_ttl_s=0.2)
    api = Api(session, server.url)
    token = await api.user("alice")
    status, _ = await api.poll(token)
    assert status == 200
    await asyncio.sleep(0.3)  # the token's whole lifetime, no more
    status, body = await api.poll(token)
    assert (status, body["error"]) == (401, "unauthorized")


async def test_rate_limit(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(rate_per_s=0.5, rate_burst=3)
    api = Api(session, server.url)
    alice = await api.user("alice")
    await api.user("bob")
    statuses = []
    for i in range(5):
        status, body = await api.call("POST", "/api/messages", alice,
                                      json={"to": "bob", "body": "x", "client_msg_id": f"r{i}"})
        statuses.append(status)
    assert statuses == [200, 200, 200, 429, 429]
    assert body["error"] == "rate_limited"
    assert (await stored(server))["messages"] == 3


async def test_random_bodies_never_5xx(server, api: Api, world: dict[str, str]) -> None:
    """Seeded fuzz: 150 random JSON values at the write endpoints; 4xx or 2xx only."""
    rng = random.Random(1234)
    atoms: list[Any] = [None, True, 0, -1, 2 ** 70, 1.5, "", "bob", "dm:alice:bob", "g:1", "x" * 50, [], {}]
    keys = ["to", "conversation", "body", "client_msg_id", "up_to", "status", "members", "user", "password"]

    def value(depth: int = 0) -> Any:
        r = rng.random()
        if depth < 2 and r < 0.2:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        if depth < 2 and r < 0.5:
            return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 4))}
        return rng.choice(atoms)

    for i in range(150):
        path = rng.choice(["/api/messages", "/api/receipts", "/api/groups", "/api/register", "/api/login"])
        status, body = await api.call("POST", path, world["alice"], data=json.dumps(value()).encode())
        assert status < 500, (path, status, body)
