"""PROTOCOL.md "Idempotent sends": a resend with the same client_msg_id gets the original
ack and stores nothing, over HTTP and over the WebSocket, even when resends race."""

from __future__ import annotations

import asyncio

from .conftest import Api, poll_until, stored, ws_frames_until, ws_open


async def test_http_resend_gets_the_original_ack(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    body = {"to": "bob", "body": "only once", "client_msg_id": "cm-1"}
    status, first = await api.call("POST", "/api/messages", alice, json=body)
    assert status == 200
    before = await stored(server)
    for _ in range(3):
        status, again = await api.call("POST", "/api/messages", alice, json=body)
        assert (status, again) == (200, first)
    # Even a resend that (wrongly) changed the body returns the original and stores nothing.
    status, again = await api.call("POST", "/api/messages", alice, json={**body, "body": "changed"})
    assert (status, again) == (200, first)
    assert await stored(server) == before
    # The same client id from another sender is another message.
    status, other = await api.call("POST", "/api/messages", bob,
                                   json={"to": "alice", "body": "mine", "client_msg_id": "cm-1"})
    assert status == 200 and other["id"] == first["id"] + 1

    await api.send(alice, "sentinel", to="bob")
    events = await poll_until(api, bob, lambda e: e.get("body") == "sentinel")
    assert [e["body"] for e in events if e["type"] == "message"] == ["only once", "sentinel"]


async def test_concurrent_resends_store_one_message(server, api: Api) -> None:
    alice = await api.user("alice")
    await api.user("bob")
    body = {"to": "bob", "body": "raced", "client_msg_id": "race-1"}
    results = await asyncio.gather(*(api.call("POST", "/api/messages", alice, json=body) for _ in range(8)))
    assert {r[0] for r in results} == {200}
    assert len({r[1]["id"] for r in results}) == 1
    hist = await api.call("GET", "/api/conversations/dm:alice:bob/messages", alice)
    assert [m["client_msg_id"] for m in hist[1]["messages"]] == ["race-1"]


async def test_ws_resend_gets_the_original_ack(server, api: Api) -> None:
    alice, _ = await api.user("alice"), await api.user("bob")
    ws = await ws_open(api, alice)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    frame = {"type": "send", "to": "bob", "body": "over ws", "client_msg_id": "ws-1"}
    acks = []
    for _ in range(2):
        await ws.send_json(frame)
        acks.append((await ws_frames_until(ws, lambda f: f["type"] == "ack"))[-1])
    assert acks[0] == acks[1] and acks[0]["client_msg_id"] == "ws-1" and acks[0]["id"] == 1
    # An HTTP resend of a WebSocket send is the same message too.
    status, ack = await api.call("POST", "/api/messages", alice, json={k: v for k, v in frame.items() if k != "type"})
    assert status == 200 and ack == {k: v for k, v in acks[0].items() if k != "type"}
    await ws.close()
    assert (await server.chat.store.counts())["messages"] == 1


async def test_reused_client_msg_id_for_another_conversation_is_409_not_the_old_ack(server, api: Api) -> None:
    """A client_msg_id names one message of one sender: reused for a different conversation it
    is a client bug, refused 409 (never answered with the other message's ack), stores nothing."""
    alice, _, _ = await api.user("alice"), await api.user("bob"), await api.user("carol")
    status, first = await api.call("POST", "/api/messages", alice,
                                   json={"to": "bob", "body": "to bob", "client_msg_id": "dup"})
    assert status == 200
    before = await stored(server)
    status, body = await api.call("POST", "/api/messages", alice,
                                  json={"to": "carol", "body": "to carol", "client_msg_id": "dup"})
    assert status == 409 and body["error"] == "client_msg_id_reused"
    assert await stored(server) == before
    ws = await ws_open(api, alice, resume=False)
    await ws.send_json({"type": "send", "to": "carol", "body": "again", "client_msg_id": "dup"})
    frame = (await ws_frames_until(ws, lambda f: True))[-1]
    assert frame["type"] == "error" and frame["error"] == "client_msg_id_reused" and frame["client_msg_id"] == "dup"
    await ws.close()
    status, again = await api.call("POST", "/api/messages", alice,
                                   json={"to": "bob", "body": "to bob", "client_msg_id": "dup"})
    assert (status, again) == (200, first), "the same conversation still gets the original ack"
