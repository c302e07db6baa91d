"""docs/server.md "Batching, and what it costs": the group committer batches writes but keeps
the guarantees of one write at a time. Driven directly (no network), on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from reference_server.errors import ApiError
from reference_server.payloads import SendRequest
from reference_server.store import Page, Store
from reference_server.store.committer import GroupCommitter


class FailingCommit:
    """A sqlite3 connection whose next *fail* COMMITs raise, as a full disk would."""

    def __init__(self, conn: sqlite3.Connection, fail: int) -> None:
        self._conn = conn
        self.fail = fail

    def execute(self, sql: str, args: Any = ()) -> Any:
        if sql == "COMMIT" and self.fail > 0:
            self.fail -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, args)

    def __getattr__(self, name: str) -> Any:  # executemany, total_changes, close ...
        return getattr(self._conn, name)


def _conn(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(tmp_path / "c.sqlite3"), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    return conn


def _insert(k: str) -> Any:
    return lambda db: db.execute("INSERT INTO t VALUES (?, 1)", (k,)).rowcount


def _rows(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")]


async def test_many_writes_share_one_commit_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    committer: GroupCommitter[Any] = GroupCommitter(_conn(tmp_path))
    futures = [committer.call(_insert(f"k{i:02d}")) for i in range(50)]  # queued in one event-loop turn
    assert await asyncio.gather(*futures) == [1] * 50
    assert committer.stats.batches == 1 and committer.stats.jobs == 50
    assert len(_rows(committer.conn)) == 50
    await committer.close()


async def test_no_answer_before_the_commit_and_none_when_it_fails(tmp_path: Path) -> None:
    """An ack means durable: when the COMMIT fails, every write of the batch gets the
    error, and nothing of it is in the database."""
    conn = FailingCommit(_conn(tmp_path), fail=1)
    committer: GroupCommitter[Any] = GroupCommitter(conn)
    first = [committer.call(_insert(f"a{i}")) for i in range(5)]
    results = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert _rows(conn._conn) == []
    assert await committer.call(_insert("b")) == 1, "the next batch commits"
    assert _rows(conn._conn) == ["b"]
    await committer.close()


async def test_a_refusal_is_answered_alone_and_changes_nothing(tmp_path: Path) -> None:
    committer: GroupCommitter[Any] = GroupCommitter(_conn(tmp_path))

    def refuse(db: Any) -> None:
        raise ApiError(404, "not_found", "no such thing")

    results = await asyncio.gather(committer.call(_insert("x")), committer.call(refuse),
                                   committer.call(_insert("y")), return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], ApiError) and results[2] == 1
    assert committer.stats.batches == 1, "a refusal does not split the batch"
    assert _rows(committer.conn) == ["x", "y"]
    await committer.close()


async def test_a_job_failing_after_a_write_is_undone_alone(tmp_path: Path) -> None:
    """A job that raised after changing rows would leave half its work behind: the batch is
    rolled back and run again with a savepoint per job; the others are committed once."""
    committer: GroupCommitter[Any] = GroupCommitter(_conn(tmp_path))
    calls = {"x": 0}

    def counted_x(db: Any) -> int:
        calls["x"] += 1
        return int(db.execute("INSERT INTO t VALUES ('x', 1)").rowcount)

    def half(db: Any) -> None:
        db.execute("INSERT INTO t VALUES ('half', 1)")
        raise RuntimeError("bug after a write")

    results = await asyncio.gather(committer.call(counted_x), committer.call(half), committer.call(_insert("z")),
                                   return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], RuntimeError) and results[2] == 1
    assert _rows(committer.conn) == ["x", "z"], "the failing job's write is gone, the others are there once"
    assert calls["x"] == 2, "run again in the isolated pass"
    await committer.close()


async def test_a_job_sees_the_jobs_before_it_in_its_batch(tmp_path: Path) -> None:
    """Two sends with one client_msg_id in one batch: one message, the same ack twice."""
    store = await Store.open(tmp_path / "s.sqlite3")
    try:
        for u in ("alice", "bob"):
            await store.create_user(u, "x", 0)
        req = SendRequest("hi", "same-id", to="bob")
        a, b = await asyncio.gather(store.add_message("alice", req, 1), store.add_message("alice", req, 2))
        assert a.answer == b.answer and a.item is not None and b.item is None
        assert (await store.counts())["messages"] == 1
    finally:
        await store.close()


async def test_a_rolled_back_batch_leaves_nothing_in_the_caches(tmp_path: Path) -> None:
    """The store caches committed facts (users, conversations, group members). A group created
    in a batch whose COMMIT failed must not be known afterwards."""
    store = await Store.open(tmp_path / "s.sqlite3")
    try:
        for u in ("alice", "bob", "carol"):
            await store.create_user(u, "x", 0)
        real = store.committer.conn
        store.committer.conn = FailingCommit(real, fail=1)
        with pytest.raises(sqlite3.OperationalError):
            await store.create_group("alice", ["bob", "carol"], 0)
        store.committer.conn = real
        await store.create_user("dave", "x", 0)  # a batch that commits: the cache takes what it staged
        with pytest.raises(ApiError) as refused:
            await store.add_message("alice", SendRequest("hi", uuid.uuid4().hex, conversation="g:1"), 0)
        assert refused.value.status == 404, "the group never existed"
        assert await store.create_group("alice", ["bob", "carol"], 0) == "g:1"
        ok = await store.add_message("alice", SendRequest("hi", uuid.uuid4().hex, conversation="g:1"), 0)
        assert ok.answer["id"] == 1
    finally:
        await store.close()


async def test_concurrent_sends_reach_each_log_in_id_order(tmp_path: Path) -> None:
    """In-order per conversation under concurrency: message ids are taken in commit order, and
    fan-outs submitted in that order append in that order, whatever the batching."""
    store = await Store.open(tmp_path / "s.sqlite3")
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
