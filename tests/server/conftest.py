"""Fixtures for the reference-server tests: a real server on a loopback port, once per
Redis backend (embedded fakeredis, and the real Redis at ``CHATLAB_REDIS_URL``).

The real-Redis tests FAIL when that Redis does not answer: a missing service must
not turn into a green run. Each server gets its own key prefix and SQLite file, and
its keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from reference_server.app import RunningServer, run_server
from reference_server.clock import SYSTEM, Clock
from reference_server.config import ServerConfig
from reference_server.redis_link import connect

REDIS_URL = os.environ.get("CHATLAB_REDIS_URL", "redis://127.0.0.1:6379/0")
#: A PostgreSQL role allowed to create databases; each test makes its own and drops it.
PG_ADMIN_URL = os.environ.get("CHATLAB_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Parametrize a test with ``database`` (or pass ``db=database`` to make_server) to run it on both.
DATABASES = [pytest.param("sqlite", id="sqlite"),
             pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]
BACKENDS = [pytest.param("fakeredis", id="fakeredis"),
            pytest.param("redis", id="redis", marks=pytest.mark.redis)]
PASSWORD = "correct horse"


def fast_config(tmp_path: Path, redis_url: str | None, prefix: str, **overrides: Any) -> ServerConfig:
    """Production semantics, test-sized timings: a cheap scrypt, quick sweeps and reclaims.
    Admission control is off unless a test turns it on: on a loaded test machine the event
    loop can stall past its bound, and a refusal there would be the machine's, not the
    server's (test_admission.py tests the rule itself)."""
    base = ServerConfig(host="127.0.0.1", port=0, redis_url=redis_url, redis_prefix=prefix,
                        data_dir=tmp_path, scrypt_n=16, presence_sweep_s=0.1, queue_reclaim_every_s=0.2,
                        queue_visibility_timeout_s=1.0, queue_poll_ms=200, rate_per_s=1000, rate_burst=1000,
                        admission=False)
    return replace(base, **overrides)


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}:*", count=500):
        await client.delete(key)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def redis_url(backend: str) -> str | None:
    """None for the embedded fakeredis; the real URL after checking that Redis answers."""
    if backend == "fakeredis":
        return None
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        pytest.fail(f"real Redis at {REDIS_URL} does not answer ({exc}); start one "
                    "(tools/ensure-services.sh) or set CHATLAB_REDIS_URL")
    finally:
        await client.aclose()
    return REDIS_URL


NewDatabase = Callable[[], Awaitable[Any]]


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def new_database(database: str, tmp_path: Path) -> AsyncIterator[NewDatabase]:
    """``await new_database()``: a fresh, empty database of the parametrized kind: a SQLite
    file under tmp_path, or a PostgreSQL database created for this test and dropped after it
    (skipped, saying why, when no PostgreSQL answers at ``CHATLAB_PG_URL``)."""
    made: list[str] = []

    async def make() -> Any:
        name = f"chatlab_test_{uuid.uuid4().hex[:12]}"
        if database == "sqlite":
            return tmp_path / f"{name}.sqlite3"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        made.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    for name in made:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _pg_admin(sql: str) -> None:
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} does not answer ({str(exc).strip()[:120]}); "
                    "`make services` starts one, or set CHATLAB_PG_URL")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


MakeServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def make_server(redis_url: str | None, tmp_path: Path) -> AsyncIterator[MakeServer]:
    """``await make_server(**config_overrides)`` starts a server (``clock=`` a FakeClock for the
    server's rules, ``db="postgresql"`` for a PostgreSQL database of its own); all stop at
    teardown."""
    started: list[tuple[RunningServer, str]] = []
    databases: list[str] = []

    async def make(clock: Clock = SYSTEM, db: str = "sqlite", **overrides: Any) -> RunningServer:
        prefix = overrides.pop("redis_prefix", f"chatlab-test-{uuid.uuid4().hex[:12]}")
        data_dir = overrides.pop("data_dir", tmp_path / f"srv{len(started)}")
        if db == "postgresql":  # a database of its own, dropped at teardown
            name = f"chatlab_test_{uuid.uuid4().hex[:12]}"
            await _pg_admin(f'CREATE DATABASE "{name}"')
            databases.append(name)
            overrides["db_url"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        srv = await run_server(fast_config(data_dir, redis_url, prefix, **overrides), clock=clock)
        started.append((srv, prefix))
        return srv

    yield make
    for srv, prefix in reversed(started):
        await srv.stop()
    client = connect(redis_url)
    try:
        for _, prefix in started:
            await delete_prefix(client, prefix)
    finally:
        await client.aclose()
    for name in databases:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def server(make_server: MakeServer) -> RunningServer:
    return await make_server()


class Api:
    """Raw HTTP calls for protocol tests: ``status, body = await api.call(...)``."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(self, method: str, path: str, token: str | None = None, json: Any = None,
                   data: bytes | str | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url + path, json=json, data=data, headers=h) as r:
            raw = await r.read()
            try:
                return r.status, jsonlib.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode("utf-8", "replace")

    async def user(self, name: str, password: str = PASSWORD) -> str:
        """Register *name* and return a fresh token."""
        status, body = await self.call("POST", "/api/register", json={"user": name, "password": password})
        assert status == 201, body
        status, body = await self.call("POST", "/api/login", json={"user": name, "password": password})
        assert status == 200, body
        return body["token"]

    async def send(self, token: str, body: str = "hello", **target: str) -> dict[str, Any]:
        status, ack = await self.call("POST", "/api/messages", token,
                                      json={**target, "body": body, "client_msg_id": uuid.uuid4().hex})
        assert status == 200, ack
        return ack

    async def poll(self, token: str, after: str | None = None) -> tuple[int, Any]:
        return await self.call("GET", "/api/poll" + (f"?after={after}" if after else ""), token)

    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] + "/ws"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def api(session: aiohttp.ClientSession, server: RunningServer) -> Api:
    return Api(session, server.url)


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll *predicate* every 10 ms until true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_for_events(events: list[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool],
                          count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Wait until *events* holds *count* events matching *predicate*; return them."""
    await wait_until(lambda: sum(1 for e in events if predicate(e)) >= count, timeout,
                     f"{count} matching event(s); have {events!r}")
    return [e for e in events if predicate(e)]


async def ws_open(api: Api, token: str, after: str | None = None, resume: bool = True) -> aiohttp.ClientWebSocketResponse:
    """A raw WebSocket, authenticated and (by default) resumed from *after*; the ``resumed``
    frame is left for the caller to read."""
    ws = await api.session.ws_connect(api.ws_url())
    await ws.send_json({"type": "auth", "token": token})
    if resume:
        await ws.send_json({"type": "resume", "after": after})
    return ws


async def ws_frames_until(ws: aiohttp.ClientWebSocketResponse, stop: Callable[[dict[str, Any]], bool],
                          timeout: float = 5.0) -> list[dict[str, Any]]:
    """Read JSON frames until one satisfies *stop* (included in the result)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra, frames)
        frames.append(jsonlib.loads(msg.data))
        if stop(frames[-1]):
            return frames


async def poll_until(api: Api, token: str, predicate: Callable[[dict[str, Any]], bool], count: int = 1,
                     timeout: float = 5.0) -> list[dict[str, Any]]:
    """Long-poll from the start of *token*'s log until *count* events match *predicate*;
    returns every event read (matching or not), in order."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    deadline = time.monotonic() + timeout
    while sum(1 for e in events if predicate(e)) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; events so far: {events!r}")
        status, page = await api.call("GET", "/api/longpoll?timeout=%.2f" % min(left, 2.0)
                                      + (f"&after={cursor}" if cursor else ""), token)
        assert status == 200, page
        events.extend(page["events"])
        cursor = page["cursor"]
    return events


async def stored(server: RunningServer) -> dict[str, int]:
    """Row counts of what clients write (not the event logs, which presence and the
    asynchronous fan-out change): equal before and after = the request stored nothing."""
    counts = await server.chat.store.counts()
    return {t: counts[t] for t in ("users", "conversations", "members", "messages", "receipts")}
