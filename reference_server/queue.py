"""The ordered delivery queue: one Redis Stream, read by the delivery service through a
consumer group.

* ``XADD`` appends an item (a JSON object naming what to fan out) after it is committed
  to SQLite.
* ``XREADGROUP ... >`` hands new entries to a consumer (without BLOCK: see delivery.py); the entry stays *pending* until
  ``XACK``, which the delivery service sends only after the fan-out is committed and
  pushed to the live connections.
* ``XAUTOCLAIM`` takes over entries pending longer than the visibility timeout (a
  consumer that died, or a push that failed), and the entry's delivery count tells a
  poison message from an unlucky one: past ``max_deliveries`` it moves to a
  dead-letter stream and is acknowledged.
* The group is created at id ``0``, never ``$``: ``$`` would silently skip every entry
  added before the group existed (REFERENCES.md, "Redis Streams as the queue").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

GROUP = "delivery"


@dataclass(frozen=True)
class Entry:
    """One queue entry: its stream id, the outbox row it came from (or None), the item,
    and how many times it has been handed out (1 on first delivery)."""

    entry_id: str
    outbox_id: int | None
    item: dict[str, Any]
    deliveries: int = 1


def _entry(entry_id: str, fields: dict[str, str], deliveries: int = 1) -> Entry:
    outbox = fields.get("outbox", "")
    return Entry(entry_id, int(outbox) if outbox else None, json.loads(fields["item"]), deliveries)


class DeliveryQueue:
    """A Redis Stream plus consumer group. Keys: ``<prefix>:deliveries`` and
    ``<prefix>:deliveries:dead``."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.stream = f"{prefix}:deliveries"
        self.dead = f"{prefix}:deliveries:dead"

    async def ensure_group(self) -> None:
        """Create the consumer group at id 0 (and the stream) unless it exists."""
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def publish(self, item: dict[str, Any], outbox_id: int | None = None) -> str:
        """Append *item*; returns the stream entry id."""
        return await self.redis.xadd(self.stream, {"item": json.dumps(item),
                                                   "outbox": "" if outbox_id is None else str(outbox_id)})

    async def read(self, consumer: str, count: int) -> list[Entry]:
        """Up to *count* new entries for *consumer*, without waiting (no BLOCK: the delivery
        service waits on its own wake-up instead, see delivery.py)."""
        reply = await self.redis.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count)
        return [_entry(eid, fields) for _, entries in (reply or []) for eid, fields in entries]

    async def ack(self, entry_ids: list[str]) -> None:
        """Acknowledge and delete: the item is in SQLite now, the stream need not keep it."""
        if entry_ids:
            async with self.redis.pipeline(transaction=False) as p:
                p.xack(self.stream, GROUP, *entry_ids)
                p.xdel(self.stream, *entry_ids)
                await p.execute()

    async def claim_idle(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries pending longer than *min_idle_ms*, with their delivery counts."""
        reply = await self.redis.xautoclaim(self.stream, GROUP, consumer, min_idle_time=min_idle_ms,
                                            start_id="0-0", count=count)
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

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move a poison entry to the dead-letter stream and acknowledge it."""
        await self.redis.xadd(self.dead, {"item": json.dumps(entry.item), "entry": entry.entry_id,
                                          "deliveries": str(entry.deliveries), "reason": reason[:200]})
        await self.ack([entry.entry_id])

    async def lag(self) -> int:
        """Entries not yet acknowledged. Acknowledged entries are deleted, so this is XLEN."""
        return int(await self.redis.xlen(self.stream))
