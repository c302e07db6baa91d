"""The cluster of issue 12 with real parts: two server processes behind a real HAProxy
(reference_server/cluster), sharing the real Redis (a key prefix of their own) and a
PostgreSQL database made for the test. Clients use the one HAProxy URL and stick to their
server by its cookie (``ChatClient(route_cookie="SERVERID")``).

* A message from a user on s1 reaches a user on s2, on every transport.
* SIGKILL s1 while messages flow both ways: its clients move to s2 through HAProxy, and
  every acknowledged message arrives exactly once (after s1's restart queues the outbox
  rows it had taken, as the crash validation does).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatcore import TRANSPORTS
from reference_server.client import ChatClient
from reference_server.cluster import ClusterSpec, LocalCluster
from reference_server.redis_link import connect

from .conftest import PG_ADMIN_URL, REDIS_URL, _pg_admin, delete_prefix, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    name = f"chatlab_test_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    prefix = f"chatlab-test-{uuid.uuid4().hex[:12]}"
    spec = ClusterSpec(servers=2, redis_url=REDIS_URL, db_url=PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name,
                       work_dir=tmp_path / "cluster", profile="loadtest", redis_prefix=prefix,
                       check_inter_ms=500)
    c = LocalCluster(spec)
    try:
        await c.start()
        yield c
    finally:
        await c.stop()
        client = connect(REDIS_URL)
        await delete_prefix(client, prefix)
        await client.aclose()
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Seen:
    """Every event each client's on_event got (after the client's own de-duplication)."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}

    def callback(self, user: str) -> Any:
        self.events[user] = []
        return lambda event, t: self.events[user].append(event)

    def bodies(self, user: str) -> list[str]:
        return [e["body"] for e in self.events[user] if e.get("type") == "message"]


async def _client(cluster: LocalCluster, user: str, transport: str, server: str, seen: Seen,
                  session: aiohttp.ClientSession) -> ChatClient:
    c = ChatClient(cluster.url, user, "pw", transport=transport, session=session, route_cookie="SERVERID",
                   backoff_base=0.2, backoff_cap=1.0, poll_interval=0.2, longpoll_timeout=30,
                   on_event=seen.callback(user))
    c.route = server  # pin the first request; HAProxy keeps it there while the server lives
    await c.register()
    await c.start()
    return c


async def _receiving(c: ChatClient) -> None:
    """Until *c* receives: a WebSocket resumed, a poll answered; a long poll counts as
    connected only once answered, so give its first request time to be held."""
    if c.transport == "long_polling":
        await asyncio.sleep(0.5)
    else:
        await wait_until(lambda: c.state.value == "connected", 10, f"{c.user} connected")


async def test_a_message_crosses_servers_on_every_transport(cluster: LocalCluster) -> None:
    seen = Seen()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        clients = []
        try:
            for t in TRANSPORTS:
                alice = await _client(cluster, f"alice_{t}", t, "s1", seen, session)
                bob = await _client(cluster, f"bob_{t}", t, "s2", seen, session)
                clients += [alice, bob]
                await _receiving(bob)
                # Within 5 s, well under the 30 s hold: a held long poll is woken across servers.
                await alice.send(f"hello over {t}", to=bob.user)
                await wait_until(lambda: seen.bodies(bob.user) == [f"hello over {t}"], 5, f"{t} delivery")
                await bob.send(f"and back over {t}", to=alice.user)
                await wait_until(lambda: seen.bodies(alice.user) == [f"and back over {t}"], 5, f"{t} reply")
                assert (alice.route, bob.route) == ("s1", "s2"), "each stayed on its own server"
        finally:
            await asyncio.gather(*(c.stop() for c in clients))
    states = await cluster.haproxy.server_states() if cluster.haproxy else {}
    assert states == {"s1": "UP", "s2": "UP"}


async def test_killing_a_server_moves_its_clients_and_loses_nothing(cluster: LocalCluster) -> None:
    seen = Seen()
    acked: Counter[str] = Counter()
    per_sender = 30
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        clients: list[ChatClient] = []
        try:
            pairs = []
            for t in TRANSPORTS:  # on every transport, one user on the victim s1 and one on s2
                victim = await _client(cluster, f"v_{t}", t, "s1", seen, session)
                other = await _client(cluster, f"o_{t}", t, "s2", seen, session)
                clients += [victim, other]
                pairs.append((victim, other))
            for c in clients:
                await _receiving(c)

            async def talk(sender: ChatClient, to: str) -> None:
                for i in range(per_sender):
                    await sender.send(f"{sender.user}#{i}", to=to)
                    acked[to] += 1
                    await asyncio.sleep(0.05)

            talking = [asyncio.create_task(talk(v, o.user)) for v, o in pairs] + \
                      [asyncio.create_task(talk(o, v.user)) for v, o in pairs]
            await asyncio.sleep(0.6)
            await cluster.kill(0)  # SIGKILL s1 mid-conversation
            await wait_until(lambda: all(v.route == "s2" and v.state.value == "connected" for v, _ in pairs),
                             15, "every client of s1 moved to s2")
            await asyncio.gather(*talking)  # every send acknowledged (resent after the move if need be)
            await cluster.restart(0)        # queues the outbox rows s1 had taken when it died
            for v, o in pairs:
                for c, peer in ((v, o), (o, v)):
                    await wait_until(lambda: len(seen.bodies(c.user)) >= per_sender, 20,
                                     f"{c.user} got all of {peer.user}'s messages; has {len(seen.bodies(c.user))}")
            for v, o in pairs:
                for c, peer in ((v, o), (o, v)):
                    assert sorted(seen.bodies(c.user)) == sorted(f"{peer.user}#{i}" for i in range(per_sender)), \
                        "each acknowledged message exactly once"
            assert sum(acked.values()) == 2 * len(pairs) * per_sender
            assert all(o.route == "s2" for _, o in pairs), "the survivors' clients never moved"
        finally:
            await asyncio.gather(*(c.stop() for c in clients))
