"""PROTOCOL.md "WebSocket": the auth handshake and its close code (4001), error frames for
bad frames (the connection stays open, nothing is stored), slow consumers (4008) and the
compression switch."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest
import websockets

from chatcore import MAX_BODY_BYTES
from chatcore import ws_frame_overhead
from reference_server.hub import Flusher, Sink, text_frame_header

from .conftest import Api, stored, ws_frames_until, ws_open


async def _closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> int | None:
    msg = await ws.receive(timeout=timeout)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (msg.type, msg.data)
    return ws.close_code


async def test_auth_must_come_first_and_in_time(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(ws_auth_timeout_s=0.3)
    api = Api(session, server.url)
    token = await api.user("alice")

    ws = await session.ws_connect(api.ws_url())  # says nothing
    t0 = time.monotonic()
    assert await _closed_with(ws) == 4001
    assert 0.25 <= time.monotonic() - t0 < 2.0

    for first in ({"type": "auth", "token": "not-a-token"},
                  {"type": "resume", "after": None},
                  {"type": "auth", "token": token, "extra": 1},
                  "not json"):
        ws = await session.ws_connect(api.ws_url())
        await (ws.send_str(first) if isinstance(first, str) else ws.send_json(first))
        assert await _closed_with(ws) == 4001, first

    ws = await ws_open(api, token)
    assert (await ws_frames_until(ws, lambda f: True))[0]["type"] == "resumed"
    await ws.close()


BAD_FRAMES = [
    ("malformed JSON", '{"type": "send",', "bad_request"),
    ("not an object", "[1, 2]", "bad_request"),
    ("no type", '{"to": "bob"}', "bad_request"),
    ("unknown type", '{"type": "subscribe"}', "bad_request"),
    ("second auth", '{"type": "auth", "token": "x"}', "bad_request"),
    ("unknown field", '{"type": "send", "to": "bob", "body": "x", "client_msg_id": "a", "sender": "bob"}',
     "bad_request"),
    ("wrong type", '{"type": "send", "to": "bob", "body": 5, "client_msg_id": "a"}', "bad_request"),
    ("non-member", '{"type": "send", "conversation": "dm:bob:carol", "body": "x", "client_msg_id": "nm"}',
     "forbidden"),
    ("unknown user", '{"type": "send", "to": "nobody", "body": "x", "client_msg_id": "nu"}', "not_found"),
    ("bad receipt", '{"type": "receipt", "conversation": "dm:alice:bob", "up_to": 0, "status": "read"}',
     "bad_request"),
    ("bad resume cursor", '{"type": "resume", "after": "nope"}', "bad_request"),
    ("over 16 KiB", json.dumps({"type": "send", "to": "bob", "body": "x" * MAX_BODY_BYTES,
                                "client_msg_id": "big"}), "too_large"),
]


@pytest.mark.parametrize("name,frame,error", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
async def test_bad_frame_gets_an_error_frame(name: str, frame: str, error: str, server, api: Api) -> None:
    alice = await api.user("alice")
    await api.user("bob")
    await api.user("carol")
    ws = await ws_open(api, alice, resume=False)
    before = await stored(server)
    await ws.send_str(frame)
    (reply,) = await ws_frames_until(ws, lambda f: True)
    assert reply["type"] == "error" and reply["error"] == error and reply["message"], reply
    if '"client_msg_id": "nm"' in frame:
        assert reply["client_msg_id"] == "nm", "errors name the send they refuse"
    assert await stored(server) == before
    # The connection is still usable.
    await ws.send_json({"type": "send", "to": "bob", "body": "still here", "client_msg_id": "ok-1"})
    (ack,) = await ws_frames_until(ws, lambda f: True)
    assert ack["type"] == "ack" and ack["client_msg_id"] == "ok-1"
    await ws.close()


async def test_binary_frame_is_refused(server, api: Api) -> None:
    ws = await ws_open(api, await api.user("alice"), resume=False)
    await ws.send_bytes(b'{"type":"send"}')
    (reply,) = await ws_frames_until(ws, lambda f: True)
    assert reply["type"] == "error" and "binary" in reply["message"]
    await ws.close()


async def test_ws_rate_limit(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(rate_per_s=0.5, rate_burst=2)
    api = Api(session, server.url)
    alice = await api.user("alice")
    await api.user("bob")
    ws = await ws_open(api, alice, resume=False)
    replies = []
    for i in range(3):
        await ws.send_json({"type": "send", "to": "bob", "body": "x", "client_msg_id": f"r{i}"})
        replies += await ws_frames_until(ws, lambda f: True)
    assert [r["type"] for r in replies] == ["ack", "ack", "error"]
    assert replies[2]["error"] == "rate_limited" and replies[2]["client_msg_id"] == "r2"
    assert (await stored(server))["messages"] == 2
    await ws.close()


class _Transport:
    """Records writes; pretends the peer reads nothing once *stuck*."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536])
def test_text_frame_header_is_rfc6455(n: int) -> None:
    header = text_frame_header(n)
    assert len(header) == ws_frame_overhead(n, masked=False)
    assert header[0] == 0x81, "FIN + text opcode"
    assert header[1] & 0x80 == 0, "a server never masks"
    length = header[1] & 0x7F
    if n < 126:
        assert length == n
    elif n < 65536:
        assert length == 126 and int.from_bytes(header[2:4], "big") == n
    else:
        assert length == 127 and int.from_bytes(header[2:10], "big") == n


async def test_sink_writes_one_turns_frames_once_and_closes_a_slow_reader() -> None:
    transport = _Transport()
    overflows: list[int] = []
    flusher = Flusher()
    sink = Sink(transport, 100, flusher, lambda: overflows.append(1))  # type: ignore[arg-type]
    sink.send(b'{"a":1}')
    sink.send(b'{"b":2}')
    assert transport.writes == [], "nothing is written before the turn ends"
    await asyncio.sleep(0)
    assert transport.writes == [b'\x81\x07{"a":1}\x81\x07{"b":2}'], "two frames, one write"
    sink.send(b"x" * 120)  # the peer reads nothing: 138 bytes wait in the transport
    await asyncio.sleep(0)
    assert overflows == [1] and sink.closed
    sink.send(b"more")
    await asyncio.sleep(0)
    assert len(transport.writes) == 2, "nothing is written after the overflow"


async def test_slow_consumer_is_closed_with_4008(make_server, session: aiohttp.ClientSession) -> None:
    """Bob's socket is never read: his send queue fills and the server closes it with 4008;
    his next resume still gets every event (the log has them all)."""
    server = await make_server(ws_send_queue_bytes=8192, rate_per_s=1e6, rate_burst=10 ** 6)
    api = Api(session, server.url)
    alice, bob = await api.user("alice"), await api.user("bob")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the kernel buffers fill sooner
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    slow = await websockets.connect(api.ws_url(), sock=sock, compression=None, max_size=2 ** 20)
    await slow.send(json.dumps({"type": "auth", "token": bob}))
    await slow.send(json.dumps({"type": "resume", "after": None}))
    sender = await websockets.connect(api.ws_url(), compression=None)
    await sender.send(json.dumps({"type": "auth", "token": alice}))

    window = asyncio.Semaphore(50)  # at most 50 sends in flight: the server is not flooded

    async def read_acks() -> None:
        async for _ in sender:
            window.release()

    acks = asyncio.create_task(read_acks())
    sent = 0
    deadline = time.monotonic() + 20
    while server.chat.metrics.slow_consumers.get() == 0:
        assert time.monotonic() < deadline, f"no slow-consumer close after {sent} messages"
        async with asyncio.timeout(10):
            await window.acquire()
        await sender.send(json.dumps({"type": "send", "to": "bob", "body": "x" * 4000, "client_msg_id": f"c{sent}"}))
        sent += 1
    received = []
    with pytest.raises(websockets.ConnectionClosed):
        async for text in slow:
            received.append(json.loads(text))
    assert slow.close_code == 4008
    acks.cancel()
    await sender.close()
    assert received, (slow.close_code, slow.close_reason, sent, server.chat.metrics.slow_consumers.get())
    cursor = [e for e in received if "cursor" in e][-1]["cursor"]

    # The log kept everything: a resume from the last cursor delivers the rest.
    ws = await ws_open(api, bob, after=cursor)
    frames = await ws_frames_until(ws, lambda f: f["type"] == "resumed", timeout=20)
    assert frames[-1]["recovered"] is True
    total = [e for e in received + frames if e["type"] == "message"]
    assert len(total) <= sent
    ids = [e["id"] for e in total]
    assert ids == list(range(1, len(ids) + 1)), "nothing lost, nothing twice"
    await ws.close()


@pytest.mark.parametrize("enabled", [False, True], ids=["default-off", "flag-on"])
async def test_compression_switch(enabled: bool, make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server(ws_compression=enabled)
    api = Api(session, server.url)
    token = await api.user("alice")
    ws = await websockets.connect(api.ws_url(), compression="deflate")  # the client offers it
    extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    assert ("permessage-deflate" in extensions) is enabled
    await ws.send(json.dumps({"type": "auth", "token": token}))
    await ws.send(json.dumps({"type": "resume", "after": None}))
    assert json.loads(await ws.recv())["type"] == "resumed"
    await ws.close()
