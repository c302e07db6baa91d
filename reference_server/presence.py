"""Presence in Redis, by heartbeats and scores; no keyspace notifications.

Keys (``P`` = the configured prefix):

* ``P:presence:<user>`` sorted set: one member per live connection (a WebSocket, or
  ``t:<token>`` for a polling client), score = when it expires (ms). A connection
  refreshes its score every heartbeat; a poll refreshes it too.
* ``P:presence:online`` sorted set: users announced online, score = their latest expiry.
  Being in it is the announced state; events are emitted only when it changes.

A user is online while at least one of their connections is unexpired, so one device
disconnecting never clears another device's presence. A closed WebSocket removes its
member at once; a client that vanished expires after the TTL, found by a periodic
sweep (a crashed node's presence can stay stale up to one TTL, REFERENCES.md).
Defaults are Centrifugo's: 60 s TTL, 25 s refresh.

Transitions of one user are serialised by an asyncio lock per user, which is enough for
one server process (the SQLite store is per process anyway). Several processes would
need the check-and-set in a Lua script.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Awaitable, Callable

import redis.asyncio as aioredis

from chatcore import PresenceState

#: Called with (user, "online"|"offline", at_ms) when the announced state changes.
Announce = Callable[[str, str, int], Awaitable[None]]


class Presence:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: float, heartbeat_s: float,
                 announce: Announce) -> None:
        self.redis = redis
        self._p = f"{prefix}:presence"
        self._online = f"{prefix}:presence:online"
        self.ttl_ms = int(ttl_s * 1000)
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self._announce = announce
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._written: dict[tuple[str, str], int] = {}  # (user, conn) -> expiry last written

    def _key(self, user: str) -> str:
        return f"{self._p}:{user}"

    async def touch(self, user: str, conn_id: str, extra_ms: int = 0) -> None:
        """Connection *conn_id* of *user* is alive for another TTL (+ *extra_ms*, e.g. a
        long poll's hold). Cheap when called often: Redis is written at most once per
        heartbeat per connection unless the expiry moves further than that."""
        now = _now_ms()
        expires = now + self.ttl_ms + extra_ms
        last = self._written.get((user, conn_id))
        if last is not None and expires - last < self.heartbeat_ms and last > now:
            return
        async with self._locks[user]:
            await self.redis.zadd(self._key(user), {conn_id: expires})
            was = await self.redis.zscore(self._online, user)
            await self.redis.zadd(self._online, {user: expires}, gt=True)  # GT still adds a new member
            if was is None:
                await self._announce(user, PresenceState.ONLINE.value, now)
        self._written[(user, conn_id)] = expires

    async def leave(self, user: str, conn_id: str) -> None:
        """Connection *conn_id* closed; the user goes offline if it was the last one."""
        self._written.pop((user, conn_id), None)
        async with self._locks[user]:
            await self.redis.zrem(self._key(user), conn_id)
            await self._settle(user)

    async def _settle(self, user: str) -> None:
        """Drop expired connections; announce offline if none is left (lock held)."""
        now = _now_ms()
        key = self._key(user)
        await self.redis.zremrangebyscore(key, "-inf", now)
        newest = await self.redis.zrange(key, -1, -1, withscores=True)
        if newest:
            await self.redis.zadd(self._online, {user: newest[0][1]})
            return
        if await self.redis.zrem(self._online, user):
            await self._announce(user, PresenceState.OFFLINE.value, now)

    async def sweep(self) -> int:
        """Mark offline every announced user whose connections all expired. Returns how
        many users were checked."""
        due = await self.redis.zrangebyscore(self._online, "-inf", _now_ms())
        for user in due:
            async with self._locks[user]:
                await self._settle(user)
        stale = [k for k, exp in self._written.items() if exp < _now_ms()]
        for k in stale:
            self._written.pop(k, None)
        return len(due)

    async def connections(self, user: str) -> int:
        """Unexpired connections of *user* (all devices)."""
        return int(await self.redis.zcount(self._key(user), _now_ms(), "+inf"))

    async def status(self, users: list[str]) -> dict[str, str]:
        """``{user: "online"|"offline"}``: online iff an unexpired connection exists."""
        now = _now_ms()
        out = {}
        for user in users:
            alive = await self.redis.zcount(self._key(user), now, "+inf")
            out[user] = PresenceState.ONLINE.value if alive else PresenceState.OFFLINE.value
        return out


def _now_ms() -> int:
    return int(time.time() * 1000)
