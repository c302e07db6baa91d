"""The delivery service: reads the queue, appends each item's events to the recipients'
logs, pushes them to live connections, and only then acknowledges the entry.

Failure handling, in order of likelihood:

* The push cannot fail in a way that loses data: the event is committed before it is
  pushed, and a connection that misses it reads it from the log.
* SQLite or Redis errors leave the entry pending; the reclaimer (XAUTOCLAIM) hands it
  out again after the visibility timeout. Fan-out is idempotent, so a retry appends
  nothing twice (at-least-once + de-duplication).
* An entry that keeps failing is a poison message: after ``queue_max_deliveries``
  attempts it moves to the dead-letter stream.
* An outbox row whose XADD failed (or that a crashed process left behind) is queued
  again by the reclaimer.

Waiting for work: XREADGROUP is called without BLOCK. The producer is this process, so
:meth:`enqueue` wakes the consumer at once; with nothing to do it asks Redis again every
``queue_poll_ms`` (entries from other producers, or left from before a restart). This
also avoids fakeredis's emulation of blocking reads, which does not survive cancelling
the reader at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from .config import ServerConfig
from .hub import Hub
from .metrics import Metrics
from .queue import DeliveryQueue, Entry
from .store import Store
from .tasks import run_every, sleep_unless, stop_all

log = logging.getLogger(__name__)


class DeliveryService:
    def __init__(self, config: ServerConfig, store: Store, queue: DeliveryQueue, hub: Hub,
                 metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.queue = queue
        self.hub = hub
        self.metrics = metrics
        self.consumer = f"node-{uuid.uuid4().hex[:8]}"
        self._queued_outbox: set[int] = set()  # outbox rows this process has XADDed
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()

    # --- life cycle ------------------------------------------------------------
    async def start(self) -> None:
        """Create the consumer group (at 0), queue leftover outbox rows, start the loops."""
        await self.queue.ensure_group()
        await self._requeue_outbox()
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self._consume(), name="delivery-consume"),
            asyncio.create_task(run_every(self._stop, self.config.queue_reclaim_every_s, self._reclaim_pass,
                                          "reclaim pass"), name="delivery-reclaim")]

    async def stop(self) -> None:
        self._wakeup.set()
        await stop_all(self._stop, self._tasks)
        self._tasks = []

    # --- producing ---------------------------------------------------------------
    async def enqueue(self, item: dict[str, Any], outbox_id: int | None = None) -> None:
        """Queue *item* (already committed when it has an outbox row). A Redis failure is
        logged, not raised: the outbox row stays and the reclaimer queues it later."""
        try:
            await self.queue.publish(item, outbox_id)
            self._wakeup.set()
        except Exception:
            log.exception("XADD failed; outbox row %s will be queued again", outbox_id)
            return
        if outbox_id is not None:
            self._queued_outbox.add(outbox_id)

    async def _requeue_outbox(self) -> None:
        for outbox_id, item in await self.store.pending_outbox():
            if outbox_id not in self._queued_outbox:
                await self.enqueue(item, outbox_id)

    # --- consuming -------------------------------------------------------------------
    async def handle(self, entry: Entry) -> None:
        """Fan out, push, then XACK. Raises if the fan-out or the XACK failed."""
        appended = await self.store.fan_out(entry.item, entry.outbox_id)
        for user, events in appended.items():
            self.hub.publish(user, events)
        await self.queue.ack([entry.entry_id])
        if entry.outbox_id is not None:
            self._queued_outbox.discard(entry.outbox_id)
        queued_ms = int(entry.entry_id.split("-")[0])
        self.metrics.delivery_latency.observe(max(0.0, time.time() - queued_ms / 1000.0))

    async def _attempt(self, entry: Entry) -> None:
        if entry.deliveries > self.config.queue_max_deliveries:
            log.error("dead-lettering %s after %d deliveries: %r", entry.entry_id, entry.deliveries, entry.item)
            await self.queue.dead_letter(entry, "too many deliveries")
            self.metrics.dead_letters.inc()
            return
        try:
            await self.handle(entry)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Left pending: the reclaimer retries it after the visibility timeout.
            log.exception("delivery of %s failed (attempt %d)", entry.entry_id, entry.deliveries)

    async def _consume(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._wakeup.clear()
                entries = await self.queue.read(self.consumer, self.config.queue_batch)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("XREADGROUP failed")
                await sleep_unless(self._stop, min(5.0, 0.1 * 2 ** failures))
                continue
            for entry in entries:
                await self._attempt(entry)
            if not entries:
                await sleep_unless(self._wakeup, self.config.queue_poll_ms / 1000)

    async def _reclaim_pass(self) -> None:
        await self.reclaim_once(int(self.config.queue_visibility_timeout_s * 1000))
        await self._requeue_outbox()

    async def reclaim_once(self, idle_ms: int) -> int:
        """Claim entries idle for *idle_ms* and deliver (or dead-letter) them; returns how many."""
        entries = await self.queue.claim_idle(self.consumer, idle_ms, self.config.queue_batch)
        for entry in entries:
            await self._attempt(entry)
        self.metrics.queue_lag.set(await self.queue.lag())
        return len(entries)
