"""Durable state: users, tokens, conversations, messages, receipts, the per-user event logs,
who may see whom, and the outbox. One interface, two databases:

* **SQLite** (the default, a file under ``--data-dir``): one write connection used by a
  :class:`~.committer.GroupCommitter` (statements on the event loop, COMMIT and its fsync on
  a helper thread), one read connection used synchronously by the event loop. WAL mode.
* **PostgreSQL** (``--db postgresql://...``, for several server processes): an
  :class:`~.committer.AsyncGroupCommitter` on one asyncio connection for writes, a small
  pool for reads.

Writes are group-committed: every write queued since the last COMMIT runs in one
transaction, and each is answered after that COMMIT. The transactions themselves are
sans-I/O generators (:mod:`.writes`, :mod:`.reads`), the same for both databases, and keep
the rules (cursor never skips, idempotent send, receipts only move forward, the outbox).
See docs/server.md.

    store = await Store.open(path_or_url)
    stored = await store.add_message("alice", SendRequest("hi", "c1", to="bob"), now_ms)
    fan = await store.fan_out([stored.item])
    await store.close()
"""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any, Callable

from chatcore import Cursor

from ..errors import bad_request
from ..payloads import ReceiptRequest, SendRequest
from . import postgres, reads, schema
from .committer import AsyncGroupCommitter, Done, GroupCommitter
from .ops import Tx, drive, drive_async
from .types import Expired, FanOut, Item, Page, Stored
from .writes import Writes

__all__ = ["Expired", "FanOut", "Item", "Page", "Store", "Stored"]


class _Sqlite:
    """Reads on the event loop's own connection, in one read transaction each."""

    def __init__(self, read_db: sqlite3.Connection) -> None:
        self.db = read_db

    async def read(self, tx: Tx[Any]) -> Any:
        self.db.execute("BEGIN")
        try:
            return drive(tx, self.db)
        finally:
            self.db.execute("COMMIT")

    async def close(self) -> None:
        self.db.close()


class _Postgres:
    """Reads on a pooled connection, each in a REPEATABLE READ READ ONLY transaction."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def read(self, tx: Tx[Any]) -> Any:
        async with self.pool.connection() as conn:
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return await drive_async(tx, conn)
            finally:
                await conn.execute("COMMIT")

    async def close(self) -> None:
        await self.pool.close()


class Store:
    """The store. Create with :meth:`open`, end with :meth:`close`."""

    def __init__(self, committer: GroupCommitter | AsyncGroupCommitter, reader: _Sqlite | _Postgres,
                 writes: Writes, where: str) -> None:
        self._committer = committer
        self._reader = reader
        self._writes = writes
        self.epoch = writes.epoch
        self.retention = writes.retention
        #: The SQLite file or the PostgreSQL URL (without its password).
        self.where = where

    # --- life cycle ---------------------------------------------------------------------
    @classmethod
    async def open(cls, where: Path | str, retention: int = 10_000, synchronous: str = "FULL",
                   monotonic: Callable[[], float] | None = None) -> "Store":
        """Open (creating the schema if needed) the SQLite file *where*, or the PostgreSQL
        database when *where* is a ``postgresql://`` URL. A new database gets a new epoch.
        *monotonic* stamps queued writes (the server's injected clock; default the real one)."""
        store = await cls._open(where, retention, synchronous)
        if monotonic is not None:
            store.committer.monotonic = monotonic
        return store

    @classmethod
    async def _open(cls, where: Path | str, retention: int, synchronous: str) -> "Store":
        if postgres.is_url(where):
            return await cls._open_postgres(str(where), retention)
        path = Path(where)
        loop = asyncio.get_running_loop()
        write_db = await loop.run_in_executor(None, partial(schema.connect, path, synchronous))
        try:
            read_db = await loop.run_in_executor(None, partial(schema.connect, path, synchronous, create=False))
        except BaseException:
            write_db.close()
            raise
        read_db.execute("PRAGMA query_only=ON")
        writes = Writes(schema.epoch_of(read_db), retention)
        committer = GroupCommitter(write_db, name="sqlite-commit", on_commit=writes.commit_staged,
                                   on_rollback=writes.drop_staged, database_errors=(sqlite3.Error,))
        return cls(committer, _Sqlite(read_db), writes, str(path))

    @classmethod
    async def _open_postgres(cls, url: str, retention: int) -> "Store":
        import psycopg

        write_db = await postgres.connect(url)
        pool = postgres.read_pool(url)
        try:
            await pool.open(wait=True, timeout=10)
            writes = Writes(await postgres.epoch_of(write_db), retention)
        except BaseException:
            await write_db.close()
            await pool.close()
            raise
        committer = AsyncGroupCommitter(write_db, on_commit=writes.commit_staged, on_rollback=writes.drop_staged,
                                        database_errors=(psycopg.Error,))
        committer.start()
        where = psycopg.conninfo.make_conninfo(url, password="") if "@" in url else url
        return cls(committer, _Postgres(pool), writes, where)

    async def close(self) -> None:
        """Commit what is queued and close the connections."""
        await self._committer.close()
        conn = self._committer.conn
        result = conn.close()
        if asyncio.iscoroutine(result):
            await result
        await self._reader.close()

    @property
    def committer(self) -> GroupCommitter | AsyncGroupCommitter:
        """The writer: its queue depth and batch statistics (admission control, metrics)."""
        return self._committer

    def _submit(self, tx: Callable[[], Tx[Any]], done: Done) -> None:
        self._committer.submit(tx, done)

    async def _write(self, tx: Callable[[], Tx[Any]]) -> Any:
        return await self._committer.call(tx)

    async def _read(self, tx: Tx[Any]) -> Any:
        return await self._reader.read(tx)

    # --- writes (group-committed) ----------------------------------------------------------
    async def create_user(self, name: str, pw_hash: str, now_ms: int) -> bool:
        """Insert a user; False when the name is taken (nothing changes then)."""
        return bool(await self._write(partial(self._writes.create_user, name, pw_hash, now_ms)))

    async def save_token(self, token_hash: str, user: str, expires_at_ms: int) -> None:
        await self._write(partial(self._writes.save_token, token_hash, user, expires_at_ms))

    async def revoke_token(self, token_hash: str) -> None:
        await self._write(partial(self._writes.revoke_token, token_hash))

    async def prune_tokens(self, now_ms: int) -> int:
        """Delete expired tokens; returns how many."""
        return int(await self._write(partial(self._writes.prune_tokens, now_ms)))

    async def create_group(self, creator: str, members: list[str], now_ms: int) -> str:
        """Create ``g:<n>`` with *creator* and *members*; 404 if one is not registered."""
        everyone = sorted(set(members) | {creator})
        if len(everyone) < 2:
            raise bad_request("members: a group needs at least one other user")
        return str(await self._write(partial(self._writes.create_group, everyone, now_ms)))

    def submit_message(self, sender: str, req: SendRequest, now_ms: int, done: Done) -> None:
        """Queue a send; *done(Stored | None, error | None)* runs on the event loop after the
        commit. For callers that must not wait (a WebSocket reading its next frame)."""
        self._submit(partial(self._writes.add_message, sender, req, now_ms), done)

    async def add_message(self, sender: str, req: SendRequest, now_ms: int) -> Stored:
        """Store a message (idempotent per ``(sender, client_msg_id)``)."""
        stored: Stored = await self._write(partial(self._writes.add_message, sender, req, now_ms))
        return stored

    def submit_receipt(self, user: str, req: ReceiptRequest, now_ms: int, done: Done) -> None:
        self._submit(partial(self._writes.add_receipt, user, req, now_ms), done)

    async def add_receipt(self, user: str, req: ReceiptRequest, now_ms: int) -> Stored:
        """Advance *user*'s watermark (receipts only move forward)."""
        stored: Stored = await self._write(partial(self._writes.add_receipt, user, req, now_ms))
        return stored

    def submit_presence(self, user: str, status: str, at_ms: int, done: Done) -> None:
        """Queue a presence change (an outbox row); *done(Item, error)* after the commit."""
        self._submit(partial(self._writes.add_presence, user, status, at_ms), done)

    async def fan_out(self, items: list[Item]) -> FanOut:
        """Append the events of *items* to their recipients' logs in one transaction."""
        fan: FanOut = await self._write(partial(self._writes.fan_out, items))
        return fan

    def submit_fan_out(self, items: list[Item], done: Done) -> None:
        """:meth:`fan_out` without waiting: *done(FanOut | None, error | None)* after the commit."""
        self._submit(partial(self._writes.fan_out, items), done)

    async def drop_outbox(self, outbox_ids: list[int]) -> None:
        """Forget the outbox rows of dead-lettered items."""
        await self._write(partial(self._writes.drop_outbox, outbox_ids))

    # --- reads -------------------------------------------------------------------------------
    async def password_hash(self, name: str) -> str | None:
        result: str | None = await self._read(reads.password_hash(name))
        return result

    async def missing_users(self, names: list[str]) -> list[str]:
        """Those of *names* that are not registered."""
        result: list[str] = await self._read(reads.missing_users(names))
        return result

    async def visible_to(self, viewer: str, owners: list[str]) -> set[str]:
        """Those of *owners* whose presence *viewer* may see (presence by participation)."""
        result: set[str] = await self._read(reads.visible_to(viewer, owners))
        return result

    async def token_owner(self, token_hash: str, now_ms: int) -> tuple[str, int] | None:
        """``(user, expires_at_ms)`` for a live token, else None."""
        result: tuple[str, int] | None = await self._read(reads.token_owner(token_hash, now_ms))
        return result

    async def history(self, user: str, conversation: str, before: int | None, limit: int) -> dict[str, Any]:
        """Up to *limit* messages with id < *before* (all if None), oldest first, plus every
        member's receipt watermarks."""
        result: dict[str, Any] = await self._read(reads.history(user, conversation, before, limit))
        return result

    async def read_events(self, user: str, after: Cursor | None, limit: int) -> Page | Expired:
        """Events after *after*, at most *limit*; :class:`Expired` when it cannot be resumed."""
        result: Page | Expired = await self._read(reads.read_events(self.epoch, user, after, limit))
        return result

    async def events_between(self, user: str, after_seq: int, upto_seq: int) -> list[tuple[int, dict[str, Any]]]:
        result: list[tuple[int, dict[str, Any]]] = await self._read(
            reads.events_between(self.epoch, user, after_seq, upto_seq))
        return result

    async def current_cursor(self, user: str) -> Cursor:
        return Cursor(self.epoch, await self._read(reads.current_seq(user)))

    async def pending_outbox(self, created_before_ms: int | None = None) -> list[Item]:
        """Outbox rows not yet fanned out (to queue again at start-up, after Redis lost them,
        or when older than the visibility timeout)."""
        result: list[Item] = await self._read(reads.pending_outbox(created_before_ms))
        return result

    async def counts(self) -> dict[str, int]:
        result: dict[str, int] = await self._read(reads.counts())
        return result
