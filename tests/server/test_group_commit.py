"""docs/server.md "Batching, and what it costs": the group committer batches writes but keeps
the guarantees of one write at a time. Driven directly (no network), on a real SQLite file
and a real PostgreSQL database (each test makes its own)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from reference_server.errors import ApiError
from reference_server.payloads import SendRequest
from reference_server.store import Page, Store
from reference_server.store.committer import AsyncGroupCommitter, GroupCommitter
from reference_server.store.ops import Exec, One, Tx


class FailingCommit:
    """A connection (sqlite3, or psycopg's async one) whose next *fail* COMMITs raise, as a
    full disk would."""

    def __init__(self, conn: Any, fail: int) -> None:
        self._conn = conn
        self.fail = fail

    def execute(self, sql: str, *args: Any, **kw: Any) -> Any:
        if sql == "COMMIT" and self.fail > 0:
            self.fail -= 1
            if isinstance(self._conn, sqlite3.Connection):
                raise sqlite3.OperationalError("disk I/O error")
            import psycopg

            async def fail() -> None:
                raise psycopg.OperationalError("could not write to file: No space left on device")
            return fail()
        return self._conn.execute(sql, *args, **kw)

    def __getattr__(self, name: str) -> Any:  # executemany, cursor, close ...
        return getattr(self._conn, name)


class Table:
    """A committer on a one-table database of the parametrized kind, and a way to look."""

    def __init__(self, committer: Any, rows: Callable[[], Awaitable[list[str]]], real: Any) -> None:
        self.committer = committer
        self.rows = rows
        self.real = real


@pytest.fixture
async def table(new_database) -> AsyncIterator[Table]:  # type: ignore[no-untyped-def]
    where = await new_database()
    if isinstance(where, Path):
        conn = sqlite3.connect(str(where), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")

        async def rows() -> list[str]:
            return [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")]
        committer: Any = GroupCommitter(conn, database_errors=(sqlite3.Error,))
        yield Table(committer, rows, conn)
        await committer.close()
        conn.close()
        return
    import psycopg

    conn = await psycopg.AsyncConnection.connect(where, autocommit=True)
    await conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    look = await psycopg.AsyncConnection.connect(where, autocommit=True)

    async def pg_rows() -> list[str]:
        cur = await look.execute("SELECT k FROM t ORDER BY k")
        return [r[0] for r in await cur.fetchall()]
    committer = AsyncGroupCommitter(conn, database_errors=(psycopg.Error,))
    committer.start()
    yield Table(committer, pg_rows, conn)
    await committer.close()
    await conn.close()
    await look.close()


def _insert(k: str) -> Any:
    """A transaction factory: one INSERT, answering its row count."""
    def tx() -> Tx[int]:
        return (yield Exec("INSERT INTO t VALUES (?, 1)", k))
    return tx


async def test_many_writes_share_one_commit_and_each_gets_its_own_answer(table: Table) -> None:
    committer = table.committer
    futures = [committer.call(_insert(f"k{i:02d}")) for i in range(50)]  # queued in one event-loop turn
    assert await asyncio.gather(*futures) == [1] * 50
    assert committer.stats.batches == 1 and committer.stats.jobs == 50
    assert len(await table.rows()) == 50


async def test_no_answer_before_the_commit_and_none_when_it_fails(table: Table) -> None:
    """An ack means durable: when the COMMIT fails, every write of the batch gets the
    error, and nothing of it is in the database."""
    table.committer.conn = FailingCommit(table.real, fail=1)
    first = [table.committer.call(_insert(f"a{i}")) for i in range(5)]
    results = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(r, Exception) and not isinstance(r, ApiError) for r in results), results
    assert await table.rows() == []
    assert await table.committer.call(_insert("b")) == 1, "the next batch commits"
    assert await table.rows() == ["b"]


async def test_a_refusal_is_answered_alone_and_changes_nothing(table: Table) -> None:
    committer = table.committer

    def refuse() -> Tx[None]:
        yield One("SELECT 1")
        raise ApiError(404, "not_found", "no such thing")

    results = await asyncio.gather(committer.call(_insert("x")), committer.call(refuse),
                                   committer.call(_insert("y")), return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], ApiError) and results[2] == 1
    assert committer.stats.batches == 1, "a refusal does not split the batch"
    assert await table.rows() == ["x", "y"]


async def test_a_job_failing_after_a_write_is_undone_alone(table: Table) -> None:
    """A transaction that raised after changing rows would leave half its work behind: the
    batch is rolled back and run again with a savepoint per transaction; the others are
    committed once."""
    committer = table.committer
    calls = {"x": 0}

    def counted_x() -> Tx[int]:
        calls["x"] += 1
        return (yield Exec("INSERT INTO t VALUES ('x', 1)"))

    def half() -> Tx[None]:
        yield Exec("INSERT INTO t VALUES ('half', 1)")
        raise RuntimeError("bug after a write")

    def duplicate() -> Tx[None]:  # a database error: on PostgreSQL it breaks the transaction
        yield Exec("INSERT INTO t VALUES ('x', 2)")

    results = await asyncio.gather(committer.call(counted_x), committer.call(half), committer.call(_insert("z")),
                                   committer.call(duplicate), return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], RuntimeError) and results[2] == 1
    assert isinstance(results[3], Exception) and not isinstance(results[3], RuntimeError)
    assert await table.rows() == ["x", "z"], "the failing jobs' writes are gone, the others are there once"
    assert calls["x"] == 2, "run again in the isolated pass"


async def test_a_job_sees_the_jobs_before_it_in_its_batch(new_database) -> None:
    """Two sends with one client_msg_id in one batch: one message, the same ack twice."""
    store = await Store.open(await new_database())
    try:
        for u in ("alice", "bob"):
            await store.create_user(u, "x", 0)
        req = SendRequest("hi", "same-id", to="bob")
        a, b = await asyncio.gather(store.add_message("alice", req, 1), store.add_message("alice", req, 2))
        assert a.answer == b.answer and a.item is not None and b.item is None
        assert (await store.counts())["messages"] == 1
    finally:
        await store.close()


async def test_a_rolled_back_batch_leaves_nothing_in_the_caches(new_database) -> None:
    """The store caches committed facts (users, conversations, group members). A group created
    in a batch whose COMMIT failed must not be known afterwards."""
    store = await Store.open(await new_database())
    try:
        for u in ("alice", "bob", "carol"):
            await store.create_user(u, "x", 0)
        real = store.committer.conn
        store.committer.conn = FailingCommit(real, fail=1)
        with pytest.raises(Exception) as failed:
            await store.create_group("alice", ["bob", "carol"], 0)
        assert not isinstance(failed.value, ApiError)
        store.committer.conn = real
        await store.create_user("dave", "x", 0)  # a batch that commits: the cache takes what it staged
        with pytest.raises(ApiError) as refused:
            await store.add_message("alice", SendRequest("hi", uuid.uuid4().hex, conversation="g:1"), 0)
        assert refused.value.status == 404, "the group never existed"
        # g:1 again on SQLite; g:2 on PostgreSQL, whose sequences do not roll back.
        group = await store.create_group("alice", ["bob", "carol"], 0)
        ok = await store.add_message("alice", SendRequest("hi", uuid.uuid4().hex, conversation=group), 0)
        assert ok.answer["id"] == 1
    finally:
        await store.close()


async def test_concurrent_sends_reach_each_log_in_id_order(new_database) -> None:
    """In-order per conversation under concurrency: message ids are taken in commit order, and
    fan-outs submitted in that order append in that order, whatever the batching."""
    store = await Store.open(await new_database())
    try:
        users = ["alice", "bob", "carol", "dave"]
        for u in users:
            await store.create_user(u, "x", 0)
        group = await store.create_group("alice", users[1:], 0)
        fanned: list[asyncio.Future[Any]] = []

        async def sender(u: str, n: int) -> None:
            for i in range(n):
                stored = await store.add_message(u, SendRequest(f"{u}{i}", uuid.uuid4().hex, conversation=group), i)
                assert stored.item is not None
                fanned.append(asyncio.ensure_future(store.fan_out([stored.item])))
                if i % 3 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(sender(u, 40) for u in users))
        await asyncio.gather(*fanned)
        assert store.committer.stats.largest > 1, "the test must exercise batches"
        for u in users:
            page = await store.read_events(u, None, 500)
            assert isinstance(page, Page)
            ids = [e["id"] for e in page.events if e["type"] == "message"]
            assert ids == sorted(ids) and len(ids) == 3 * 40, u
    finally:
        await store.close()
