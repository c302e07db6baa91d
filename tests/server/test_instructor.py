"""PROTOCOL.md "Instructor outage": the workshop switch that takes the server down and up.

Down cuts every WebSocket and request in flight and answers 503 to everything but the page and
the switch; nothing stored is touched, so a client resumes from its cursor when it is back up
and sees what was sent before the outage exactly once."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from reference_server.config import ServerConfig

from .conftest import Api, wait_until, ws_frames_until, ws_open

KEY = "workshop-key-1"
PATH = "/api/instructor/outage"


async def test_no_key_no_switch(make_server, session: aiohttp.ClientSession) -> None:
    api = Api(session, (await make_server()).url)
    status, _ = await api.call("POST", PATH, json={"key": KEY, "down": True})
    assert status == 404
    assert (await api.call("GET", "/healthz"))[0] == 200


@pytest.mark.parametrize("body, status", [
    ({"key": "wrong-key-00", "down": True}, 403),
    ({"down": True}, 403),
    ({"key": KEY, "down": "yes"}, 400),
    ({"key": KEY}, 400),
    ({"key": KEY, "down": True, "for_s": 0}, 400),
    ({"key": KEY, "down": True, "for_s": 601}, 400),
    ({"key": KEY, "down": True, "for_s": True}, 400),
    ({"key": KEY, "down": False, "for_s": 5}, 400),
    ({"key": KEY, "down": True, "extra": 1}, 400),
    ([KEY, True], 400),
])
async def test_bad_requests_change_nothing(make_server, session: aiohttp.ClientSession, body, status) -> None:
    api = Api(session, (await make_server(instructor_key=KEY)).url)
    got, answer = await api.call("POST", PATH, json=body)
    assert got == status, answer
    assert answer["error"] in ("bad_request", "forbidden")
    assert (await api.call("GET", "/healthz"))[0] == 200   # still up


async def test_down_cuts_connections_and_up_resumes_without_loss(make_server,
                                                                  session: aiohttp.ClientSession) -> None:
    api = Api(session, (await make_server(instructor_key=KEY)).url)
    alice, bob = await api.user("alice"), await api.user("bob")
    ws = await ws_open(api, alice)
    cursor = (await ws_frames_until(ws, lambda f: f["type"] == "resumed"))[-1]["cursor"]
    await api.send(bob, "before", to="alice")
    frames = await ws_frames_until(ws, lambda f: f["type"] == "message")
    cursor = frames[-1]["cursor"]

    status, answer = await api.call("POST", PATH, json={"key": KEY, "down": True})
    assert (status, answer["down"], answer["connections_cut"]) == (200, True, 1)
    msg = await ws.receive(timeout=5)   # cut like a crash: no close frame from the server
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR), msg
    for method, path in (("GET", "/healthz"), ("GET", "/api/poll"), ("POST", "/api/messages")):
        got, body = await api.call(method, path, bob, json={} if method == "POST" else None)
        assert (got, body["error"]) == (503, "unavailable"), (path, body)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(api.ws_url())
    assert refused.value.status == 503
    assert (await api.call("GET", "/"))[0] == 200   # the page still loads, so the instructor can come back

    status, answer = await api.call("POST", PATH, json={"key": KEY, "down": False})
    assert (status, answer["down"]) == (200, False)
    await api.send(bob, "after", to="alice")
    ws = await ws_open(api, alice, after=cursor)
    frames = await ws_frames_until(ws, lambda f: f["type"] == "message" and f["body"] == "after")
    bodies = [f["body"] for f in frames if f["type"] == "message"]
    assert bodies == ["after"]   # resumed after "before": nothing replayed twice, nothing lost
    await ws.close()


async def test_down_for_a_while_comes_back_by_itself(make_server, session: aiohttp.ClientSession) -> None:
    api = Api(session, (await make_server(instructor_key=KEY)).url)
    status, answer = await api.call("POST", PATH, json={"key": KEY, "down": True, "for_s": 0.5})
    assert (status, answer["for_s"]) == (200, 0.5)
    assert (await api.call("GET", "/healthz"))[0] == 503
    healthy: list[bool] = []

    async def check() -> None:
        healthy.append((await api.call("GET", "/healthz"))[0] == 200)

    async def poll_health() -> None:
        while not (healthy and healthy[-1]):
            await check()
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll_health(), timeout=30)   # generous: a loaded machine
    await wait_until(lambda: healthy[-1], timeout=1)


@pytest.mark.parametrize("key", ["short", "has space in it", "x" * 129])
def test_key_must_be_long_and_plain(key: str) -> None:
    with pytest.raises(ValueError, match="instructor_key"):
        ServerConfig(instructor_key=key)
