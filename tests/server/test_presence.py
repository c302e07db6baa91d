"""PROTOCOL.md "Presence": online while any connection of the user lives, offline when the
last one closes or expires; changes reach the user's contacts as events."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from reference_server.clock import FakeClock

from .conftest import Api, poll_until, ws_frames_until, ws_open


def _bob_presence(e: dict) -> bool:
    return e["type"] == "presence" and e["user"] == "bob"


async def _presence(api: Api, token: str, user: str) -> str:
    status, body = await api.call("GET", f"/api/presence?users={user}", token)
    assert status == 200, body
    return body["presence"][user]


async def test_two_devices(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(bob, "hi", to="alice")  # bob has spoken to alice: she may see his presence
    assert await _presence(api, alice, "bob") == "offline"

    phone = await ws_open(api, bob)
    await ws_frames_until(phone, lambda f: f["type"] == "resumed")
    events = await poll_until(api, alice, _bob_presence)
    assert [e["status"] for e in events if _bob_presence(e)] == ["online"]
    assert await _presence(api, alice, "bob") == "online"

    laptop = await ws_open(api, bob)
    await ws_frames_until(laptop, lambda f: f["type"] == "resumed")
    assert await server.chat.presence.connections("bob") == 2
    await phone.close()
    # The phone leaving must not clear the laptop's presence.
    for _ in range(200):
        if await server.chat.presence.connections("bob") == 1:
            break
        await asyncio.sleep(0.01)
    assert await server.chat.presence.connections("bob") == 1
    assert await _presence(api, alice, "bob") == "online"

    await laptop.close()
    events = await poll_until(api, alice, _bob_presence, count=2)
    assert [e["status"] for e in events if _bob_presence(e)] == ["online", "offline"], \
        "exactly one online and one offline for two devices"
    assert await _presence(api, alice, "bob") == "offline"


async def _sweep(server) -> None:  # type: ignore[no-untyped-def]
    await server.chat.presence.sweep()


async def test_polling_client_expires_after_ttl(make_server, session: aiohttp.ClientSession) -> None:
    """A polling client is online for one TTL after its last poll, then offline (fake clock:
    the test moves time, it does not wait for it)."""
    clock = FakeClock()
    server = await make_server(presence_ttl_s=60, presence_heartbeat_s=25, clock=clock)
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(bob, "hi", to="alice")
    status, _ = await api.poll(bob)
    assert status == 200
    assert await _presence(api, alice, "bob") == "online"
    clock.advance(59.9)
    await _sweep(server)
    assert await _presence(api, alice, "bob") == "online", "within the TTL"
    clock.advance(0.2)
    await _sweep(server)
    assert await _presence(api, alice, "bob") == "offline", "one TTL after the last poll"
    events = await poll_until(api, alice, _bob_presence, count=2)
    assert [e["status"] for e in events if _bob_presence(e)] == ["online", "offline"]


async def test_quiet_websocket_stays_online(make_server, session: aiohttp.ClientSession) -> None:
    """An open WebSocket that sends nothing stays online across many TTLs: its heartbeats
    (one loop for all of this process's sockets) keep extending it."""
    clock = FakeClock()
    server = await make_server(presence_ttl_s=60, presence_heartbeat_s=25, clock=clock)
    presence = server.chat.presence
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(bob, "hi", to="alice")
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    for _ in range(60):  # ten minutes in 10 s steps: ten TTLs
        clock.advance(10)
        await presence.refresh_local()  # (the server's own loop may beat too: the same call)
        await _sweep(server)
        assert await _presence(api, alice, "bob") == "online"
        (_, expires), = await presence.redis.zrange(presence._key("bob"), 0, -1, withscores=True)
        assert expires >= clock.wall_ms() + 60_000 - 35_000, "refreshed within the last heartbeat (+ a step)"
    status, page = await api.poll(alice)
    assert [e["status"] for e in page["events"] if _bob_presence(e)] == ["online"]
    await ws.close()
    await poll_until(api, alice, _bob_presence, count=2)


async def test_heartbeat_never_brings_back_a_closed_connection(make_server, session: aiohttp.ClientSession) -> None:
    """A heartbeat that was already on its way when the socket closed only extends what is
    still there (ZADD XX): no zombie presence, no second 'offline' later."""
    clock = FakeClock()
    server = await make_server(presence_ttl_s=60, presence_heartbeat_s=25, clock=clock)
    presence = server.chat.presence
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(bob, "hi", to="alice")
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    conn_id = next(c for c, (u, _) in presence._local.items() if u == "bob")
    await ws.close()
    await poll_until(api, alice, _bob_presence, count=2)  # online, offline
    presence._local[conn_id] = ("bob", 0)  # the heartbeat loop had picked it before the close
    clock.advance(30)
    assert await presence.refresh_local() == 1
    assert await presence.connections("bob") == 0
    assert await _presence(api, alice, "bob") == "offline"
    clock.advance(120)
    await _sweep(server)
    status, page = await api.poll(alice)
    assert [e["status"] for e in page["events"] if _bob_presence(e)] == ["online", "offline"]


async def test_presence_is_not_sent_to_strangers(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    stranger = await api.user("stranger")
    await api.send(bob, "hi", to="alice")
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    await poll_until(api, alice, _bob_presence)  # delivered to the contact...
    status, page = await api.poll(stranger)
    assert [e for e in page["events"] if _bob_presence(e)] == []  # ...and not to anyone else
    await ws.close()


async def test_presence_needs_the_other_side_to_have_spoken(server, api: Api) -> None:
    """Presence by participation: writing to bob does not let alice watch him; his reply does."""
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "are you there?", to="bob")
    assert await _presence(api, alice, "bob") == "unknown"
    assert await _presence(api, bob, "alice") == "offline", "alice spoke to bob: he may see her"
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    assert await _presence(api, alice, "bob") == "unknown"
    status, page = await api.poll(alice)
    assert [e for e in page["events"] if e["type"] == "presence"] == [], "no presence event either"
    await api.send(bob, "yes", to="alice")
    assert await _presence(api, alice, "bob") == "online"
    await ws.close()
    events = await poll_until(api, alice, lambda e: _bob_presence(e) and e["status"] == "offline")
    # Fanned out to whoever may see it when it is delivered: his "online" may reach alice too
    # if his reply was committed first; his "offline" does.
    assert [e["status"] for e in events if _bob_presence(e)][-1] == "offline"


async def test_a_group_creator_sees_nobody_until_they_speak(server, api: Api) -> None:
    """Adding someone to a group needs no consent (as in most chat apps), but it reveals
    nothing: members become visible to each other by posting."""
    alice, bob, carol = await api.user("alice"), await api.user("bob"), await api.user("carol")
    status, group = await api.call("POST", "/api/groups", alice, json={"members": ["bob", "carol"]})
    assert status == 201
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    assert await _presence(api, alice, "bob") == "unknown"
    assert await _presence(api, carol, "bob") == "unknown"
    await api.send(bob, "hello group", conversation=group["conversation"])
    assert await _presence(api, alice, "bob") == "online"
    assert await _presence(api, carol, "bob") == "online"
    assert await _presence(api, bob, "alice") == "unknown", "alice made the group but has not spoken"
    await ws.close()


async def test_presence_does_not_tell_who_exists(server, api: Api) -> None:
    alice = await api.user("alice")
    await api.user("stranger")
    status, body = await api.call("GET", "/api/presence?users=stranger,nobody,alice", alice)
    assert status == 200
    assert body["presence"] == {"stranger": "unknown", "nobody": "unknown", "alice": "offline"}
