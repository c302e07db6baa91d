"""Shared by test_fuzz_http.py and test_fuzz_ws.py: one server per test module, run on its
own event loop in a thread (hypothesis drives plain functions, many examples per test), a
raw HTTP/1.1 client that sends any bytes, a trap for log records, and the strategies."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Coroutine, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from reference_server.app import RunningServer, run_server

from ..soak import size
from .conftest import PASSWORD, fast_config, stored

T = TypeVar("T")

#: Examples per endpoint: small in ``make test``, 10,000 in ``make soak``.
EXAMPLES = size(40, 10_000)

FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck), print_blob=False)


class LogTrap(logging.Handler):
    """Keeps every record at WARNING or above, or carrying a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "asyncio" and str(record.msg).startswith("Executing"):
            return  # asyncio debug mode's slow-callback notes: the machine's load, not the server's
        if record.exc_info or record.levelno >= logging.WARNING:
            self.bad.append(record)

    def check(self) -> None:
        """Fail if anything was trapped since the last check (and forget it)."""
        bad, self.bad = self.bad, []
        assert not bad, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad]


@dataclass
class FuzzServer:
    """A server on a private loop in a thread, with three users and two conversations."""

    server: RunningServer
    loop: asyncio.AbstractEventLoop
    trap: LogTrap
    tokens: dict[str, str] = field(default_factory=dict)
    group: str = ""

    @property
    def port(self) -> int:
        return self.server.port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def counts(self) -> dict[str, int]:
        """Rows clients write (users, conversations, members, messages, receipts)."""
        return self.run(stored(self.server))


def start(tmp: Path, **overrides: Any) -> Iterator[FuzzServer]:
    """Generator for a module-scoped fixture: yields a :class:`FuzzServer`, stops it after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-server", daemon=True)
    thread.start()
    trap = LogTrap()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(trap)
    root.setLevel(logging.INFO)
    # Generous limits: the fuzz looks for 5xx and tracebacks, not for the throttles (tested
    # in test_hostile.py); a 429 would still be a valid answer.
    config = dict(read_rate_per_s=1e6, read_burst=10**6, login_failures_per_account_burst=10**6,
                  login_failures_per_ip_burst=10**6)
    config.update(overrides)
    cfg = fast_config(tmp, None, f"chatlab-fuzz-{uuid.uuid4().hex[:12]}", **config)
    server = asyncio.run_coroutine_threadsafe(run_server(cfg), loop).result(60)
    fs = FuzzServer(server, loop, trap)
    try:
        for name in ("alice", "bob", "carol"):
            assert http(fs.port, "POST", "/api/register", _json({"user": name, "password": PASSWORD}))[0] == 201
            status, body = http(fs.port, "POST", "/api/login", _json({"user": name, "password": PASSWORD}))
            fs.tokens[name] = json.loads(body)["token"]
        status, body = http(fs.port, "POST", "/api/groups", _json({"members": ["bob", "carol"]}),
                            token=fs.tokens["alice"])
        fs.group = json.loads(body)["conversation"]
        for conv in ({"to": "bob"}, {"conversation": fs.group}):
            assert http(fs.port, "POST", "/api/messages",
                        _json({**conv, "body": "seed", "client_msg_id": uuid.uuid4().hex}),
                        token=fs.tokens["alice"])[0] == 200
        trap.check()
        yield fs
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        root.removeHandler(trap)
        root.setLevel(old_level)


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def http(port: int, method: str, target: str | bytes, body: bytes | None = None, token: str | None = None,
         headers: list[bytes] | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    """One request on a fresh connection, bytes as given (anything may be in *target* and
    *headers*); returns ``(status, body)``, status 0 when the server closed without answering."""
    lines = [method.encode() + b" " + (target if isinstance(target, bytes) else target.encode()) + b" HTTP/1.1",
             b"Host: 127.0.0.1", b"Connection: close"]
    if token is not None:
        lines.append(b"Authorization: Bearer " + token.encode())
    lines += headers or []
    if body is not None:
        lines += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    data = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/1."):
        return 0, raw
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def check_answer(status: int, body: bytes, what: Any) -> None:
    """Never a 5xx; a refusal is the protocol's JSON ``{"error", "message"}`` (aiohttp's own
    400 for a request it cannot parse is plain text)."""
    assert status != 0, f"closed without an answer: {what!r}"
    assert status < 500, (status, body[:300], what)
    if status >= 400 and body.startswith(b"{"):
        err = json.loads(body)
        assert isinstance(err.get("error"), str) and isinstance(err.get("message"), str), err


# --- strategies ---------------------------------------------------------------------------
LONE_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "a\ud83d", "\ude00b"])
#: Any text, with lone surrogates mixed in (they reach the wire as \\udxxx escapes).
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zs", "So", "Lo"]), max_size=20),
    st.lists(st.one_of(st.text(max_size=5), LONE_SURROGATES), max_size=5).map("".join),
    st.sampled_from(["", " ", "alice", "bob", "dm:alice:bob", "g:1", "g:0", "dm:bob:alice", "null",
                     "0" * 5000, "\x00", "a" * 300]),
)
huge_ints = st.one_of(st.integers(), st.integers(min_value=2 ** 53 - 2, max_value=2 ** 70),
                      st.integers(max_value=-(2 ** 63)), st.sampled_from([0, -1, 1, 2, 2 ** 64, 10 ** 400]))
scalars = st.one_of(st.none(), st.booleans(), huge_ints, st.floats(allow_nan=True, allow_infinity=True),
                    nasty_text)
json_values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                        st.dictionaries(nasty_text, c, max_size=4)),
                           max_leaves=12)


def valid_or(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes anything."""
    return st.one_of(valid, valid, json_values)


def shaped(required: dict[str, st.SearchStrategy[Any]],
           optional: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of roughly the right shape: fields may be dropped, added or of any type."""
    base = st.fixed_dictionaries({k: valid_or(v) for k, v in required.items()},
                                 optional={**{k: valid_or(v) for k, v in (optional or {}).items()},
                                           "sender": json_values, "extra": json_values})
    return st.one_of(base, base.flatmap(lambda d: st.sets(st.sampled_from(sorted(d) or [""])).map(
        lambda drop: {k: v for k, v in d.items() if k not in drop})))


def encodings(obj: Any) -> st.SearchStrategy[bytes]:
    """How a JSON value may reach the wire: escaped ASCII, raw UTF-8 (lone surrogates then
    become invalid UTF-8 bytes), or cut short."""
    ascii_ = json.dumps(obj, ensure_ascii=True).encode()
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return st.sampled_from([ascii_, raw, ascii_[: max(1, len(ascii_) // 2)]])


#: Nesting depths around the limit (32) and around Python's recursion limit (~1,000).
DEPTHS = st.one_of(st.sampled_from([31, 32, 33, 990, 1000, 1100, 8000]), st.integers(1, 8000))


def bodies(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Request bodies: shaped objects, any JSON, raw bytes, deep nesting, almost-too-large."""
    return st.one_of(
        shape.flatmap(encodings), shape.flatmap(encodings),
        json_values.flatmap(encodings),
        st.binary(max_size=64),
        DEPTHS.map(lambda n: b"[" * n + b"]" * n),
        DEPTHS.map(lambda n: b'{"a":' * min(n, 3000) + b"1" + b"}" * min(n, 3000)),
        st.sampled_from([b"", b" ", b"null", b"NaN", b"[]", b"{}", b'{"a":1e999}', b"\xef\xbb\xbf{}",
                         b'"' + b"x" * 16383, b"1" * 5000]),
    )


user_names = st.one_of(st.sampled_from(["alice", "bob", "carol", "nobody"]), st.from_regex(r"[a-z0-9_]{1,32}",
                                                                                             fullmatch=True))
conversations = st.one_of(st.sampled_from(["dm:alice:bob", "dm:bob:carol", "dm:alice:carol", "g:1", "g:2",
                                           "g:99999999999999999999"]),
                          st.from_regex(r"(dm|g):[a-z0-9:_]{0,20}", fullmatch=True))
client_msg_ids = st.one_of(st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True), nasty_text)
header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
