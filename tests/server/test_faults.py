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
import contextlib
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

from chatcore import TRANSPORTS
from reference_server.client import ChatClient
from reference_server.loadgen.process import ServerProcess, die_with_parent
from reference_server.redis_link import connect

from ..soak import size
from .conftest import delete_prefix, wait_until

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
        pairs, clients = [], []
        try:
            for t in TRANSPORTS:
                a, b = (client(server_process.url, f"{u}_{t}", t, seen, session) for u in ("a", "b"))
                clients += [a, b]
                for c in (a, b):
                    await c.register()
                    await c.start()
                pairs.append(Pair(a, b, seen))
            work = [asyncio.create_task(p.talk(s, r.user, stop, 0.05)) for p in pairs for s, r in
                    ((p.a, p.b), (p.b, p.a))]
            receipts = [asyncio.create_task(p.acknowledge(c, all_received)) for p in pairs for c in (p.a, p.b)]
            downtimes = []
            for k in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 2.0))
                for w in work:
                    assert not w.done() or w.exception() is None, w.exception()
                await server_process.kill()
                t0 = time.monotonic()
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # dead for a while
                await server_process.start()
                downtimes.append(time.monotonic() - t0)
            await asyncio.sleep(1.0)  # some traffic after the last restart
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
            total = sum(sum(p.sent.values()) for p in pairs)
            print(f"\nsigkill: {kills} kills, {total} messages acknowledged and delivered once; "
                  f"down (kill to healthy) {min(downtimes):.2f}-{max(downtimes):.2f} s")
            assert all(min(p.sent.values()) > 0 for p in pairs)
        finally:
            stop.set()
            all_received.set()
            await _stop_all(clients)
