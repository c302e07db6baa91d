"""docs/server.md "Delivery queue": Redis Streams semantics, on both backends, driven
directly (no HTTP): group at 0, XACK after fan-out, XAUTOCLAIM of idle entries,
dead-lettering of poison entries, the outbox after a crash, idempotent redelivery."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reference_server.config import ServerConfig
from reference_server.delivery import DeliveryService
from reference_server.hub import Hub
from reference_server.metrics import Metrics
from reference_server.payloads import SendRequest
from reference_server.queue import GROUP, DeliveryQueue
from reference_server.redis_link import connect
from reference_server.store import Item, Page, Store
from reference_server.store.ops import One, Tx

from .conftest import delete_prefix, wait_until


@dataclass
class Parts:
    store: Store
    queue: DeliveryQueue
    delivery: DeliveryService
    metrics: Metrics


@pytest.fixture
async def parts(redis_url: str | None, new_database) -> AsyncIterator[Parts]:  # type: ignore[no-untyped-def]
    prefix = f"chatlab-test-{uuid.uuid4().hex[:12]}"
    config = ServerConfig(redis_url=redis_url, redis_prefix=prefix, queue_max_deliveries=2, queue_poll_ms=50)
    store = await Store.open(await new_database())
    for u in ("alice", "bob"):
        await store.create_user(u, "x", 0)
    redis = connect(redis_url)
    queue = DeliveryQueue(redis, prefix)
    metrics = Metrics()
    delivery = DeliveryService(config, store, queue, Hub(), metrics)
    yield Parts(store, queue, delivery, metrics)
    await delivery.stop()
    await delete_prefix(redis, prefix)
    await redis.aclose()
    await store.close()


async def _message(p: Parts, body: str = "hi") -> Item:
    stored = await p.store.add_message("alice", SendRequest(body, uuid.uuid4().hex, to="bob"), 1)
    assert stored.item is not None
    return stored.item


async def _bob_bodies(p: Parts) -> list[str]:
    page = await p.store.read_events("bob", None, 100)
    assert isinstance(page, Page)
    return [e["body"] for e in page.events if e["type"] == "message"]


async def test_entries_added_before_the_group_exists_are_delivered(parts: Parts) -> None:
    m = await _message(parts, "early")
    await parts.queue.publish([m])  # no group yet
    await parts.delivery.start()                           # creates it at 0, not $
    await wait_until(lambda: parts.metrics.delivery_latency.count >= 1, what="delivery")
    assert await _bob_bodies(parts) == ["early"]
    for _ in range(300):  # the XACK goes out with the consumer's next read
        if await parts.queue.lag() == 0:
            break
        await asyncio.sleep(0.01)
    assert await parts.queue.lag() == 0, "acknowledged"
    assert await _bob_bodies(parts) == ["early"], "the start-up re-queue of its outbox row appended nothing twice"


async def test_idle_entry_of_a_dead_consumer_is_reclaimed(parts: Parts) -> None:
    await parts.queue.ensure_group()
    m = await _message(parts, "orphan")
    await parts.queue.publish([m])
    taken = await parts.queue.read("dead-node", 10)  # a consumer that dies before XACK
    assert len(taken) == 1
    pending = await parts.queue.redis.xpending(parts.queue.stream, GROUP)
    assert pending["pending"] == 1
    assert await parts.delivery.reclaim_once(idle_ms=0) == 1
    assert await _bob_bodies(parts) == ["orphan"]
    assert (await parts.queue.redis.xpending(parts.queue.stream, GROUP))["pending"] == 0


async def test_poison_item_is_dead_lettered_and_its_batch_mates_delivered(parts: Parts) -> None:
    """One entry holds a poison item and a good message: the message is delivered on the
    first attempt, the poison item is retried until queue_max_deliveries (2) and then
    dead-lettered, and the entry is acknowledged."""
    await parts.queue.ensure_group()
    good = await _message(parts, "fine")
    bogus = {"kind": "bogus"}
    def insert_bogus() -> Tx[int]:
        (outbox_id,) = yield One("INSERT INTO outbox(item, created_at) VALUES (?, 0) RETURNING id", json.dumps(bogus))
        return int(outbox_id)

    bogus_id = await parts.store.committer.call(insert_bogus)
    await parts.queue.publish([Item(bogus_id, bogus), good])
    taken = await parts.queue.read("node-a", 10)                 # delivery 1
    assert len(taken) == 1
    assert await parts.delivery.handle(taken) == [], "not acknowledged: one item failed"
    assert await _bob_bodies(parts) == ["fine"], "the good item is not held back"
    assert await parts.delivery.reclaim_once(idle_ms=0) == 1     # delivery 2: fails again, dead
    assert parts.metrics.dead_letters.get() == 1
    dead = await parts.queue.redis.xrange(parts.queue.dead)
    assert len(dead) == 1 and '"bogus"' in dead[0][1]["item"] and int(dead[0][1]["deliveries"]) == 2
    assert await parts.queue.lag() == 0
    assert await _bob_bodies(parts) == ["fine"], "the retry appended nothing twice"
    assert await parts.store.pending_outbox() == [], "the dead item's outbox row is dropped, not re-queued"


async def test_outbox_rows_are_queued_again_at_start(parts: Parts) -> None:
    """A crash between the SQLite commit and the XADD: the outbox row survives and the
    next start queues it."""
    await _message(parts, "committed, never queued")
    assert len(await parts.store.pending_outbox()) == 1
    await parts.delivery.start()
    await wait_until(lambda: parts.metrics.delivery_latency.count >= 1, what="delivery")
    assert await _bob_bodies(parts) == ["committed, never queued"]
    assert await parts.store.pending_outbox() == []


async def test_redelivery_appends_nothing_twice(parts: Parts) -> None:
    m = await _message(parts, "once")
    first = await parts.store.fan_out([m])
    again = await parts.store.fan_out([m, m])
    assert list(first.events) == ["bob"] and again.events == {} and again.failed == []
    assert await _bob_bodies(parts) == ["once"]
