"""The reads. They run on the event loop's own read connection, synchronously: an
indexed lookup in SQLite's page cache takes microseconds, less than handing it to a
thread would. WAL lets them run while the writer thread commits; each read that
looks at more than one statement runs in one read transaction, so it sees one
committed state.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from chatcore import Cursor

from .schema import TABLES
from .types import Expired, Item, Page
from .writes import BUILDERS, check_member, members, one

Db = sqlite3.Connection


class Reads:
    def __init__(self, db: Db, epoch: str) -> None:
        self.db = db
        self.epoch = epoch

    def _tx(self) -> "_ReadTx":
        return _ReadTx(self.db)

    # --- users and tokens ------------------------------------------------------------
    def password_hash(self, name: str) -> str | None:
        return one(self.db, "SELECT pw_hash FROM users WHERE name=?", name)

    def missing_users(self, names: list[str]) -> list[str]:
        return [n for n in names if one(self.db, "SELECT 1 FROM users WHERE name=?", n) is None]

    def visible_to(self, viewer: str, owners: list[str]) -> set[str]:
        """Those of *owners* whose presence *viewer* may see: itself, and whoever has sent a
        message in a conversation *viewer* is in."""
        return {o for o in owners if o == viewer
                or one(self.db, "SELECT 1 FROM contacts WHERE owner=? AND viewer=?", o, viewer) is not None}

    def token_owner(self, token_hash: str, now_ms: int) -> tuple[str, int] | None:
        row = self.db.execute("SELECT user, expires_at FROM tokens WHERE token_hash=?", (token_hash,)).fetchone()
        return None if row is None or row[1] <= now_ms else (row[0], row[1])

    # --- history -------------------------------------------------------------------------
    def history(self, user: str, conversation: str, before: int | None, limit: int) -> dict[str, Any]:
        with self._tx():
            check_member(self.db, user, conversation)
            rows = self.db.execute(
                "SELECT id, sender, body, client_msg_id, sent_at FROM messages "
                "WHERE conversation=? AND id<? ORDER BY id DESC LIMIT ?",
                (conversation, before if before is not None else 2 ** 62, limit + 1)).fetchall()
            has_more = len(rows) > limit
            messages = [{"id": r[0], "conversation": conversation, "sender": r[1], "body": r[2],
                         "client_msg_id": r[3], "sent_at": r[4]} for r in reversed(rows[:limit])]
            receipts: dict[str, dict[str, int]] = {m: {"delivered": 0, "read": 0}
                                                   for m in members(self.db, conversation)}
            for u, status, up_to in self.db.execute(
                    "SELECT user, status, up_to FROM receipts WHERE conversation=?", (conversation,)):
                receipts[u][status] = up_to
        for r in receipts.values():  # read implies delivered
            r["delivered"] = max(r["delivered"], r["read"])
        return {"conversation": conversation, "members": sorted(receipts),
                "messages": messages, "has_more": has_more, "receipts": receipts}

    # --- event logs ------------------------------------------------------------------------
    def _state(self, user: str) -> tuple[int, int]:
        row = self.db.execute("SELECT last_seq, trimmed_up_to FROM users WHERE name=?", (user,)).fetchone()
        return (0, 0) if row is None else (row[0], row[1])

    def _rows_to_events(self, rows: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
        return [BUILDERS[kind](str(Cursor(self.epoch, seq)), *json.loads(args)) for seq, kind, args in rows]

    def _range(self, user: str, after_seq: int, upto_seq: int, limit: int) -> list[tuple[int, str, str]]:
        return self.db.execute(
            "SELECT seq, kind, args FROM events WHERE user=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (user, after_seq, upto_seq, limit)).fetchall()

    def read_events(self, user: str, after: Cursor | None, limit: int) -> Page | Expired:
        """Events after *after* (from the start of the retained log when None), at most *limit*.
        A cursor from another epoch, below the trimmed history or beyond the newest event
        gives :class:`Expired`: the caller must say so, never replay partially."""
        with self._tx():
            last, trimmed = self._state(user)
            if after is None:
                start = trimmed
            elif after.epoch != self.epoch or not trimmed <= after.seq <= last:
                return Expired(Cursor(self.epoch, last))
            else:
                start = after.seq
            rows = self._range(user, start, last, limit)
        end = rows[-1][0] if rows else start
        return Page(self._rows_to_events(rows), Cursor(self.epoch, end), last)

    def events_between(self, user: str, after_seq: int, upto_seq: int) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, event)`` for after_seq < seq <= upto_seq (a WebSocket filling a gap)."""
        rows = self._range(user, after_seq, upto_seq, max(0, upto_seq - after_seq))
        return list(zip([r[0] for r in rows], self._rows_to_events(rows)))

    def current_cursor(self, user: str) -> Cursor:
        return Cursor(self.epoch, self._state(user)[0])

    # --- the outbox and counts ---------------------------------------------------------------
    def pending_outbox(self, created_before_ms: int | None = None) -> list[Item]:
        """Outbox rows not yet fanned out, oldest first (to queue again); only those created
        before *created_before_ms* when given."""
        rows = self.db.execute("SELECT id, item FROM outbox WHERE created_at<? ORDER BY id",
                               (2 ** 62 if created_before_ms is None else created_before_ms,))
        return [Item(r[0], json.loads(r[1])) for r in rows]

    def counts(self) -> dict[str, int]:
        """Row count of every table: tests use it to show a refused request stored nothing."""
        with self._tx():
            return {t: one(self.db, f"SELECT COUNT(*) FROM {t}") for t in TABLES}


class _ReadTx:
    """``BEGIN`` ... ``COMMIT`` on the read connection: one snapshot for several statements."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, *exc: object) -> None:
        self.db.execute("COMMIT")
