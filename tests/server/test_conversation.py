"""PROTOCOL.md "Messages", "Receipts", "Groups": a whole conversation on each transport,
with the Python client, against a real server on loopback."""

from __future__ import annotations

import random
from typing import Any

import aiohttp
import pytest

from chatcore import TRANSPORTS, Cursor
from reference_server.client import ChatClient, ChatError

from .conftest import PASSWORD, Api, poll_until, wait_for_events


def _client(url: str, user: str, transport: str, session: aiohttp.ClientSession,
            log: list[dict[str, Any]]) -> ChatClient:
    return ChatClient(url, user, PASSWORD, transport=transport, session=session, poll_interval=0.05,
                      longpoll_timeout=5, backoff_base=0.05, backoff_cap=0.5, rng=random.Random(1),
                      on_event=lambda e, t: log.append(e))


def _msg(body: str):  # predicate on message events
    return lambda e: e["type"] == "message" and e["body"] == body


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_full_conversation(transport: str, database: str, make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(db=database)
    alice_log: list[dict[str, Any]] = []
    bob_log: list[dict[str, Any]] = []
    alice = _client(server.url, "alice", transport, session, alice_log)
    bob = _client(server.url, "bob", transport, session, bob_log)
    assert await alice.register() and await bob.register()
    assert not await alice.register()  # already exists
    await alice.start()
    await bob.start()
    try:
        ack = await alice.send("hi bob", to="bob")
        assert ack["conversation"] == "dm:alice:bob" and ack["id"] == 1
        (event,) = await wait_for_events(bob_log, _msg("hi bob"))
        assert event["sender"] == "alice" and event["id"] == 1 and event["client_msg_id"] == ack["client_msg_id"]
        assert event["sent_at"] == ack["sent_at"]

        # Receipts flow back to the sender, delivered then read.
        await bob.receipt("dm:alice:bob", 1, "delivered")
        await bob.receipt("dm:alice:bob", 1, "read")
        receipts = await wait_for_events(alice_log, lambda e: e["type"] == "receipt", count=2)
        assert [(r["user"], r["up_to"], r["status"]) for r in receipts] == \
            [("bob", 1, "delivered"), ("bob", 1, "read")]

        # Bob answers in the same conversation; alice sees it in order, once.
        for i in range(5):
            await bob.send(f"reply {i}", conversation="dm:alice:bob")
        await wait_for_events(alice_log, lambda e: e["type"] == "message", count=5)
        bodies = [e["body"] for e in alice_log if e["type"] == "message"]
        assert bodies == [f"reply {i}" for i in range(5)]
        seqs = [Cursor.parse(e["cursor"]).seq for e in alice_log]
        assert seqs == sorted(set(seqs)), "cursors strictly increase: no duplicate, no reordering"

        hist = await alice.history("dm:alice:bob")
        assert [m["id"] for m in hist["messages"]] == [1, 2, 3, 4, 5, 6]
        assert hist["receipts"]["bob"] == {"delivered": 1, "read": 1}
    finally:
        await alice.stop()
        await bob.stop()


async def test_group_fans_out_to_every_other_member(server, api: Api) -> None:
    tokens = {name: await api.user(name) for name in ("ann", "ben", "cat", "dan")}
    status, body = await api.call("POST", "/api/groups", tokens["ann"], json={"members": ["ben", "cat"]})
    assert status == 201 and body["members"] == ["ann", "ben", "cat"]
    conv = body["conversation"]
    assert conv.startswith("g:")
    ack = await api.send(tokens["ann"], "to the group", conversation=conv)

    for name in ("ben", "cat"):
        events = await poll_until(api, tokens[name], lambda e: e["type"] == "message")
        msgs = [e for e in events if e["type"] == "message"]
        assert [(m["id"], m["conversation"], m["sender"]) for m in msgs] == [(ack["id"], conv, "ann")]
    # The sender's log has no copy of its own message; an outsider gets nothing.
    for name in ("ann", "dan"):
        status, page = await api.poll(tokens[name])
        assert [e for e in page["events"] if e["type"] == "message"] == []
    status, body = await api.call("POST", "/api/messages", tokens["dan"],
                                  json={"conversation": conv, "body": "let me in", "client_msg_id": "x1"})
    assert status == 403 and body["error"] == "forbidden"

    # A receipt from ben goes to ann (the sender), not to cat.
    status, _ = await api.call("POST", "/api/receipts", tokens["ben"],
                               json={"conversation": conv, "up_to": ack["id"], "status": "read"})
    assert status == 200
    events = await poll_until(api, tokens["ann"], lambda e: e["type"] == "receipt")
    assert [(e["user"], e["status"]) for e in events if e["type"] == "receipt"] == [("ben", "read")]
    status, page = await api.poll(tokens["cat"])
    assert [e for e in page["events"] if e["type"] == "receipt"] == []


async def test_receipts_only_move_forward(server, api: Api) -> None:
    a, b = await api.user("amy"), await api.user("bea")
    for i in range(3):
        await api.send(a, f"m{i}", to="bea")
    status, body = await api.call("POST", "/api/receipts", b, json={"conversation": "dm:amy:bea", "up_to": 3,
                                                                    "status": "delivered"})
    assert (status, body["up_to"]) == (200, 3)
    status, body = await api.call("POST", "/api/receipts", b, json={"conversation": "dm:amy:bea", "up_to": 2,
                                                                    "status": "delivered"})
    assert (status, body["up_to"]) == (200, 3), "a late, lower receipt changes nothing"
    status, body = await api.call("POST", "/api/receipts", b, json={"conversation": "dm:amy:bea", "up_to": 4,
                                                                    "status": "read"})
    assert status == 400 and "last message is 3" in body["message"]
    await api.send(b, "sentinel", to="amy")  # the queue is ordered: receipts come before it
    events = await poll_until(api, a, lambda e: e["type"] == "message")
    receipts = [e for e in events if e["type"] == "receipt"]
    assert [(r["up_to"], r["status"]) for r in receipts] == [(3, "delivered")]


async def test_client_reports_refusals(server, session: aiohttp.ClientSession) -> None:
    c = ChatClient(server.url, "solo", PASSWORD, transport="short_polling", session=session)
    await c.register()
    await c.login()
    with pytest.raises(ChatError) as info:
        await c.send("anyone?", to="nobody")
    assert info.value.status == 404 and info.value.code == "not_found"
