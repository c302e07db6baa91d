"""The delivery service: queues committed items, reads them back through the consumer
group, appends their events to the recipients' logs, pushes them to live connections,
and only then acknowledges the entry.

Batching, end to end:

* **Producing.** Items committed by one group commit reach :meth:`enqueue` in one
  event-loop turn; a single publisher task sends everything waiting as ONE stream
  entry (XADD). While that XADD is in flight the next items collect, so the entries
  grow with the load.
* **Consuming.** One consumer reads up to ``queue_batch`` entries per XREADGROUP, fans
  all their items out in ONE transaction (one savepoint per item), publishes the events
  to the hub, then XACKs (+XDEL) every entry whose items all succeeded, in one pipeline.

Failure handling, in order of likelihood:

* The push cannot fail in a way that loses data: the event is committed before it is
  pushed, and a connection that misses it reads it from the log.
* An item whose fan-out fails leaves its entry pending; the reclaimer (XAUTOCLAIM) hands
  the entry out again after the visibility timeout. Fan-out is idempotent (an item whose
  outbox row is gone is done), so a retry appends nothing twice. After
  ``queue_max_deliveries`` attempts the failing items go to the dead-letter stream.
* An XADD that fails (Redis down) is retried with backoff, its items kept ahead of
  everything queued later, so a Redis outage delays delivery but does not reorder it.
  An outbox row a crashed process left behind is queued again at the next start, or by
  the reclaimer once it is older than the visibility timeout.
* A read whose reply was lost (Redis died mid-answer) is followed by a read of this
  consumer's own pending entries (``XREADGROUP ... 0``) before any new one, so entries
  handed out but never received are not left for the reclaimer to deliver late.
* Redis restarted empty (the group is gone: NOGROUP): the group is created again at the
  stream's end and the whole outbox is queued again, oldest first, ahead of anything
  queued since; entries written meanwhile are skipped (their items are in the outbox),
  so the order of delivery is kept. Nothing acknowledged to a client is lost, because
  the outbox is in SQLite.

Admission's delivery lag (admission.py) is the age of the oldest item accepted here and
not yet handed to a consumer, or taken by this process's consumer and not yet in the logs.
With one server both are this process's. In a cluster another server's consumer may take
an item accepted here: every ``HANDED_OUT_CHECK_S`` this process asks Redis which entries
the group has handed out (its last-delivered-id) and stops counting their items, and each
consumer counts what it took until its fan-out commits. So a server refuses writes for its
own backlog and for a queue nobody reads, but not for items that another server's consumer
took and then died with (those are re-queued: by its restart, or after the visibility
timeout).

Waiting for work: XREADGROUP is called without BLOCK. The producer is this process, so
the publisher wakes the consumer at once; with nothing to do it asks Redis again every
``queue_poll_ms`` (entries from other producers, or left from before a restart). This
also avoids fakeredis's emulation of blocking reads, which does not survive cancelling
the reader at shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from .clock import SYSTEM, Clock
from .config import ServerConfig
from .hub import Hub
from .metrics import Metrics
from .queue import DeliveryQueue, Entry, GroupLost
from .routing import Router
from .store import FanOut, Item, Store
from .tasks import run_every, sleep_unless, stop_all

log = logging.getLogger(__name__)

#: Fan-out transactions the consumer may have waiting for their commits at once.
MAX_FAN_OUTS = 4
#: In a cluster: how often a server asks Redis which of the items it accepted another
#: server's consumer has taken (well under admission's 250 ms delivery-lag bound).
HANDED_OUT_CHECK_S = 0.05


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class DeliveryService:
    def __init__(self, config: ServerConfig, store: Store, queue: DeliveryQueue, hub: Hub,
                 metrics: Metrics, clock: Clock = SYSTEM, router: Router | None = None) -> None:
        self.config = config
        self.store = store
        self.queue = queue
        self.hub = hub
        #: Who gets the events of a committed fan-out (this process's hub, and in a cluster
        #: the other servers holding the recipients' connections).
        self.router = router if router is not None else Router(hub)
        self.metrics = metrics
        self.clock = clock
        self.consumer = f"node-{uuid.uuid4().hex[:8]}"
        #: Outbox rows this process has queued (or is about to): the periodic re-queue skips them.
        self._queued_outbox: set[int] = set()
        #: Items waiting for the publisher, and the event that wakes it.
        self._to_publish: list[Item] = []
        self._publish_wakeup = asyncio.Event()
        #: Outbox rows accepted here and not yet fanned out -> when they were enqueued
        #: (monotonic), oldest first: the admission rule reads the oldest's age.
        self._inflight: dict[int, float] = {}
        #: In a cluster: the stream entry each published in-flight item went out in.
        self._entry_of: dict[int, str] = {}
        #: Entries this process's consumer has taken and not yet fanned out -> their
        #: queued-at (wall ms): they count in the delivery lag here, wherever accepted.
        self._taken: dict[str, int] = {}
        #: Held by the publisher around each XADD and by a lost group's recovery, so that
        #: no entry is written between the group's re-creation and the outbox's re-queue.
        self._publish_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        #: Monotonic time of the consumer's last successful read (None before the first).
        self.last_read_ok: float | None = None

    # --- life cycle ------------------------------------------------------------
    async def start(self) -> None:
        """Create the consumer group (at 0), queue leftover outbox rows, start the loops."""
        await self.queue.ensure_group()
        self._stop.clear()
        await self._requeue_outbox(None)
        self._tasks = [
            asyncio.create_task(self._publisher(), name="delivery-publish"),
            asyncio.create_task(self._consume(), name="delivery-consume"),
            asyncio.create_task(run_every(self._stop, self.config.queue_reclaim_every_s, self._reclaim_pass,
                                          "reclaim pass"), name="delivery-reclaim")]
        if self.config.server_id:
            self._tasks.append(asyncio.create_task(
                run_every(self._stop, HANDED_OUT_CHECK_S, self._forget_handed_out, "handed-out check"),
                name="delivery-handed-out"))

    async def stop(self) -> None:
        self._wakeup.set()
        self._publish_wakeup.set()
        await stop_all(self._stop, self._tasks)
        self._tasks = []

    # --- state the admission rule and /healthz read -------------------------------------
    def backlog(self) -> int:
        """Items accepted by this process and not yet fanned out."""
        return len(self._inflight)

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest item has waited that this process answers for: accepted here
        and not yet taken by a consumer, or taken by this one and not yet fanned out (0 if
        none). See the module docstring."""
        age = 0.0
        for t in self._inflight.values():
            age = now - t
            break
        for queued_ms in self._taken.values():
            age = max(age, (self.clock.wall_ms() - queued_ms) / 1000.0)
            break
        return age

    async def _forget_handed_out(self) -> None:
        """Cluster only: stop counting the items accepted here whose entries the group has
        handed to a consumer (that consumer counts them until its fan-out commits)."""
        if not self._entry_of:
            return
        last = await self.queue.last_delivered()
        if last is None:
            return
        upto = _entry_key(last)
        for oid, entry_id in list(self._entry_of.items()):
            if _entry_key(entry_id) <= upto:
                del self._entry_of[oid]
                self._inflight.pop(oid, None)

    def healthy(self, now: float) -> bool:
        """The consumer read the queue recently (it polls every ``queue_poll_ms`` when idle)."""
        limit = 2.0 + 4 * self.config.queue_poll_ms / 1000
        return self.last_read_ok is not None and now - self.last_read_ok < limit

    # --- producing ---------------------------------------------------------------
    def enqueue(self, item: Item) -> None:
        """Queue *item* (already committed when it has an outbox row). Returns at once; the
        publisher XADDs everything enqueued meanwhile as one entry."""
        self._queued_outbox.add(item.outbox_id)
        self._inflight.setdefault(item.outbox_id, self.clock.monotonic())
        self._to_publish.append(item)
        self._publish_wakeup.set()

    async def _publisher(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._to_publish:
                self._publish_wakeup.clear()
                await self._publish_wakeup.wait()
                continue
            async with self._publish_lock:
                items, self._to_publish = self._to_publish, []
                try:
                    entry_id = await self.queue.publish(items)
                    failures = 0
                    if self.config.server_id:
                        for item in items:
                            if item.outbox_id in self._inflight:
                                self._entry_of[item.outbox_id] = entry_id
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Retried first, ahead of what was queued meanwhile: order is kept. (If
                    # Redis did append it, the second copy's fan-out appends nothing.)
                    failures += 1
                    log.warning("XADD of %d items failed; retrying", len(items), exc_info=failures == 1)
                    self._to_publish[:0] = items
                    failed = True
                else:
                    failed = False
            if failed:
                await sleep_unless(self._stop, min(2.0, 0.1 * 2 ** failures))
                continue
            self._wakeup.set()

    async def _requeue_outbox(self, created_before_ms: int | None) -> None:
        for item in await self.store.pending_outbox(created_before_ms):
            if item.outbox_id not in self._queued_outbox:
                self.enqueue(item)

    # --- consuming -------------------------------------------------------------------
    def _fan_out(self, entries: list[Entry], done: Callable[[list[str] | None], None]) -> None:
        """Queue the fan-out of every item of *entries* as one job of the next group commit.
        After its COMMIT (on the event loop, in commit order) the events are pushed, and
        *done* gets the ids of the entries whose items all succeeded (None if the commit
        failed: everything stays pending for the reclaimer)."""
        items = [item for e in entries for item in e.items]

        def committed(fan: FanOut | None, exc: BaseException | None) -> None:
            if exc is not None or fan is None:
                log.error("fan-out of %d entries failed: %s", len(entries), exc)
                done(None)
                return
            done(self._delivered(entries, items, fan))

        self.store.submit_fan_out(items, committed)

    def _delivered(self, entries: list[Entry], items: list[Item], fan: FanOut) -> list[str]:
        """Push a committed fan-out; returns the entries that may be acknowledged."""
        self.router.publish(fan.events)
        failed = {index for index, _ in fan.failed}
        ok: list[str] = []
        start = 0
        for e in entries:
            indices = range(start, start + len(e.items))
            start += len(e.items)
            if any(i in failed for i in indices):
                if e.deliveries >= self.config.queue_max_deliveries:
                    reasons = dict(fan.failed)
                    self._spawn(self._dead_letter(e, [(items[i], reasons[i]) for i in indices if i in failed]))
                else:
                    log.warning("delivery of entry %s failed (attempt %d): %s", e.entry_id, e.deliveries,
                                "; ".join(r for i, r in fan.failed if i in indices))
                continue
            ok.append(e.entry_id)
            waited = max(0.0, (self.clock.wall_ms() - e.queued_at_ms) / 1000.0)
            for _ in e.items:  # one observation per item: a message, receipt or presence change
                self.metrics.delivery_latency.observe(waited)
        for i, item in enumerate(items):
            if i not in failed:
                self._queued_outbox.discard(item.outbox_id)
                self._inflight.pop(item.outbox_id, None)
                self._entry_of.pop(item.outbox_id, None)
        return ok

    async def handle(self, entries: list[Entry]) -> list[str]:
        """Fan out *entries*, push, XACK the ones whose items all succeeded; returns their ids.
        Raises if the fan-out's commit or the XACK failed (the reclaimer's path, and tests)."""
        fut: asyncio.Future[list[str] | None] = asyncio.get_running_loop().create_future()

        def done(ok: list[str] | None) -> None:
            if not fut.done():
                fut.set_result(ok)

        self._fan_out(entries, done)
        ok = await fut
        if self._side_tasks:  # dead-lettering started by this batch: finish it first
            await asyncio.gather(*list(self._side_tasks), return_exceptions=True)
        if ok is None:
            raise RuntimeError("the fan-out's commit failed")
        await self.queue.ack(ok)
        return ok

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _dead_letter(self, entry: Entry, items: list[tuple[Item, str]]) -> None:
        log.error("dead-lettering %d item(s) of %s after %d deliveries: %s", len(items), entry.entry_id,
                  entry.deliveries, "; ".join(r for _, r in items))
        try:
            await self.queue.dead_letter(entry, items)
            outbox = [i.outbox_id for i, _ in items]
            await self.store.drop_outbox(outbox)
        except Exception:
            log.exception("dead-lettering %s failed; it stays pending", entry.entry_id)
            return
        for oid in outbox:
            self._queued_outbox.discard(oid)
            self._inflight.pop(oid, None)
            self._entry_of.pop(oid, None)
        self.metrics.dead_letters.inc(len(items))

    async def _attempt(self, entries: list[Entry]) -> None:
        try:
            await self.handle(entries)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Left pending: the reclaimer retries after the visibility timeout.
            log.exception("delivery of %d entries failed", len(entries))

    async def _consume(self) -> None:
        """Read, fan out, acknowledge, pipelined: the consumer reads the next entries while
        the previous fan-outs wait for their commit (at most ``MAX_FAN_OUTS`` at a time, in
        order), and acknowledges finished entries with its next read."""
        failures = 0
        acks: list[str] = []       # entries whose fan-out is pushed, to XACK with the next read
        in_flight = 0
        own_pending = False        # after a failed read: first re-read what it may have handed us

        def fanned_out(entries: list[Entry], ok: list[str] | None) -> None:
            nonlocal in_flight
            in_flight -= 1
            for e in entries:  # done, or left pending for the reclaimer: no longer this consumer's
                self._taken.pop(e.entry_id, None)
            if ok:
                acks.extend(ok)
            self._wakeup.set()

        while not self._stop.is_set():
            self._wakeup.clear()  # before the read: a wake-up during it is not lost
            if in_flight >= MAX_FAN_OUTS:
                await sleep_unless(self._wakeup, self.config.queue_poll_ms / 1000)
                continue
            to_ack, acks = acks, []
            try:
                entries = await self.queue.ack_and_read(to_ack, self.consumer, self.config.queue_batch,
                                                        own_pending)
                self.last_read_ok = self.clock.monotonic()
                failures = 0
                # One such read (its first queue_batch entries; any beyond are the
                # reclaimer's). Entries of fan-outs still in flight come back too: fanning
                # out twice appends nothing the second time (their outbox rows are gone).
                own_pending = False
            except asyncio.CancelledError:
                raise
            except GroupLost:
                own_pending = False
                await self._recover_group()
                continue
            except Exception:
                # Unacknowledged entries stay pending; the reclaimer finds their items done.
                # The reply may have been lost after Redis handed entries to this consumer:
                # read those first next time.
                own_pending = True
                acks = to_ack + acks
                failures += 1
                log.warning("XREADGROUP failed", exc_info=failures == 1)
                await sleep_unless(self._stop, min(5.0, 0.1 * 2 ** failures))
                continue
            if entries:
                in_flight += 1
                for e in entries:
                    self._taken[e.entry_id] = e.queued_at_ms
                self._fan_out(entries, functools.partial(fanned_out, entries))
                if len(entries) == self.config.queue_batch:
                    continue  # a full batch: more may be waiting
            # Wait for a new entry (the publisher wakes us) or a finished fan-out to acknowledge.
            await sleep_unless(self._wakeup, self.config.queue_poll_ms / 1000)

    async def _recover_group(self) -> None:
        """Redis lost the consumer group (it restarted empty): create it again and queue
        every outbox row once more. Entries Redis still had would be delivered again too;
        the fan-out is idempotent."""
        log.warning("the delivery queue's consumer group is gone (Redis restarted empty?): "
                    "creating it again and re-queueing the outbox")
        self.metrics.group_recreated.inc()
        try:
            async with self._publish_lock:
                # At the stream's end: what was written since Redis restarted is in the
                # outbox and is queued again below, in order, ahead of anything newer.
                await self.queue.ensure_group(at="$")
                items = await self.store.pending_outbox(None)
                known = {item.outbox_id for item in items}
                self._to_publish = items + [i for i in self._to_publish if i.outbox_id not in known]
                self._queued_outbox = known | {i.outbox_id for i in self._to_publish}
                now = self.clock.monotonic()
                for item in items:
                    self._inflight.setdefault(item.outbox_id, now)
                self._publish_wakeup.set()
        except Exception:
            log.warning("re-creating the consumer group failed; retrying", exc_info=True)
            await sleep_unless(self._stop, 1.0)

    async def _reclaim_pass(self) -> None:
        try:
            await self.reclaim_once(int(self.config.queue_visibility_timeout_s * 1000))
        except GroupLost:
            await self._recover_group()
            return
        visibility_ms = int(self.config.queue_visibility_timeout_s * 1000)
        await self._requeue_outbox(self.clock.wall_ms() - visibility_ms)

    async def reclaim_once(self, idle_ms: int) -> int:
        """Claim entries idle for *idle_ms* and deliver (or dead-letter) them; delete the
        entries every consumer is done with; returns how many were claimed."""
        entries = await self.queue.claim_idle(self.consumer, idle_ms, self.config.queue_batch)
        if entries:
            await self._attempt(entries)
        await self.queue.trim()
        self.metrics.queue_lag.set(await self.queue.lag())
        return len(entries)
