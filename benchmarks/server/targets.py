"""The servers under test of ``make bench-server``, and how to start one and create its users.

=============  =======================================================  =======================
key            what                                                      protocols driven
=============  =======================================================  =======================
ours           the reference server, embedded fakeredis (the default)    chatlab-ws, -longpoll
ours_redis     the reference server on the real Redis (own key prefix)   chatlab-ws, -longpoll
socketio       Socket.IO 4.8 on Node.js, in memory                       sio-ws, sio-polling
relay          a bare aiohttp relay of the same frames (relay.py)        chatlab-ws
=============  =======================================================  =======================

Each is started fresh for each measurement (a new SQLite file, a new key prefix), pinned to
CPU 0, and stopped after it; the real-Redis keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .procs import SERVER_CPU, Child

NODE_DIR = Path(__file__).resolve().parent
REPO = NODE_DIR.parent.parent


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    ws_protocol: str
    poll_protocol: str | None
    #: True: users register and log in over HTTP (the loadgen gets tokens); False: a name is enough.
    accounts: bool
    redis: bool = False


TARGETS: dict[str, Target] = {t.key: t for t in (
    Target("ours", "ours (fakeredis)", "chatlab-ws", "chatlab-longpoll", True),
    Target("ours_redis", "ours (Redis)", "chatlab-ws", "chatlab-longpoll", True, redis=True),
    Target("socketio", "Socket.IO 4.8", "sio-ws", "sio-polling", False),
    Target("relay", "aiohttp relay", "chatlab-ws", None, True),
)}


@dataclass
class Running:
    """A started server; :meth:`stop` ends it and deletes its Redis keys."""

    target: Target
    child: Child
    redis_url: str | None = None
    redis_prefix: str | None = None

    @property
    def url(self) -> str:
        return self.child.url

    @property
    def pid(self) -> int:
        return self.child.pid

    async def stop(self) -> None:
        await self.child.stop()
        if self.redis_url and self.redis_prefix:
            await delete_prefix(self.redis_url, self.redis_prefix)


async def delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix:``; returns how many."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
    n = 0
    try:
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            n += await client.delete(key)
    finally:
        await client.aclose()
    return n


async def redis_pid(redis_url: str) -> int | None:
    """The pid of the Redis server at *redis_url* when it runs on this machine (its CPU time
    is then read from /proc alongside the server's), else None."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        pid = int((await client.info("server"))["process_id"])
    except Exception:
        return None
    finally:
        await client.aclose()
    try:
        exe = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if exe.startswith("redis") else None


async def redis_answers(redis_url: str) -> str | None:
    """The Redis server's version, or None when nothing answers at *redis_url*."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return str((await client.info("server"))["redis_version"])
    except Exception:
        return None
    finally:
        await client.aclose()


async def start(target: Target, workdir: Path, redis_url: str) -> Running:
    """Start *target* fresh (data under *workdir*), pinned to the server CPU; returns once it
    answers ``/healthz``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    prefix = None
    if target.key in ("ours", "ours_redis"):
        cmd = [sys.executable, "-m", "reference_server.loadgen.server_proc", "--port", "0",
               "--data-dir", str(workdir / "data")]
        if target.redis:
            prefix = f"chatlab-bench-{uuid.uuid4().hex[:10]}"
            cmd += ["--redis-url", redis_url, "--redis-prefix", prefix]
            # Found by the next run if this one is killed before it deletes the keys.
            (workdir / "redis_prefix").write_text(f"{redis_url} {prefix}\n")
    elif target.key == "relay":
        cmd = [sys.executable, "-m", "benchmarks.server.relay", "--port", "0"]
    elif target.key == "socketio":
        cmd = ["node", str(NODE_DIR / "sio_server.mjs"), "--port", "0"]
    else:  # pragma: no cover - TARGETS is closed
        raise ValueError(target.key)
    child = Child(target.key, cmd, SERVER_CPU, log, cwd=REPO, health_path="/healthz")
    running = Running(target, child, redis_url if target.redis else None, prefix)
    try:
        await child.start()
    except BaseException:
        if prefix:
            with contextlib.suppress(Exception):
                await delete_prefix(redis_url, prefix)
        raise
    return running


def user_names(n: int) -> list[str]:
    return [f"u{i:07d}" for i in range(n)]  # 8 characters, as the simulation's wire sizes assume


async def create_accounts(url: str, names: list[str], concurrency: int = 32, timeout_s: float = 300.0) -> list[str]:
    """Register and log in every name (``POST /api/register`` + ``/api/login``); returns the
    tokens in order. Not measured: it happens before the load generator starts."""
    tokens: list[str] = [""] * len(names)
    sem = asyncio.Semaphore(concurrency)
    password = "bench-password"

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        async with sem:
            cred = {"user": names[i], "password": password}
            async with s.post(url + "/api/register", json=cred) as r:
                if r.status != 201:
                    raise RuntimeError(f"register {names[i]}: HTTP {r.status} {(await r.text())[:200]}")
            async with s.post(url + "/api/login", json=cred) as r:
                if r.status != 200:
                    raise RuntimeError(f"login {names[i]}: HTTP {r.status} {(await r.text())[:200]}")
                tokens[i] = json.loads(await r.read())["token"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2),
                                     timeout=aiohttp.ClientTimeout(total=60)) as s:
        await asyncio.wait_for(asyncio.gather(*(one(s, i) for i in range(len(names)))), timeout_s)
    return tokens


async def held_long_polls(url: str, token: str) -> int | None:
    """``chatlab_held_long_polls`` from the reference server's ``/metrics`` (None if absent)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"},
                         timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status != 200:
                return None
            for line in (await r.text()).splitlines():
                if line.startswith("chatlab_held_long_polls"):
                    return int(float(line.split()[-1]))
    return None
