"""Durable state in SQLite (WAL): users, tokens, conversations, messages, receipts, the
per-user event logs and the outbox.

Two connections to one database file:

* **writes** go to a :class:`~.committer.GroupCommitter`: every write queued since the
  last commit runs in one transaction (group commit), whose COMMIT and fsync happen on
  a helper thread while the event loop goes on; then all the results come back at
  once. A write's answer (a send's ack) exists only after the COMMIT that made it durable.
* **reads** run on the event loop's own connection (:mod:`.reads`), synchronously.

The rules each write keeps (cursor never skips, idempotent send, receipts only move
forward, the outbox) are in :mod:`.writes`. See docs/server.md.

    store = await Store.open(path)
    stored = await store.add_message("alice", SendRequest("hi", "c1", to="bob"), now_ms)
    fan = await store.fan_out([stored.item])
    await store.close()
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

from chatcore import Cursor

from ..payloads import ReceiptRequest, SendRequest
from . import schema
from .committer import Done, GroupCommitter
from .reads import Reads
from .types import Expired, FanOut, Item, Page, Stored
from .writes import Writes

__all__ = ["Expired", "FanOut", "Item", "Page", "Store", "Stored"]


class Store:
    """SQLite persistence. Create with :meth:`open`, end with :meth:`close`."""

    def __init__(self, committer: GroupCommitter[Any], reads: Reads, writes: Writes) -> None:
        self._committer = committer
        self._reads = reads
        self._writes = writes
        self.epoch = reads.epoch
        self.retention = writes.retention

    # --- life cycle ---------------------------------------------------------------------
    @classmethod
    async def open(cls, path: Path, retention: int = 10_000, synchronous: str = "FULL") -> "Store":
        """Open (creating if needed) the database at *path*; a new database gets a new epoch."""
        path = Path(path)
        loop = asyncio.get_running_loop()
        write_db = await loop.run_in_executor(None, partial(schema.connect, path, synchronous))
        try:
            read_db = await loop.run_in_executor(None, partial(schema.connect, path, synchronous, create=False))
        except BaseException:
            write_db.close()
            raise
        read_db.execute("PRAGMA query_only=ON")
        epoch = schema.epoch_of(read_db)
        writes = Writes(epoch, retention)
        committer: GroupCommitter[Any] = GroupCommitter(write_db, name="sqlite-commit",
                                                        on_commit=writes.commit_staged,
                                                        on_rollback=writes.drop_staged)
        return cls(committer, Reads(read_db, epoch), writes)

    async def close(self) -> None:
        """Commit what is queued and close both connections."""
        await self._committer.close()
        self._committer.conn.close()
        self._reads.db.close()

    @property
    def committer(self) -> GroupCommitter[Any]:
        """The writer: its queue depth and batch statistics (admission control, metrics)."""
        return self._committer

    # --- writes (group-committed) ----------------------------------------------------------
    async def create_user(self, name: str, pw_hash: str, now_ms: int) -> bool:
        """Insert a user; False when the name is taken (nothing changes then)."""
        return await self._committer.call(partial(self._writes.create_user, name=name, pw_hash=pw_hash,
                                                  now_ms=now_ms))

    async def save_token(self, token_hash: str, user: str, expires_at_ms: int) -> None:
        await self._committer.call(partial(self._writes.save_token, token_hash=token_hash, user=user,
                                           expires_at_ms=expires_at_ms))

    async def create_group(self, creator: str, members: list[str], now_ms: int) -> str:
        """Create ``g:<n>`` with *creator* and *members*; 404 if one is not registered."""
        from ..errors import bad_request

        everyone = sorted(set(members) | {creator})
        if len(everyone) < 2:
            raise bad_request("members: a group needs at least one other user")
        return await self._committer.call(partial(self._writes.create_group, everyone=everyone, now_ms=now_ms))

    def submit_message(self, sender: str, req: SendRequest, now_ms: int, done: Done) -> None:
        """Queue a send; *done(Stored | None, error | None)* runs on the event loop after the
        commit. For callers that must not wait (a WebSocket reading its next frame)."""
        self._committer.submit(partial(self._writes.add_message, sender=sender, req=req, now_ms=now_ms), done)

    async def add_message(self, sender: str, req: SendRequest, now_ms: int) -> Stored:
        """Store a message (idempotent per ``(sender, client_msg_id)``)."""
        return await self._committer.call(partial(self._writes.add_message, sender=sender, req=req, now_ms=now_ms))

    def submit_receipt(self, user: str, req: ReceiptRequest, now_ms: int, done: Done) -> None:
        self._committer.submit(partial(self._writes.add_receipt, user=user, req=req, now_ms=now_ms), done)

    async def add_receipt(self, user: str, req: ReceiptRequest, now_ms: int) -> Stored:
        """Advance *user*'s watermark (receipts only move forward)."""
        return await self._committer.call(partial(self._writes.add_receipt, user=user, req=req, now_ms=now_ms))

    async def fan_out(self, items: list[Item]) -> FanOut:
        """Append the events of *items* to their recipients' logs in one transaction."""
        return await self._committer.call(partial(self._writes.fan_out, items=items))

    def submit_fan_out(self, items: list[Item], done: Done) -> None:
        """:meth:`fan_out` without waiting: *done(FanOut | None, error | None)* after the commit."""
        self._committer.submit(partial(self._writes.fan_out, items=items), done)

    def submit_presence(self, user: str, status: str, at_ms: int, done: Done) -> None:
        """Queue a presence change (an outbox row); *done(Item, error)* after the commit."""
        self._committer.submit(partial(self._writes.add_presence, user=user, status=status, at_ms=at_ms), done)

    async def drop_outbox(self, outbox_ids: list[int]) -> None:
        """Forget the outbox rows of dead-lettered items."""
        await self._committer.call(partial(self._writes.drop_outbox, outbox_ids=outbox_ids))

    # --- reads (the event loop's connection) ---------------------------------------------------
    async def password_hash(self, name: str) -> str | None:
        return self._reads.password_hash(name)

    async def missing_users(self, names: list[str]) -> list[str]:
        """Those of *names* that are not registered."""
        return self._reads.missing_users(names)

    async def visible_to(self, viewer: str, owners: list[str]) -> set[str]:
        """Those of *owners* whose presence *viewer* may see (presence by participation)."""
        return self._reads.visible_to(viewer, owners)

    async def token_owner(self, token_hash: str, now_ms: int) -> tuple[str, int] | None:
        """``(user, expires_at_ms)`` for a live token, else None."""
        return self._reads.token_owner(token_hash, now_ms)

    async def history(self, user: str, conversation: str, before: int | None, limit: int) -> dict[str, Any]:
        """Up to *limit* messages with id < *before* (all if None), oldest first, plus every
        member's receipt watermarks."""
        return self._reads.history(user, conversation, before, limit)

    async def read_events(self, user: str, after: Cursor | None, limit: int) -> Page | Expired:
        """Events after *after*, at most *limit*; :class:`Expired` when it cannot be resumed."""
        return self._reads.read_events(user, after, limit)

    async def events_between(self, user: str, after_seq: int, upto_seq: int) -> list[tuple[int, dict[str, Any]]]:
        return self._reads.events_between(user, after_seq, upto_seq)

    async def current_cursor(self, user: str) -> Cursor:
        return self._reads.current_cursor(user)

    async def pending_outbox(self, created_before_ms: int | None = None) -> list[Item]:
        """Outbox rows not yet fanned out (to queue again at start-up, after Redis lost them,
        or when older than the visibility timeout)."""
        return self._reads.pending_outbox(created_before_ms)

    async def counts(self) -> dict[str, int]:
        return self._reads.counts()
