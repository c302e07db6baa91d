"""Group commit: every write queued since the last COMMIT goes into one transaction.

The event loop hands a write *transaction* (a sans-I/O generator factory, :mod:`.ops`) to
:meth:`GroupCommitter.submit` and goes on. The committer runs every queued transaction in
one database transaction, commits once, and only then hands all the answers back in one
go. So:

* a write is answered only after the COMMIT that made it durable (SQLite with
  ``synchronous=FULL``: after the fsync; PostgreSQL: after the WAL flush);
* under load many writes share one COMMIT and one fsync;
* transactions run in submission order, one after another, on one connection: the
  database never sees two writers from this process, and a transaction sees the effects
  of the ones before it in the batch;
* a transaction that refuses (raises before writing) is answered alone and the batch goes
  on; one that fails after a write, or on a database error, makes the committer undo the
  batch and run it again with a SAVEPOINT per transaction, so only that one fails.

Two committers share this: :class:`GroupCommitter` for SQLite runs the statements on the
event loop's thread (each takes microseconds) and only the COMMIT on a helper thread:
Python's sqlite3 releases the GIL around every statement, and a writer thread that must
win it back from a busy event loop after each one waits up to the interpreter's switch
interval (5 ms) every time; the COMMIT is one statement, most of it an fsync.
:class:`AsyncGroupCommitter` for PostgreSQL awaits each statement on an asyncio
connection, so the event loop serves everyone else during every round trip.

The batch grows by itself with the load: while one COMMIT is in flight, new
transactions queue up and go into the next one. ``max_batch`` bounds one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .ops import Ran, TxFactory, drive, drive_async

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Called on the event loop with ``(result, None)`` or ``(None, exception)``.
Done = Callable[[Any, BaseException | None], None]
Results = list[tuple[Done, Any, BaseException | None]]


class BatchStats:
    """Counters of the committer, read by /metrics and the benchmarks."""

    def __init__(self) -> None:
        self.batches = 0
        self.jobs = 0
        self.largest = 0
        self.commit_s = 0.0


class _Committer:
    """What both committers share: the queue, the answers, the statistics and the hooks.

    *on_commit* and *on_rollback* run on the event loop after each database transaction
    ends (caches of committed facts are updated or dropped there). *database_errors* are
    the driver's exception types that leave the transaction unusable."""

    def __init__(self, *, max_batch: int, on_commit: Callable[[], None], on_rollback: Callable[[], None],
                 database_errors: tuple[type[BaseException], ...]) -> None:
        self.committed = on_commit
        self.rolled_back = on_rollback
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._database_errors = database_errors
        self._queue: deque[tuple[TxFactory, Done, float]] = deque()
        self._closed = False
        #: Submission time (monotonic) of the oldest transaction of the batch in flight.
        self._in_flight_since: float | None = None
        #: The monotonic clock submissions are stamped with: the one the admission rule reads
        #: ages against (the server's injected Clock; Store.open sets it).
        self.monotonic: Callable[[], float] = time.monotonic

    def submit(self, tx: TxFactory, done: Done) -> None:
        """Queue the transaction *tx* makes; *done* is called on the event loop after the
        batch's COMMIT."""
        if self._closed:
            done(None, RuntimeError("store is closed"))
            return
        self._queue.append((tx, done, self.monotonic()))
        self._wake()

    def call(self, tx: Callable[[], Any]) -> asyncio.Future[Any]:
        """Queue *tx* and return a future of its answer (or its exception)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        self.submit(tx, done)
        return fut

    @property
    def pending(self) -> int:
        """Transactions queued for the next batch."""
        return len(self._queue)

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest uncommitted transaction has waited (0 when none waits)."""
        if self._in_flight_since is not None:
            return now - self._in_flight_since
        return now - self._queue[0][2] if self._queue else 0.0

    def _take(self) -> list[tuple[TxFactory, Done, float]]:
        n = min(len(self._queue), self.max_batch)
        batch = [self._queue.popleft() for _ in range(n)]
        self._in_flight_since = batch[0][2]
        return batch

    def _must_undo(self, exc: BaseException, ran: Ran) -> bool:
        """A failure that leaves changes (or a broken transaction) behind."""
        return ran.wrote or isinstance(exc, self._database_errors)

    def _account(self, n: int, t0: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.jobs += n
        stats.largest = max(stats.largest, n)
        stats.commit_s += time.perf_counter() - t0
        self._in_flight_since = None

    @staticmethod
    def _answer(results: Results) -> None:
        for done, result, exc in results:
            try:
                done(result, exc)
            except Exception:  # a callback's bug must not stop the others
                log.exception("write callback failed")

    def _wake(self) -> None:
        raise NotImplementedError


class _Undo(Exception):
    """A transaction failed in a way that leaves the batch's transaction unusable."""


class GroupCommitter(_Committer):
    """SQLite: the statements on the event loop's thread, the COMMIT on a helper thread."""

    def __init__(self, conn: Any, *, name: str = "db-commit", max_batch: int = 1000,
                 begin: str = "BEGIN IMMEDIATE", on_commit: Callable[[], None] = lambda: None,
                 on_rollback: Callable[[], None] = lambda: None,
                 database_errors: tuple[type[BaseException], ...] = ()) -> None:
        super().__init__(max_batch=max_batch, on_commit=on_commit, on_rollback=on_rollback,
                         database_errors=database_errors)
        self.conn = conn
        self._begin = begin
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._scheduled = False
        self._in_flight = False
        self._idle: asyncio.Event | None = None

    async def close(self) -> None:
        """Commit what is queued, then refuse new transactions and stop the helper thread."""
        self._closed = True
        while self._queue or self._in_flight:
            self._idle = asyncio.Event()
            self._wake()
            await self._idle.wait()
        self._pool.shutdown(wait=True)

    def _wake(self) -> None:
        if not self._scheduled and not self._in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run_batch)

    def _run_batch(self) -> None:
        self._scheduled = False
        if self._in_flight or not self._queue:
            return
        batch = self._take()
        self._in_flight = True
        t0 = time.perf_counter()
        try:
            results = self._run(batch, isolate=False)
        except _Undo:
            self._rollback()
            try:
                results = self._run(batch, isolate=True)
            except Exception as exc:
                self._fail(batch, exc, t0)
                return
        except Exception as exc:  # BEGIN failed: the database is unusable
            self._fail(batch, exc, t0)
            return
        commit = asyncio.get_running_loop().run_in_executor(self._pool, self.conn.execute, "COMMIT")
        commit.add_done_callback(lambda f: self._committed(f, results, t0))

    def _run(self, batch: list[tuple[TxFactory, Done, float]], isolate: bool) -> Results:
        conn = self.conn
        conn.execute(self._begin)
        results: Results = []
        for tx, done, _ in batch:
            ran = Ran()
            if isolate:
                conn.execute("SAVEPOINT job")
            try:
                result = drive(tx(), conn, ran)
            except Exception as exc:
                if isolate:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                elif self._must_undo(exc, ran):
                    raise _Undo() from exc
                results.append((done, None, exc))
            else:
                if isolate:
                    conn.execute("RELEASE job")
                results.append((done, result, None))
        return results

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except Exception:
            pass
        self.rolled_back()

    def _fail(self, batch: list[tuple[TxFactory, Done, float]], exc: BaseException, t0: float) -> None:
        log.error("a group of %d writes failed: %s", len(batch), exc)
        self._rollback()
        self._finish([(done, None, exc) for _, done, _ in batch], t0)

    def _committed(self, commit: asyncio.Future[Any], results: Results, t0: float) -> None:
        exc = commit.exception()
        if exc is not None:  # the disk failed (full, I/O error): nothing of the batch is durable
            log.error("group commit of %d writes failed: %s", len(results), exc)
            self._rollback()
            results = [(done, None, exc) for done, _, _ in results]
        else:
            self.committed()
        self._finish(results, t0)

    def _finish(self, results: Results, t0: float) -> None:
        self._account(len(results), t0)
        self._in_flight = False
        # The next batch first: its statements run and its COMMIT goes to the disk now, and
        # this batch's answers go out while that fsync runs.
        if self._queue:
            self._run_batch()
        elif self._idle is not None:
            self._idle.set()
        self._answer(results)


class AsyncGroupCommitter(_Committer):
    """PostgreSQL: one task commits the batches on an asyncio connection (psycopg, in
    autocommit mode: the committer issues BEGIN and COMMIT itself)."""

    def __init__(self, conn: Any, *, max_batch: int = 1000, on_commit: Callable[[], None] = lambda: None,
                 on_rollback: Callable[[], None] = lambda: None,
                 database_errors: tuple[type[BaseException], ...] = ()) -> None:
        super().__init__(max_batch=max_batch, on_commit=on_commit, on_rollback=on_rollback,
                         database_errors=database_errors)
        self.conn = conn
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="db-commit")

    async def close(self) -> None:
        """Commit what is queued, then refuse new transactions and stop."""
        self._closed = True
        self._work.set()
        if self._task is not None:
            await self._task

    def _wake(self) -> None:
        self._work.set()

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            batch = self._take()
            t0 = time.perf_counter()
            try:
                try:
                    results = await self._run(batch, isolate=False)
                except _Undo:
                    await self._rollback()
                    results = await self._run(batch, isolate=True)
                await self.conn.execute("COMMIT")
            except Exception as exc:
                log.error("group commit of %d writes failed: %s", len(batch), exc)
                await self._rollback()
                results = [(done, None, exc) for _, done, _ in batch]
            else:
                self.committed()
            self._account(len(results), t0)
            self._answer(results)

    async def _run(self, batch: list[tuple[TxFactory, Done, float]], isolate: bool) -> Results:
        conn = self.conn
        await conn.execute("BEGIN")
        results: Results = []
        for tx, done, _ in batch:
            ran = Ran()
            if isolate:
                await conn.execute("SAVEPOINT job")
            try:
                result = await drive_async(tx(), conn, ran)
            except Exception as exc:
                if isolate:
                    await conn.execute("ROLLBACK TO SAVEPOINT job")
                    await conn.execute("RELEASE SAVEPOINT job")
                elif self._must_undo(exc, ran):
                    raise _Undo() from exc
                results.append((done, None, exc))
            else:
                if isolate:
                    await conn.execute("RELEASE SAVEPOINT job")
                results.append((done, result, None))
        return results

    async def _rollback(self) -> None:
        try:
            await self.conn.execute("ROLLBACK")
        except Exception:
            pass
        self.rolled_back()
