"""The ordered delivery queue: one Redis Stream, read by the delivery service through a
consumer group.

* ``XADD`` appends one entry per *batch* of items (the items one group commit made
  durable, in commit order): the queue costs a few Redis commands per batch, not per
  message.
* ``XREADGROUP COUNT n ... >`` hands up to *n* new entries to a consumer (without BLOCK:
  see delivery.py); an entry stays *pending* until ``XACK``, which the delivery service
  sends only after the entry's fan-out is committed and pushed to the live connections
  (in the same round trip as its next XREADGROUP). Acknowledged entries are deleted in
  bulk by ``XTRIM MINID`` every reclaim pass, not one XDEL per batch.
* ``XAUTOCLAIM`` takes over entries pending longer than the visibility timeout (a
  consumer that died, or a fan-out that failed), and the entry's delivery count tells a
  poison message from an unlucky one: past ``max_deliveries`` its failing items move to
  a dead-letter stream and the entry is acknowledged.
* The group is created at id ``0``, never ``$``: ``$`` would silently skip every entry
  added before the group existed. A Redis that lost the group (restarted empty)
  answers NOGROUP; :class:`GroupLost` tells the delivery service to create it again and
  to queue the outbox once more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .store import Item

GROUP = "delivery"


class GroupLost(Exception):
    """Redis no longer has the stream's consumer group (it restarted without its data)."""


@dataclass(frozen=True)
class Entry:
    """One queue entry: its stream id, its items in commit order, and how many times it
    has been handed out (1 on first delivery)."""

    entry_id: str
    items: list[Item]
    deliveries: int = 1

    @property
    def queued_at_ms(self) -> int:
        """When it was appended (the stream id's time part)."""
        return int(self.entry_id.split("-")[0])


def encode_items(items: list[Item]) -> bytes:
    return orjson.dumps([[i.outbox_id, i.body] for i in items])


def decode_items(text: str | bytes) -> list[Item]:
    return [Item(o, b) for o, b in orjson.loads(text)]


def _entry(entry_id: str, fields: dict[str, str], deliveries: int = 1) -> Entry:
    return Entry(entry_id, decode_items(fields["items"]), deliveries)


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply (``[[stream, [[id, fields], ...]]]`` or None)."""
    return [_entry(eid, fields) for _, entries in (reply or []) for eid, fields in entries]


def _lost(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc)


class DeliveryQueue:
    """A Redis Stream plus consumer group. Keys: ``<prefix>:deliveries`` and
    ``<prefix>:deliveries:dead``."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.stream = f"{prefix}:deliveries"
        self.dead = f"{prefix}:deliveries:dead"

    async def ensure_group(self, at: str = "0") -> None:
        """Create the consumer group (and the stream) unless it exists: at id 0, so that no
        entry already in the stream is skipped. ``at="$"`` (the stream's end) is only for a
        caller that queues every undelivered item again right after (a lost group's
        recovery: the entries written before it would otherwise come first, out of order)."""
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id=at, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def publish(self, items: list[Item]) -> str:
        """Append one entry holding *items*; returns its stream id."""
        return str(await self.redis.xadd(self.stream, {"items": encode_items(items)}))

    async def read(self, consumer: str, count: int, own_pending: bool = False) -> list[Entry]:
        """Up to *count* new entries for *consumer*, without waiting (the delivery service
        waits on its own wake-up instead, see delivery.py); with *own_pending*, the entries
        already handed to *consumer* and not acknowledged (after a read whose reply was lost).
        Raises :class:`GroupLost`."""
        try:
            reply: Any = await self.redis.xreadgroup(GROUP, consumer, {self.stream: "0" if own_pending else ">"},
                                                     count=count)
        except ResponseError as exc:
            if _lost(exc):
                raise GroupLost(str(exc)) from None
            raise
        return _entries(reply)

    async def ack(self, entry_ids: list[str]) -> None:
        """Acknowledge: the items are in SQLite now. The entries stay in the stream until
        :meth:`trim` (one command per batch instead of two)."""
        if entry_ids:
            await self.redis.xack(self.stream, GROUP, *entry_ids)

    async def ack_and_read(self, entry_ids: list[str], consumer: str, count: int,
                           own_pending: bool = False) -> list[Entry]:
        """:meth:`ack` the previous batch and :meth:`read` the next in one round trip."""
        if not entry_ids:
            return await self.read(consumer, count, own_pending)
        try:
            async with self.redis.pipeline(transaction=False) as p:
                p.xack(self.stream, GROUP, *entry_ids)
                p.xreadgroup(GROUP, consumer, {self.stream: "0" if own_pending else ">"}, count=count)
                _, reply = await p.execute()
        except ResponseError as exc:
            if _lost(exc):
                raise GroupLost(str(exc)) from None
            raise
        return _entries(reply)

    async def trim(self) -> int:
        """Delete the entries every consumer is done with: everything before the oldest
        pending entry, or, with none pending, up to the group's last delivered entry.
        Returns how many were deleted."""
        try:
            groups = await self.redis.xinfo_groups(self.stream)
            pending = await self.redis.xpending(self.stream, GROUP)
        except ResponseError as exc:
            if _lost(exc) or "no such key" in str(exc).lower():
                return 0
            raise
        group = next((g for g in groups if g.get("name") == GROUP), None)
        if group is None:
            return 0
        if pending.get("pending"):
            minid = pending["min"]  # kept: XTRIM MINID deletes ids below it
        else:
            ms, seq = str(group["last-delivered-id"]).split("-")
            minid = f"{ms}-{int(seq) + 1}"  # everything delivered and acknowledged goes
        return int(await self.redis.xtrim(self.stream, minid=minid, approximate=False))

    async def claim_idle(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries pending longer than *min_idle_ms*, with their delivery counts."""
        try:
            reply = await self.redis.xautoclaim(self.stream, GROUP, consumer, min_idle_time=min_idle_ms,
                                                start_id="0-0", count=count)
        except ResponseError as exc:
            if _lost(exc):
                raise GroupLost(str(exc)) from None
            raise
        claimed = [(eid, f) for eid, f in reply[1] if f]  # deleted entries come back empty
        gone = [eid for eid, f in reply[1] if not f]
        if gone:
            await self.redis.xack(self.stream, GROUP, *gone)
        if not claimed:
            return []
        pending = await self.redis.xpending_range(self.stream, GROUP, min=claimed[0][0],
                                                  max=claimed[-1][0], count=len(claimed) * 2)
        counts = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        return [_entry(eid, f, counts.get(eid, 1)) for eid, f in claimed]

    async def dead_letter(self, entry: Entry, items: list[tuple[Item, str]]) -> None:
        """Move the poison *items* of *entry* to the dead-letter stream, then acknowledge it."""
        async with self.redis.pipeline(transaction=False) as p:
            for item, reason in items:
                p.xadd(self.dead, {"item": json.dumps(item.body), "outbox": str(item.outbox_id), "entry": entry.entry_id,
                                   "deliveries": str(entry.deliveries), "reason": reason[:200]})
            await p.execute()
        await self.ack([entry.entry_id])

    async def lag(self) -> int:
        """Entries not yet acknowledged: pending (handed out) plus not yet handed out."""
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return 0
        group = next((g for g in groups if g.get("name") == GROUP), None)
        if group is None:
            return int(await self.redis.xlen(self.stream))
        lag = group.get("lag")
        if lag is None:  # Redis cannot tell after some deletions: count what follows last-delivered-id
            after: Any = await self.redis.xrange(self.stream, min=f"({group['last-delivered-id']}", max="+")
            lag = len(after)
        return int(group.get("pending", 0)) + int(lag)

    async def last_delivered(self) -> str | None:
        """The group's last-delivered-id: every entry up to it has been handed to some
        consumer (None: no stream or group yet)."""
        try:
            groups: list[dict[str, Any]] = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return None
        group = next((g for g in groups if g.get("name") == GROUP), None)
        return None if group is None else str(group["last-delivered-id"])

    async def has_group(self) -> bool:
        """Whether Redis still has the consumer group (for /healthz)."""
        try:
            groups: list[dict[str, Any]] = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return False  # no such key: the stream (and its group) is gone
        return any(g.get("name") == GROUP for g in groups)
