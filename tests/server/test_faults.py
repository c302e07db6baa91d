"""Faults (issue 10, docs/server.md "Storms and faults"): the server process killed with
SIGKILL at random points, Redis killed and restarted, a WebSocket peer that stops reading,
and a bystander beside 100 senders at their rate limits.

What each establishes is the guarantee of docs/server.md "The guarantees": every
acknowledged message arrives exactly once and in order (after the client library's
de-duplication), every receipt reaches the sender, and the server recovers by itself.
Sizes come from ``tests/soak.py`` (small in ``make test``, full in ``make soak``); waits are
generous (a loaded two-core machine), and no test asserts a speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from chatcore import TRANSPORTS
from reference_server.app import run_server
from reference_server.client import ChatClient
from reference_server.loadgen.process import ServerProcess, die_with_parent
from reference_server.redis_link import connect

from ..soak import size
from .conftest import delete_prefix, fast_config, wait_until

pytestmark = pytest.mark.soak

PASSWORD = "pw"


class Seen:
    """What each client's ``on_event`` got, after the client library's de-duplication."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.times: dict[str, list[float]] = {}

    def callback(self, user: str) -> Any:
        self.events[user], self.times[user] = [], []

        def on_event(event: dict[str, Any], t: float) -> None:
            self.events[user].append(event)
            self.times[user].append(t)
        return on_event

    def bodies(self, user: str) -> list[str]:
        return [e["body"] for e in self.events[user] if e.get("type") == "message"]

    def receipts(self, user: str, status: str = "delivered") -> list[int]:
        return [e["up_to"] for e in self.events[user] if e.get("type") == "receipt" and e["status"] == status]


def client(url: str, user: str, transport: str, seen: Seen, session: aiohttp.ClientSession,
           **kw: Any) -> ChatClient:
    """A client that rides out a server restart: quick reconnects, many patient retries
    (a send in flight at the kill is resent with its client_msg_id after ``send_timeout``)."""
    opts: dict[str, Any] = dict(backoff_base=0.1, backoff_cap=1.0, poll_interval=0.2, longpoll_timeout=5,
                                send_timeout=3.0, send_attempts=60, rng=random.Random(user))
    opts.update(kw)
    return ChatClient(url, user, PASSWORD, transport=transport, session=session, on_event=seen.callback(user), **opts)


class Pair:
    """Two users on one transport writing to each other: each sends ``a#0, a#1, ...`` one
    at a time (the next after the previous ack), and acknowledges every message it receives
    with a ``delivered`` receipt (the newest id, sent from a task of its own)."""

    def __init__(self, a: ChatClient, b: ChatClient, seen: Seen) -> None:
        self.a, self.b, self.seen = a, b, seen
        self.sent: dict[str, int] = {a.user: 0, b.user: 0}
        self.last_id: dict[str, int] = {}
        self.conversation = "dm:" + ":".join(sorted((a.user, b.user)))

    async def talk(self, sender: ChatClient, to: str, stop: asyncio.Event, gap_s: float) -> None:
        while not stop.is_set():
            ack = await sender.send(f"{sender.user}#{self.sent[sender.user]}", to=to)
            self.sent[sender.user] += 1
            self.last_id[sender.user] = ack["id"]
            await asyncio.sleep(gap_s)

    async def acknowledge(self, reader: ChatClient, stop: asyncio.Event) -> None:
        done = 0
        while True:
            ids = [e["id"] for e in self.seen.events[reader.user] if e.get("type") == "message"]
            newest = max(ids, default=0)
            if newest > done:
                await reader.receipt(self.conversation, newest, "delivered")
                done = newest
            elif stop.is_set():
                return
            await asyncio.sleep(0.05)

    def check(self) -> None:
        """Exactly once, in order; every receipt's watermark reached its sender."""
        for me, peer in ((self.a, self.b), (self.b, self.a)):
            assert self.seen.bodies(me.user) == [f"{peer.user}#{i}" for i in range(self.sent[peer.user])], \
                f"{me.user} got {peer.user}'s messages out of order, twice or not at all"
            receipts = self.seen.receipts(peer.user)
            assert receipts == sorted(receipts), f"{peer.user}'s receipts went backwards: {receipts}"
            assert receipts and receipts[-1] == self.last_id[peer.user], \
                f"{peer.user} sent up to id {self.last_id[peer.user]}; the receipts it got: {receipts[-5:]}"


async def _stop_all(clients: list[ChatClient]) -> None:
    await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)


async def _start_pairs(url: str, seen: Seen, session: aiohttp.ClientSession, clients: list[ChatClient],
                       stop: asyncio.Event, all_received: asyncio.Event
                       ) -> tuple[list[Pair], list[Any], list[Any]]:
    """A pair of users per transport, registered and started (added to *clients*), each
    sending to the other until *stop* and acknowledging until *all_received*."""
    pairs = []
    for t in TRANSPORTS:
        a, b = (client(url, f"{u}_{t}", t, seen, session) for u in ("a", "b"))
        clients += [a, b]
        for c in (a, b):
            await c.register()
            await c.start()
        pairs.append(Pair(a, b, seen))
    work = [asyncio.create_task(p.talk(s, r.user, stop, 0.05)) for p in pairs for s, r in ((p.a, p.b), (p.b, p.a))]
    receipts = [asyncio.create_task(p.acknowledge(c, all_received)) for p in pairs for c in (p.a, p.b)]
    return pairs, work, receipts


async def _finish(pairs: list[Pair], seen: Seen, stop: asyncio.Event, work: list[Any],
                  all_received: asyncio.Event, receipts: list[Any]) -> None:
    """Stop sending; wait until every message and every last receipt has arrived; check
    each pair (exactly once, in order, receipts forward and complete)."""
    stop.set()
    await asyncio.wait_for(asyncio.gather(*work), 120)
    for p in pairs:
        for me, peer in ((p.a, p.b), (p.b, p.a)):
            await wait_until(lambda: len(seen.bodies(me.user)) >= p.sent[peer.user], 60,
                             f"{me.user}: {len(seen.bodies(me.user))} of {p.sent[peer.user]} messages")
    all_received.set()
    await asyncio.wait_for(asyncio.gather(*receipts), 60)
    for p in pairs:
        for sender in (p.a, p.b):
            await wait_until(lambda: seen.receipts(sender.user)[-1:] == [p.last_id[sender.user]], 60,
                             f"{sender.user}'s last receipt {p.last_id[sender.user]}; "
                             f"got {seen.receipts(sender.user)[-5:]}")
    for p in pairs:
        p.check()


# --- b. SIGKILL of the server process at random points ---------------------------------------

@pytest.fixture
async def server_process(redis_url: str | None, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A server process (the load-test profile) on the parametrized backend; its data
    directory (the SQLite file) is kept across kills; its Redis keys are deleted after."""
    prefix = f"chatlab-test-{uuid.uuid4().hex[:12]}"
    sp = ServerProcess(tmp_path / "srv", redis_url=redis_url, redis_prefix=prefix, start_timeout_s=60,
                       parent_death_signal=signal.SIGKILL)
    await sp.start()
    try:
        yield sp
    finally:
        await sp.stop()
        if redis_url is not None:
            r = connect(redis_url)
            await delete_prefix(r, prefix)
            await r.aclose()


async def test_sigkill_at_random_points_loses_nothing(server_process: ServerProcess) -> None:
    """One pair per transport talks while the server is killed (SIGKILL) at seeded random
    moments and restarted on the same port and SQLite file. With the embedded fakeredis the
    queue dies with the process: the restart queues the outbox again (docs/server.md)."""
    kills = size(3, 20)
    rng = random.Random(20261130)
    seen = Seen()
    stop, all_received = asyncio.Event(), asyncio.Event()
    async with aiohttp.ClientSession() as session:
        clients: list[ChatClient] = []
        try:
            pairs, work, receipts = await _start_pairs(server_process.url, seen, session, clients, stop, all_received)
            downtimes = []
            for k in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                for w in work:
                    assert not w.done() or w.exception() is None, w.exception()
                await server_process.kill()
                t0 = time.monotonic()
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # dead for a while
                await server_process.start()
                downtimes.append(time.monotonic() - t0)
            await asyncio.sleep(0.5)  # some traffic after the last restart
            await _finish(pairs, seen, stop, work, all_received, receipts)
            total = sum(sum(p.sent.values()) for p in pairs)
            print(f"\nsigkill: {kills} kills, {total} messages acknowledged and delivered once; "
                  f"down (kill to healthy) {min(downtimes):.2f}-{max(downtimes):.2f} s")
            assert all(min(p.sent.values()) > 0 for p in pairs)
        finally:
            stop.set()
            all_received.set()
            await _stop_all(clients)


# --- c. Redis killed (kill -9) and restarted -----------------------------------------------

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own on a free loopback port (never the shared one), with
    no snapshots and AOF on or off; it can be killed (SIGKILL) and started again on the same
    port and directory."""

    def __init__(self, workdir: Path, aof: bool) -> None:
        self.dir, self.aof, self.port = workdir, aof, free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "redis.log", "ab")
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.aof else "no", "--dir", str(self.dir),
            stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent(signal.SIGKILL))
        log.close()
        r = connect(self.url)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await r.ping()
                    return
                except Exception:
                    if time.monotonic() > deadline or self.proc.returncode is not None:
                        raise RuntimeError(f"private redis-server on {self.port} did not start: "
                                           f"{(self.dir / 'redis.log').read_text()[-300:]}") from None
                    await asyncio.sleep(0.05)
        finally:
            await r.aclose()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


@pytest.fixture
async def private_redis(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} not found: the Redis-restart test needs the redis-server program "
                    "(Debian package redis-server)")
    r = PrivateRedis(tmp_path / "redis", aof=request.param)
    await r.start()
    try:
        yield r
    finally:
        await r.kill()


async def _health(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return 0


@pytest.mark.redis
@pytest.mark.parametrize("private_redis", [True, False], ids=["aof", "no-persistence"], indirect=True)
async def test_server_recovers_by_itself_after_redis_is_killed(private_redis: PrivateRedis, tmp_path: Path) -> None:
    """kill -9 the server's Redis while a pair per transport talks; /healthz says 503 while it
    is down; start it again (with AOF it comes back with its stream and group; without, empty:
    NOGROUP). The server recovers without help: /healthz 200 again, delivery resumes, and
    every acknowledged message arrives exactly once, in order, with its receipts."""
    server = await run_server(fast_config(tmp_path / "srv", private_redis.url, "chatlab"))
    rng = random.Random(6379)
    seen = Seen()
    stop, all_received = asyncio.Event(), asyncio.Event()
    outages = size(1, 5)
    async with aiohttp.ClientSession() as session:
        clients: list[ChatClient] = []
        try:
            pairs, work, receipts = await _start_pairs(server.url, seen, session, clients, stop, all_received)
            for _ in range(outages):
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                await private_redis.kill()
                statuses = [await _health(session, server.url) for _ in range(3)]
                assert 200 not in statuses, f"/healthz with Redis dead: {statuses}"
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                sent_before = sum(sum(p.sent.values()) for p in pairs)
                await private_redis.start()
                t0 = time.monotonic()
                while await _health(session, server.url) != 200:
                    assert time.monotonic() - t0 < 60, "the server did not recover within 60 s"
                    await asyncio.sleep(0.05)
                healthy_after = time.monotonic() - t0
                # Delivery resumed: a message sent now arrives.
                count = len(seen.bodies(pairs[-1].b.user))
                await wait_until(lambda: len(seen.bodies(pairs[-1].b.user)) > count, 60, "a delivery after restart")
                print(f"\nredis {'aof' if private_redis.aof else 'empty'} restart: /healthz ok after "
                      f"{healthy_after:.2f} s, next delivery after {time.monotonic() - t0:.2f} s "
                      f"({sent_before} messages acknowledged before the restart)")
            await asyncio.sleep(1.0)
            await _finish(pairs, seen, stop, work, all_received, receipts)
            if not private_redis.aof:
                assert server.chat.metrics.group_recreated.get() >= 1
        finally:
            stop.set()
            all_received.set()
            await _stop_all(clients)
            await server.stop()


# --- d. A slow consumer is cut off; the others are not slowed ---------------------------------

def _sink_of(server: Any, user: str) -> Any:
    listeners = [l for l in server.chat.hub.listeners() if l.user == user]
    return listeners[0].sink if listeners else None


async def test_slow_consumer_is_cut_off_while_others_are_served(make_server: Any) -> None:
    """Bob's WebSocket stops reading (a 4 KiB receive buffer, and the client library's own
    queue full). While his send queue holds more than half its bound, Carol and Alice keep
    exchanging messages, every one delivered; once it passes ``ws_send_queue_bytes`` the
    server closes Bob with 4008, and Carol's deliveries go on. Bound: 64 KiB in ``make test``,
    the default 1 MiB in ``make soak``."""
    bound = size(64 * 1024, 1024 * 1024)
    server = await make_server(ws_send_queue_bytes=bound, rate_per_s=1e6, rate_burst=10 ** 6)
    seen = Seen()
    big = "x" * 4000  # the longest body allowed
    async with aiohttp.ClientSession() as session:
        alice = client(server.url, "alice", "websocket", seen, session)
        carol = client(server.url, "carol", "websocket", seen, session)
        bob = client(server.url, "bob", "websocket", seen, session)
        for c in (alice, carol, bob):
            await c.register()
        await bob.login()
        for c in (alice, carol):
            await c.start()
        await wait_until(lambda: carol.state.value == "connected" and alice.state.value == "connected", 30)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        slow = await websockets.connect("ws" + server.url[len("http"):] + "/ws", sock=sock, compression=None,
                                        max_size=2 ** 20, max_queue=4)
        await slow.send(json.dumps({"type": "auth", "token": bob.token}))
        await slow.send(json.dumps({"type": "resume", "after": None}))
        await wait_until(lambda: _sink_of(server, "bob") is not None, 30, "bob's subscription")
        sink = _sink_of(server, "bob")

        latencies: list[float] = []
        n_carol = 0

        async def exchange(count: int) -> None:
            """*count* messages alice -> carol, each waited for (generously) before the next."""
            nonlocal n_carol
            for _ in range(count):
                body = f"to carol {n_carol}"
                n_carol += 1
                t0 = time.monotonic()
                await alice.send(body, to="carol")
                await wait_until(lambda: seen.bodies("carol")[-1:] == [body], 30, f"carol's {body!r}")
                latencies.append(seen.times["carol"][-1] - t0)

        # 1. Fill Bob's queue to half its bound (one send in flight: never past it).
        to_bob = 0
        deadline = time.monotonic() + 120
        while sink.buffered() < bound // 2:
            assert time.monotonic() < deadline, f"bob's queue stayed at {sink.buffered()} bytes"
            assert not sink.closed, "closed before reaching half the bound"
            await alice.send(big, to="bob")
            to_bob += 1
        # 2. Bob is stuck past half his bound: the others are served meanwhile.
        await exchange(size(20, 50))
        assert not sink.closed and server.chat.metrics.slow_consumers.get() == 0, "bob was cut off too early"
        # 3. Past the bound: 4008.
        while server.chat.metrics.slow_consumers.get() == 0:
            assert time.monotonic() < deadline, f"no slow-consumer close after {to_bob} messages"
            await alice.send(big, to="bob")
            to_bob += 1
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 30)
        assert slow.close_code == 4008
        # 4. The others go on.
        await exchange(size(20, 50))
        assert seen.bodies("carol") == [f"to carol {i}" for i in range(n_carol)]
        latencies.sort()
        print(f"\nslow consumer: cut off after {to_bob} messages of 4 kB (bound {bound} bytes); "
              f"carol's {len(latencies)} deliveries meanwhile: median {latencies[len(latencies) // 2] * 1000:.0f} ms, "
              f"max {latencies[-1] * 1000:.0f} ms")
        # Generous (a loaded two-core machine): a server that waited for Bob would hold Carol's
        # messages until Bob's cut-off, i.e. for ever in step 2 (its wait_until fails at 30 s).
        assert latencies[-1] < 10.0
        await _stop_all([alice, carol, bob])


# --- e. A bystander beside senders at their rate limits ---------------------------------------

#: Bystander pairs (each two users taking turns to write to each other every 0.4 s: a light
#: writer's pace, 2.5 messages/s per pair), for enough samples that the p99 is not the maximum.
BYSTANDER_PAIRS = 5
#: The bystanders' end-to-end p99 (its send call until its friend has the message, through any
#: 429 and its retry) that admission control keeps it under; measured in docs/server.md
#: "Storms and faults" (small and soak size, with and without admission).
BYSTANDER_P99_BOUND_S = 3.0
#: The senders' per-user rate limit, and their rate: 100 of them offer 5,000 messages/s, past
#: what the server delivers on one core of the test machine.
FLOOD_RATE = 50.0


async def _flood(url: str, token: str, to: str, rate: float, stop: asyncio.Event, counts: dict[str, int],
                 session: aiohttp.ClientSession, rng: random.Random) -> None:
    """One sender over a raw WebSocket: a send every 1/rate seconds (its rate limit), never
    waiting for an answer; counts acks and refusals."""
    ws = await session.ws_connect("ws" + url[len("http"):] + "/ws")
    await ws.send_json({"type": "auth", "token": token})
    await ws.send_json({"type": "resume", "after": None})

    async def read() -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            kind = json.loads(msg.data)
            key = kind.get("error", kind["type"])
            counts[key] = counts.get(key, 0) + 1

    reader = asyncio.create_task(read())
    loop = asyncio.get_running_loop()
    next_at = loop.time() + rng.uniform(0, 1 / rate)
    try:
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += 1 / rate
            await ws.send_json({"type": "send", "to": to, "body": "flood " * 20, "client_msg_id": uuid.uuid4().hex})
            counts["sent"] = counts.get("sent", 0) + 1
    finally:
        await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def bystander_p99(redis_url: str | None, tmp_path: Path, admission: bool, senders: int,
                        seconds: float, rate: float = 20.0,
                        light_share: float = 0.25) -> tuple[float, float, dict[str, int], int]:
    """*senders* users each sending at their rate limit (*rate*, burst twice that) to the next
    one, and ``BYSTANDER_PAIRS`` pairs of bystanders taking turns to write to each other every 0.4 s
    for *seconds*; the server in its own process. Returns the bystanders' end-to-end p99 and median
    (seconds), the senders' answer counts and the number of samples."""
    prefix = f"chatlab-test-{uuid.uuid4().hex[:12]}"
    sp = ServerProcess(tmp_path / f"srv-{admission}", redis_url=redis_url, redis_prefix=prefix, start_timeout_s=60,
                       parent_death_signal=signal.SIGKILL,
                       settings={"admission": admission, "rate_per_s": rate, "rate_burst": int(2 * rate),
                                 "admission_light_share": light_share})
    await sp.start()
    seen = Seen()
    stop = asyncio.Event()
    counts: dict[str, int] = {}
    rng = random.Random(100)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            names = [f"f{i}" for i in range(senders)]
            floods = [ChatClient(sp.url, u, PASSWORD, session=session) for u in names]
            for c in floods:
                await c.register()
            tokens = [await c.login() for c in floods]
            pairs = [(client(sp.url, f"bystander{k}", "websocket", seen, session, send_timeout=30),
                      client(sp.url, f"friend{k}", "websocket", seen, session, send_timeout=30))
                     for k in range(BYSTANDER_PAIRS)]
            bystanders = [c for pair in pairs for c in pair]
            for c in bystanders:
                await c.register()
                await c.start()
            await wait_until(lambda: all(c.state.value == "connected" for c in bystanders), 30)
            tasks = [asyncio.create_task(_flood(sp.url, t, names[(i + 1) % senders], rate, stop, counts, session, rng))
                     for i, t in enumerate(tokens)]
            await asyncio.sleep(2.0)  # the flood is on
            latencies: list[float] = []
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds

            async def chat(by: ChatClient, friend: ChatClient) -> None:
                turn = 0
                while loop.time() < end:
                    tick = loop.time()
                    me, peer = (by, friend) if turn % 2 == 0 else (friend, by)
                    body = f"{me.user} {turn}"
                    t0 = time.monotonic()
                    await me.send(body, to=peer.user)
                    await wait_until(lambda: body in seen.bodies(peer.user), 60, f"{peer.user} gets {body!r}")
                    latencies.append(seen.times[peer.user][seen.bodies(peer.user).index(body)] - t0)
                    turn += 1
                    await asyncio.sleep(max(0.0, tick + 0.4 - loop.time()))

            await asyncio.gather(*(chat(by, friend) for by, friend in pairs))
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            counts["bystander_refused"] = sum(c.refusals for c in bystanders)
            await _stop_all(bystanders)
            for c in floods:
                await c.stop()
    finally:
        stop.set()
        await sp.stop()
        if redis_url is not None:
            r = connect(redis_url)
            await delete_prefix(r, prefix)
            await r.aclose()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return p99, latencies[len(latencies) // 2], counts, len(latencies)


async def test_bystander_stays_served_beside_senders_at_their_rate_limits(redis_url: str | None,
                                                                          tmp_path: Path) -> None:
    """With admission control on, the bystanders' messages reach their friends with p99 under
    BYSTANDER_P99_BOUND_S while 100 senders (20 in ``make test``) push at their rate limits
    (FLOOD_RATE each); the senders, not the bystanders, absorb the refusals. (With admission
    off the same load gave a p99 of 16.6 s at soak size: docs/server.md.)"""
    senders, seconds = size(20, 100), size(6, 30)
    p99, median, counts, n = await bystander_p99(redis_url, tmp_path, True, senders, seconds, FLOOD_RATE)
    print(f"\nbystander, admission on, {senders} senders: p99 {p99 * 1000:.0f} ms, median {median * 1000:.0f} ms "
          f"over {n} messages; senders' answers {counts}")
    assert p99 < BYSTANDER_P99_BOUND_S, f"p99 {p99:.2f} s"
