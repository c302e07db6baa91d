"""Routing committed events to the server that holds the recipient's connection.

One server process (the default): everything is local, the hub gets every event.

A cluster (``server_id`` set; several processes behind a sticky load balancer, sharing
Redis and PostgreSQL): any process may fan out a queue entry, but the recipient's
WebSocket or held long poll is on one particular process. The *session registry* says
which: it is the presence set of each user (``<prefix>:presence:<user>``), whose members
name the connection and the server holding it (``ws:<server>:<id>``, ``t:<server>:<id>``)
and whose scores are their expiry, refreshed by heartbeat. After a fan-out commits, the
router pushes the events to its own hub and, for each recipient, looks up the other
servers holding a connection of that user and appends the events to each one's push
stream (``<prefix>:push:<server>``, one XADD per server per batch, in commit order). Every
server reads its own stream and hands what it gets to its hub.

A server that dies leaves registry entries until their TTL passes; events pushed to it
meanwhile are read by nobody. Nothing is lost: every event is in the recipient's log, and
the client, reconnecting through the load balancer to another server, resumes from its
cursor. (This is the ``queue`` delivery design of the crash model; its ``registry_ttl_s``
is this TTL.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from .clock import SYSTEM, Clock
from .hub import Hub
from .tasks import sleep_unless

log = logging.getLogger(__name__)

Events = dict[str, list[tuple[int, bytes]]]

#: Entries kept in each server's push stream (older ones are trimmed; they are in the logs).
PUSH_STREAM_LEN = 10_000


def encode_events(events: list[tuple[int, bytes]]) -> str:
    """One stream field: a line per event, ``<seq> <json>`` (compact JSON has no newline)."""
    return "\n".join(f"{seq} {data.decode('utf-8')}" for seq, data in events)


def decode_events(text: str) -> list[tuple[int, bytes]]:
    out = []
    for line in text.split("\n"):
        seq, _, data = line.partition(" ")
        out.append((int(seq), data.encode("utf-8")))
    return out


class Router:
    """Hands committed events to the connections that hold them (see the module docstring).
    Without *server_id* it is the hub itself. *redis* looks up the registry and appends to
    other servers' streams; *reader*, a connection of its own, blocks reading this one's."""

    def __init__(self, hub: Hub, redis: aioredis.Redis | None = None, prefix: str = "", server_id: str = "",
                 clock: Clock = SYSTEM, reader: aioredis.Redis | None = None) -> None:
        self.hub = hub
        self.redis = redis
        self.reader = reader
        self.prefix = prefix
        self.server_id = server_id
        self.clock = clock
        self.forwarded = 0  # events appended to other servers' push streams
        self.received = 0   # events read from this server's push stream
        self._outgoing: asyncio.Queue[Events] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def clustered(self) -> bool:
        return bool(self.server_id)

    def conn_id(self, kind: str, ident: str) -> str:
        """A connection's name in the session registry: ``<kind>:<server>:<ident>`` in a
        cluster, ``<kind>:<ident>`` on one server."""
        return f"{kind}:{self.server_id}:{ident}" if self.server_id else f"{kind}:{ident}"

    def stream(self, server_id: str) -> str:
        return f"{self.prefix}:push:{server_id}"

    # --- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self.clustered:
            self._stop.clear()
            self._tasks = [asyncio.create_task(self._forwarder(), name="route-forward"),
                           asyncio.create_task(self._reader(), name="route-read")]

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks = []

    # --- out ------------------------------------------------------------------------------
    def publish(self, events: Events) -> None:
        """Push *events* (``{user: [(seq, encoded event), ...]}``, just committed) to this
        process's connections at once, and queue them for the other servers holding a
        connection of the same users (in commit order)."""
        for user, evs in events.items():
            self.hub.publish(user, evs)
        if self.clustered and events:
            self._outgoing.put_nowait(events)

    async def _forwarder(self) -> None:
        assert self.redis is not None
        while not self._stop.is_set():
            events = await self._outgoing.get()
            while not self._outgoing.empty():  # what queued meanwhile goes in the same round trips
                more = self._outgoing.get_nowait()
                for user, evs in more.items():
                    events.setdefault(user, []).extend(evs)
            try:
                await self._forward(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The events are in the logs: the recipients get them at their next resume.
                log.warning("forwarding %d users' events failed", len(events), exc_info=True)

    async def _forward(self, events: Events) -> None:
        assert self.redis is not None
        users = list(events)
        now = self.clock.wall_ms()
        async with self.redis.pipeline(transaction=False) as p:
            for user in users:
                p.zrangebyscore(f"{self.prefix}:presence:{user}", now, "+inf")
            holders: list[Any] = await p.execute()
        by_server: dict[str, dict[Any, Any]] = {}
        for user, members in zip(users, holders):
            for sid in {m.split(":")[1] for m in members if m.count(":") >= 2} - {self.server_id}:
                by_server.setdefault(sid, {})[user] = encode_events(events[user])
        if not by_server:
            return
        async with self.redis.pipeline(transaction=False) as p:
            for sid, fields in by_server.items():
                p.xadd(self.stream(sid), fields, maxlen=PUSH_STREAM_LEN, approximate=True)
            await p.execute()
        self.forwarded += sum(len(events[u]) for fields in by_server.values() for u in fields)

    # --- in ----------------------------------------------------------------------------------
    async def _reader(self) -> None:
        """Read this server's push stream from now on and hand each entry to the hub."""
        assert self.reader is not None
        last = "$"
        failures = 0
        while not self._stop.is_set():
            try:
                reply: Any = await self.reader.xread({self.stream(self.server_id): last}, count=100, block=1000)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.warning("reading the push stream failed", exc_info=failures == 1)
                await sleep_unless(self._stop, min(5.0, 0.1 * 2 ** failures))
                continue
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    for user, text in fields.items():
                        evs = decode_events(text)
                        self.received += len(evs)
                        self.hub.publish(user, evs)
