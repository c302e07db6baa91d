"""Property-based fuzzing of every WebSocket frame type (docs/PROTOCOL.md, "WebSocket"):
a bad ``auth`` frame closes with 4001, every later bad frame gets an ``error`` frame and the
connection stays open, nothing is half-stored, and the log gets no traceback. One server for
the module (fuzz_support.py), on the embedded fakeredis; ``make soak`` runs 10,000 examples
per frame type."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ..soak import size
from .fuzz_support import (FUZZ_SETTINGS, FuzzServer, bodies, client_msg_ids, conversations, json_values,
                           nasty_text, shaped, start, user_names)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(size(300, 7200))]


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    server = start(tmp_path_factory.mktemp("fuzz-ws"))
    try:
        yield next(server)
    finally:
        for ws in _OPEN.values():  # before the server stops, so it need not wait for them
            ws.close()
        _OPEN.clear()
        next(server, None)


def _open(fs: FuzzServer) -> Any:
    """A context manager: ``with _open(fs) as ws``."""
    return connect(f"ws://127.0.0.1:{fs.port}/ws", compression=None, proxy=None, open_timeout=30,
                   max_size=None, ping_interval=None)


@contextlib.contextmanager
def _session(fs: FuzzServer, who: str = "alice") -> Iterator[ClientConnection]:
    """Authenticated and resumed; the replay and ``resumed`` are read. One connection per
    user is kept for the module (a bad frame must not close it: if one did, the next probe
    fails the test), so 10,000 examples do not cost 10,000 handshakes."""
    ws = _OPEN.get(who)
    if ws is not None:
        try:
            while True:  # what was pushed to it since its last use (other users' sends)
                ws.recv(timeout=0)
        except TimeoutError:
            pass
        except (ConnectionClosed, OSError):
            ws = None  # closed meanwhile (a bad frame of an earlier example was the 1007 one)
    if ws is None:
        # max_queue=None: the client's reader thread keeps reading while the test does not,
        # so the server never sees a slow consumer (4008) on an idle cached connection.
        ws = _OPEN[who] = _resumed(connect(f"ws://127.0.0.1:{fs.port}/ws", compression=None, proxy=None,
                                           open_timeout=30, max_size=None, max_queue=None, ping_interval=None,
                                           legacy=True), fs, who)
    yield ws


_OPEN: dict[str, ClientConnection] = {}


def _resumed(ws: ClientConnection, fs: FuzzServer, who: str) -> ClientConnection:
    ws.send(json.dumps({"type": "auth", "token": fs.tokens[who]}))
    ws.send(json.dumps({"type": "resume", "after": None}))
    while json.loads(ws.recv(timeout=30))["type"] != "resumed":
        pass
    return ws


def _probe_and_collect(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a send that the store refuses (to an unknown user): its error comes after the
    answers to every frame before it (answers leave in frame order), so the frames read up to
    it are all the earlier frames got. The connection must still be open."""
    probe = f"probe-{uuid.uuid4().hex}"
    ws.send(json.dumps({"type": "send", "to": "nobody", "body": "probe", "client_msg_id": probe}))
    frames = []
    while True:
        try:
            frame = json.loads(ws.recv(timeout=30))
        except ConnectionClosed as exc:
            raise AssertionError(f"the connection was closed ({exc.rcvd}); frames: {frames}") from None
        if frame.get("client_msg_id") == probe:
            assert frame["type"] == "error" and frame["error"] == "not_found", frame
            return frames
        frames.append(frame)


def _check(fs: FuzzServer, frames: list[dict[str, Any]], sent: Any) -> None:
    for f in frames:
        assert f["type"] in ("error", "ack", "resumed", "message", "receipt", "presence"), (f, sent)
        if f["type"] == "error":
            assert isinstance(f["error"], str) and isinstance(f["message"], str), f
            assert f["error"] != "unavailable", (f, sent)
    fs.trap.check()


def _frames(shape: st.SearchStrategy[dict[str, Any]], kind: str) -> st.SearchStrategy[bytes]:
    typed = shape.map(lambda d: {"type": kind, **d})
    return st.one_of(bodies(typed), bodies(typed), bodies(json_values))


sends = shaped({"body": nasty_text, "client_msg_id": client_msg_ids},
               {"to": user_names, "conversation": conversations})
receipts = shaped({"conversation": conversations, "up_to": st.integers(-3, 2 ** 54),
                   "status": st.sampled_from(["read", "delivered", "seen"])})
resumes = shaped({}, {"after": st.one_of(st.none(), nasty_text, st.just("ffffffff.0"))})
auths = shaped({"token": st.one_of(nasty_text, st.just("VALID"))})


def _send_raw(ws: ClientConnection, data: bytes) -> None:
    """As a text frame when it is UTF-8 (what a browser can send), else as a binary frame."""
    try:
        ws.send(data.decode("utf-8"))
    except UnicodeDecodeError:
        ws.send(data)


@FUZZ_SETTINGS
@given(frame=_frames(auths, "auth"))
def test_a_bad_auth_frame_closes_4001_and_nothing_else(fs: FuzzServer, frame: bytes) -> None:
    frame = frame.replace(b'"VALID"', json.dumps(fs.tokens["bob"]).encode())
    with _open(fs) as ws:
        _send_raw(ws, frame)
        try:
            ws.send(json.dumps({"type": "resume", "after": None}))
            first = json.loads(ws.recv(timeout=30))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 4001, (exc.rcvd, frame[:200])
        else:  # it was the valid auth frame
            assert first["type"] in ("resumed", "message", "receipt", "presence"), first
    fs.trap.check()


@FUZZ_SETTINGS
@given(frame=_frames(resumes, "resume"))
def test_a_bad_resume_frame_gets_an_error_frame(fs: FuzzServer, frame: bytes) -> None:
    with _open(fs) as ws:
        ws.send(json.dumps({"type": "auth", "token": fs.tokens["carol"]}))
        _send_raw(ws, frame)
        _check(fs, _probe_and_collect(ws), frame)


@FUZZ_SETTINGS
@given(frame=_frames(sends, "send"), who=st.sampled_from(["alice", "bob", "carol"]))
def test_a_bad_send_frame_gets_an_error_frame_and_stores_nothing(fs: FuzzServer, frame: bytes, who: str) -> None:
    with _session(fs, who) as ws:
        before = fs.counts()
        _send_raw(ws, frame)
        frames = _probe_and_collect(ws)
        _check(fs, frames, frame)
        after = fs.counts()
        if not any(f["type"] == "ack" for f in frames):
            assert after == before, ("a refused send stored something", frame[:200], frames)
        else:
            assert after["messages"] - before["messages"] in (0, 1)


@FUZZ_SETTINGS
@given(frame=_frames(receipts, "receipt"), who=st.sampled_from(["alice", "bob", "carol"]))
def test_a_bad_receipt_frame_gets_an_error_frame_and_stores_nothing(fs: FuzzServer, frame: bytes,
                                                                    who: str) -> None:
    with _session(fs, who) as ws:
        before = fs.counts()
        _send_raw(ws, frame)
        frames = _probe_and_collect(ws)
        _check(fs, frames, frame)
        if any(f["type"] == "error" for f in frames):  # a stored receipt gets no answer at all
            assert fs.counts() == before, ("a refused receipt stored something", frame[:200], frames)


@FUZZ_SETTINGS
@given(kind=st.one_of(nasty_text, st.sampled_from(["auth", "ack", "error", "resumed", "message", "SEND", ""]),
                      json_values),
       rest=st.dictionaries(nasty_text, json_values, max_size=4),
       binary=st.booleans())
def test_any_other_frame_gets_an_error_frame(fs: FuzzServer, kind: Any, rest: dict[str, Any], binary: bool) -> None:
    frame = json.dumps({**rest, "type": kind}).encode()
    with _session(fs, "bob") as ws:
        ws.send(frame) if binary else _send_raw(ws, frame)
        frames = _probe_and_collect(ws)
        _check(fs, frames, frame)
        assert [f["type"] for f in frames if f["type"] not in ("message", "receipt", "presence")] == ["error"], frames


@FUZZ_SETTINGS
@given(data=st.binary(min_size=1, max_size=200).filter(lambda b: not _is_utf8(b)))
def test_a_text_frame_that_is_not_utf8_is_closed_1007_without_a_traceback(fs: FuzzServer, data: bytes) -> None:
    """RFC 6455 §8.1: invalid UTF-8 in a text frame fails the connection (1007); the frame
    layer refuses it before the server sees a message."""
    with _session(fs, "carol") as ws:
        ws.send(data, text=True)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007, closed.value
    fs.trap.check()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_fuzz_server_still_serves_websockets(fs: FuzzServer) -> None:
    with _session(fs, "alice") as ws:
        ws.send(json.dumps({"type": "send", "to": "bob", "body": "still here", "client_msg_id": uuid.uuid4().hex}))
        assert [f for f in _probe_and_collect(ws) if f["type"] == "ack"]
    fs.trap.check()
