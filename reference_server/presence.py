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
sweep (a crashed node's presence can stay stale up to one TTL). Defaults are
Centrifugo's: 60 s TTL, 25 s refresh.

Heartbeats of this process's WebSockets are sent by one loop (:meth:`refresh_local`),
not a task per connection: each connection is due one heartbeat after its last
refresh, and its first one comes after a random fraction of the interval (as Discord
delays its first heartbeat), so a reconnect storm does not become a heartbeat storm
every interval after. The due connections go to Redis in one pipeline.

Each transition (a connection arrives; a connection leaves or expires) is one Lua script,
so the check and the change happen at once in Redis: correct with several server
processes sharing the keys, not only with one. (The embedded fakeredis runs Lua through
``lupa``.) Every time comes from the injected :class:`~reference_server.clock.Clock`.
"""

from __future__ import annotations

import random
from typing import Awaitable, Callable, cast

import redis.asyncio as aioredis

from chatcore import PresenceState

from .clock import SYSTEM, Clock

#: Called with (user, "online"|"offline", at_ms) when the announced state changes.
Announce = Callable[[str, str, int], Awaitable[None]]

#: A connection is alive until ARGV[2]: returns 1 when the user was not announced online.
#: KEYS: the user's set, the online set. ARGV: connection, expiry (ms), user.
_ARRIVE = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local was = redis.call('ZSCORE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[3])
if was then return 0 end
return 1
"""

#: Drop the connection ARGV[3] (if any) and every expired one; returns 1 when the user has
#: none left and was announced online (now it is not). KEYS as above. ARGV: now (ms), user,
#: connection or ''.
_SETTLE = """
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[1], ARGV[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #newest > 0 then
  redis.call('ZADD', KEYS[2], newest[2], ARGV[2])
  return 0
end
return redis.call('ZREM', KEYS[2], ARGV[2])
"""


class Presence:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: float, heartbeat_s: float,
                 announce: Announce, clock: Clock = SYSTEM, rng: random.Random | None = None) -> None:
        self.redis = redis
        self._p = f"{prefix}:presence"
        self._online = f"{prefix}:presence:online"
        self.ttl_ms = int(ttl_s * 1000)
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self._announce = announce
        self.clock = clock
        self._rng = rng or random.Random()
        self._arrive = redis.register_script(_ARRIVE)
        self._settle_script = redis.register_script(_SETTLE)
        self._written: dict[tuple[str, str], int] = {}  # (user, conn) -> expiry last written
        #: This process's WebSockets: conn_id -> (user, when its next heartbeat is due, ms).
        self._local: dict[str, tuple[str, int]] = {}

    def _key(self, user: str) -> str:
        return f"{self._p}:{user}"

    async def touch(self, user: str, conn_id: str, extra_ms: int = 0) -> None:
        """Connection *conn_id* of *user* is alive for another TTL (+ *extra_ms*, e.g. a
        long poll's hold). Cheap when called often: Redis is written at most once per
        heartbeat per connection unless the expiry moves further than that."""
        now = self.clock.wall_ms()
        expires = now + self.ttl_ms + extra_ms
        last = self._written.get((user, conn_id))
        if last is not None and expires - last < self.heartbeat_ms and last > now:
            return
        if await self._arrive(keys=[self._key(user), self._online], args=[conn_id, expires, user]):
            await self._announce(user, PresenceState.ONLINE.value, now)
        self._written[(user, conn_id)] = expires

    async def release(self, user: str, conn_id: str) -> None:
        """A long poll of *conn_id* ended early (its client went away): the hold it asked for
        no longer keeps the connection alive; it expires a TTL from now, like after any poll."""
        expires = self.clock.wall_ms() + self.ttl_ms
        await self.redis.zadd(self._key(user), {conn_id: expires}, xx=True)
        self._written[(user, conn_id)] = expires
        await self._settle(user)  # the online set's score follows the newest connection

    async def join(self, user: str, conn_id: str) -> None:
        """A WebSocket of *user* opened here: online now, kept alive by :meth:`refresh_local`
        until :meth:`leave`."""
        await self.touch(user, conn_id)
        self._written.pop((user, conn_id), None)  # its heartbeats come from _local, not from touches
        first = int(self.heartbeat_ms * self._rng.uniform(0.5, 1.0))
        self._local[conn_id] = (user, self.clock.wall_ms() + first)

    async def leave(self, user: str, conn_id: str) -> None:
        """Connection *conn_id* closed; the user goes offline if it was the last one."""
        self._local.pop(conn_id, None)
        self._written.pop((user, conn_id), None)
        await self._settle(user, conn_id)

    async def refresh_local(self) -> int:
        """One heartbeat for each of this process's WebSockets that is due; returns how many."""
        now = self.clock.wall_ms()
        due = [(c, u) for c, (u, at) in self._local.items() if at <= now]
        if not due:
            return 0
        expires = now + self.ttl_ms
        # XX: a heartbeat only extends what is there. A connection that closed (or a user
        # announced offline) while this pipeline was on its way is not brought back.
        async with self.redis.pipeline(transaction=False) as p:
            for conn_id, user in due:
                p.zadd(self._key(user), {conn_id: expires}, xx=True)
                p.zadd(self._online, {user: expires}, xx=True, gt=True)
            await p.execute()
        nxt = now + self.heartbeat_ms
        for conn_id, user in due:
            if conn_id in self._local:  # not closed meanwhile
                self._local[conn_id] = (user, nxt)
        return len(due)

    async def _settle(self, user: str, conn_id: str = "") -> None:
        """Drop *conn_id* and the expired connections; announce offline if none is left."""
        now = self.clock.wall_ms()
        if await self._settle_script(keys=[self._key(user), self._online], args=[now, user, conn_id]):
            await self._announce(user, PresenceState.OFFLINE.value, now)

    async def sweep(self) -> int:
        """Mark offline every announced user whose connections all expired. Returns how
        many users were checked."""
        now = self.clock.wall_ms()
        due = cast("list[str]", await self.redis.zrangebyscore(self._online, "-inf", now))
        for user in due:
            await self._settle(user)
        stale = [k for k, exp in self._written.items() if exp < now]
        for k in stale:
            self._written.pop(k, None)
        return len(due)

    async def connections(self, user: str) -> int:
        """Unexpired connections of *user* (all devices)."""
        return int(await self.redis.zcount(self._key(user), self.clock.wall_ms(), "+inf"))

    async def status(self, users: list[str]) -> dict[str, str]:
        """``{user: "online"|"offline"}``: online iff an unexpired connection exists."""
        now = self.clock.wall_ms()
        async with self.redis.pipeline(transaction=False) as p:
            for user in users:
                p.zcount(self._key(user), now, "+inf")
            counts = await p.execute()
        return {user: (PresenceState.ONLINE.value if alive else PresenceState.OFFLINE.value)
                for user, alive in zip(users, counts)}
