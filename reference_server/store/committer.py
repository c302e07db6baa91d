"""Group commit: every write queued since the last COMMIT goes into one transaction.

The event loop hands a write *job* (a function of the database connection) to
:meth:`GroupCommitter.submit` and goes on. At the end of the event-loop turn the
committer runs every queued job in one transaction on the loop's thread, each inside
its own SAVEPOINT (a job that raises is rolled back alone and reports its exception),
then hands the COMMIT to a helper thread. While that COMMIT (and its fsync) is in
flight the loop serves other connections and new jobs queue up for the next
transaction; when it returns, every job of the batch gets its result in one go. So:

* a write is answered only after the COMMIT that made it durable (with
  ``synchronous=FULL``, after the fsync);
* under load many writes share one COMMIT and one fsync; the thread hand-off happens
  once per batch, not once per call;
* jobs run in submission order, one after another, on one connection: SQLite never
  sees two writers, and a job sees the effects of the jobs before it in the batch.

Why the statements run on the loop's thread and only the COMMIT on another: Python's
sqlite3 releases the GIL around every statement, and a writer thread that must win the
GIL back from a busy event loop after each one waits up to the interpreter's switch
interval (5 ms) every time. The COMMIT is one statement, most of it an fsync.

The batch grows by itself with the load: while one COMMIT is being synced, new jobs
queue up and go into the next one. ``max_batch`` bounds how long one transaction holds
the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = Any  # a DB-API connection in autocommit mode: the committer issues BEGIN/COMMIT itself
Job = Callable[[Conn], Any]
#: Called on the event loop with ``(result, None)`` or ``(None, exception)``.
Done = Callable[[Any, BaseException | None], None]


class BatchStats:
    """Counters of the committer, read by /metrics and the benchmarks."""

    def __init__(self) -> None:
        self.batches = 0
        self.jobs = 0
        self.largest = 0
        self.commit_s = 0.0


class GroupCommitter(Generic[T]):
    """Commits the jobs queued on *conn* in groups. *begin* starts a write transaction
    (SQLite: ``BEGIN IMMEDIATE``, which takes the write lock at once). *on_commit* and
    *on_rollback* run on the event loop after each transaction ends."""

    def __init__(self, conn: Conn, *, name: str = "db-commit", max_batch: int = 1000,
                 begin: str = "BEGIN IMMEDIATE", on_commit: Callable[[], None] = lambda: None,
                 on_rollback: Callable[[], None] = lambda: None) -> None:
        self.conn = conn
        #: Called after a COMMIT succeeded / after a transaction was rolled back (caches of
        #: committed facts are updated or dropped there).
        self.committed = on_commit
        self.rolled_back = on_rollback
        self._begin = begin
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._queue: deque[tuple[Job, Done, float]] = deque()
        self._scheduled = False
        self._in_flight = False
        self._closed = False
        self._idle: asyncio.Event | None = None
        #: Submission time (monotonic) of the oldest job of the batch being committed.
        self._in_flight_since: float | None = None

    # --- submitting ---------------------------------------------------------------
    def submit(self, job: Job, done: Done) -> None:
        """Queue *job*; *done* is called on the event loop after the batch's COMMIT."""
        if self._closed:
            done(None, RuntimeError("store is closed"))
            return
        self._queue.append((job, done, time.monotonic()))
        self._schedule()

    def call(self, job: Callable[[Conn], T]) -> asyncio.Future[T]:
        """Queue *job* and return a future of its result (or its exception)."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        self.submit(job, done)
        return fut

    @property
    def pending(self) -> int:
        """Jobs queued for the next transaction."""
        return len(self._queue)

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest uncommitted job has waited (0 when none waits)."""
        if self._in_flight_since is not None:
            return now - self._in_flight_since
        return now - self._queue[0][2] if self._queue else 0.0

    async def close(self) -> None:
        """Commit what is queued, then refuse new jobs and stop the helper thread."""
        self._closed = True
        while self._queue or self._in_flight:
            self._idle = asyncio.Event()
            self._schedule()
            await self._idle.wait()
        self._pool.shutdown(wait=True)

    # --- committing -------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._scheduled and not self._in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run_batch)

    def _run_batch(self) -> None:
        """Run the queued jobs in one transaction on this thread; COMMIT on the helper thread."""
        self._scheduled = False
        if self._in_flight or not self._queue:
            return
        n = min(len(self._queue), self.max_batch)
        batch = [self._queue.popleft() for _ in range(n)]
        self._in_flight = True
        self._in_flight_since = batch[0][2]
        t0 = time.perf_counter()
        try:
            results = self._run_jobs(batch)
        except Exception as exc:  # BEGIN failed, or the database is broken
            log.exception("a group of %d writes failed", len(batch))
            self._rollback()
            self._finish([(done, None, exc) for _, done, _ in batch], t0)
            return
        commit = asyncio.get_running_loop().run_in_executor(self._pool, self.conn.execute, "COMMIT")
        commit.add_done_callback(lambda f: self._committed(f, results, t0))

    def _run_jobs(self, batch: list[tuple[Job, Done, float]]) -> list[tuple[Done, Any, BaseException | None]]:
        """BEGIN, then each job. A job that raises before changing anything (a refusal:
        every job checks before it writes) is reported alone at no cost. One that raised
        after changing rows would leave half its work in the transaction: then the whole
        batch is rolled back and run again with a savepoint around each job."""
        conn = self.conn
        conn.execute(self._begin)
        results: list[tuple[Done, Any, BaseException | None]] = []
        for job, done, _ in batch:
            changes = conn.total_changes
            try:
                result = job(conn)
            except Exception as exc:
                if conn.total_changes != changes:
                    conn.execute("ROLLBACK")
                    self.rolled_back()
                    return self._run_isolated(batch)
                results.append((done, None, exc))
            else:
                results.append((done, result, None))
        return results

    def _run_isolated(self, batch: list[tuple[Job, Done, float]]) -> list[tuple[Done, Any, BaseException | None]]:
        conn = self.conn
        conn.execute(self._begin)
        results: list[tuple[Done, Any, BaseException | None]] = []
        for job, done, _ in batch:
            conn.execute("SAVEPOINT job")
            try:
                result = job(conn)
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                results.append((done, None, exc))
            else:
                conn.execute("RELEASE job")
                results.append((done, result, None))
        return results

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except Exception:
            pass
        self.rolled_back()

    def _committed(self, commit: asyncio.Future[Any], results: list[tuple[Done, Any, BaseException | None]],
                   t0: float) -> None:
        exc = commit.exception()
        if exc is not None:  # the disk failed (full, I/O error): nothing of the batch is durable
            log.error("group commit of %d jobs failed: %s", len(results), exc)
            self._rollback()
            results = [(done, None, exc) for done, _, _ in results]
        else:
            self.committed()
        self._finish(results, t0)

    def _finish(self, results: list[tuple[Done, Any, BaseException | None]], t0: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.jobs += len(results)
        stats.largest = max(stats.largest, len(results))
        stats.commit_s += time.perf_counter() - t0
        self._in_flight = False
        self._in_flight_since = None
        # The next batch first: its statements run and its COMMIT goes to the disk now, and
        # this batch's answers go out while that fsync runs.
        if self._queue:
            self._run_batch()
        elif self._idle is not None:
            self._idle.set()
        for done, result, exc in results:
            try:
                done(result, exc)
            except Exception:  # a callback's bug must not stop the others
                log.exception("write callback failed")
