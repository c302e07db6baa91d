"""PROTOCOL.md "Presence": online while any connection of the user lives, offline when the
last one closes or expires; changes reach the user's contacts as events."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .conftest import Api, poll_until, ws_frames_until, ws_open


def _bob_presence(e: dict) -> bool:
    return e["type"] == "presence" and e["user"] == "bob"


async def _presence(api: Api, token: str, user: str) -> str:
    status, body = await api.call("GET", f"/api/presence?users={user}", token)
    assert status == 200, body
    return body["presence"][user]


async def test_two_devices(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "hi", to="bob")  # now contacts
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


async def test_polling_client_expires_after_ttl(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(presence_ttl_s=0.5, presence_heartbeat_s=0.2)
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "hi", to="bob")
    status, _ = await api.poll(bob)  # bob is online for one TTL
    assert status == 200
    assert await _presence(api, alice, "bob") == "online"
    events = await poll_until(api, alice, _bob_presence, count=2, timeout=5)
    assert [e["status"] for e in events if _bob_presence(e)] == ["online", "offline"]


async def test_quiet_websocket_stays_online(make_server, session: aiohttp.ClientSession) -> None:
    # A TTL of six heartbeats: a stall of the shared test machine's event loop must pass
    # 0.4 s before it could expire a live connection.
    server = await make_server(presence_ttl_s=0.6, presence_heartbeat_s=0.1)
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    await api.send(alice, "hi", to="bob")
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    await poll_until(api, alice, _bob_presence)
    for _ in range(4):  # four TTLs with no traffic but heartbeats
        await asyncio.sleep(0.6)
        assert await _presence(api, alice, "bob") == "online"
    status, page = await api.poll(alice)
    assert [e["status"] for e in page["events"] if _bob_presence(e)] == ["online"]
    await ws.close()
    await poll_until(api, alice, _bob_presence, count=2)


async def test_presence_is_not_sent_to_strangers(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    stranger = await api.user("stranger")
    await api.send(alice, "hi", to="bob")
    ws = await ws_open(api, bob)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    await poll_until(api, alice, _bob_presence)  # delivered to the contact...
    status, page = await api.poll(stranger)
    assert [e for e in page["events"] if _bob_presence(e)] == []  # ...and not to anyone else
    await ws.close()
