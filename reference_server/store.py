"""Durable state in SQLite (WAL): users, tokens, conversations, messages, receipts,
the per-user event logs and the outbox.

Threading: one connection, used only by one worker thread (a single-thread
executor). Every public method is a coroutine that runs one short transaction
in that thread, so the event loop never waits on the disk and SQLite never sees
two writers ("database is locked" cannot happen). See docs/server.md.

The invariant that makes cursors safe (Synapse #1449): a user's event sequence
``users.last_seq`` is incremented inside the same transaction that inserts the
event, and transactions run one after another, so when event *n* is visible to
a reader every event below *n* is visible too. A cursor never skips.

Outbox: a message or receipt is inserted together with an ``outbox`` row in one
transaction. The delivery service deletes that row in the transaction that
appends the fan-out events, and rows still present at start-up are queued
again, so a crash between the commit and the Redis XADD loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, TypeVar

from chatcore import Cursor, ack_body, message_event, presence_event, receipt_event

from .errors import bad_request, forbidden, not_found
from .payloads import DM_RE, ReceiptRequest, SendRequest, dm_id

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, pw_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,      -- newest event in this user's log
    trimmed_up_to INTEGER NOT NULL DEFAULT 0  -- events at or below were deleted
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, last_msg_id INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS group_ids (n INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE TABLE IF NOT EXISTS members (
    conversation TEXT NOT NULL REFERENCES conversations(id), user TEXT NOT NULL REFERENCES users(name),
    PRIMARY KEY (conversation, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(user, conversation);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL, id INTEGER NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
    client_msg_id TEXT NOT NULL, sent_at INTEGER NOT NULL,
    PRIMARY KEY (conversation, id),
    UNIQUE (sender, client_msg_id)            -- idempotency: one message per client id
);
CREATE TABLE IF NOT EXISTS receipts (
    conversation TEXT NOT NULL, user TEXT NOT NULL, status TEXT NOT NULL,
    up_to INTEGER NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (conversation, user, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    user TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    source_key TEXT NOT NULL,                 -- what caused it; makes fan-out idempotent
    args TEXT NOT NULL,                       -- JSON list: the chatcore builder's arguments
    PRIMARY KEY (user, seq),
    UNIQUE (user, source_key)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL
);
"""

_BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "message": message_event, "receipt": receipt_event, "presence": presence_event,
}


@dataclass(frozen=True)
class Page:
    """Events after a cursor, and the cursor to ask from next time."""

    events: list[dict[str, Any]]
    cursor: Cursor
    last_seq: int


@dataclass(frozen=True)
class Expired:
    """The cursor cannot be resumed (other epoch, trimmed, or never issued)."""

    current: Cursor


@dataclass(frozen=True)
class Stored:
    """Result of a write that the delivery service must fan out: the answer to give
    the client, and the outbox row to queue (``None`` when nothing new was stored)."""

    answer: dict[str, Any]
    outbox_id: int | None
    item: dict[str, Any] | None


class Store:
    """SQLite persistence. Create with :meth:`open`; every method is a coroutine."""

    def __init__(self, conn: sqlite3.Connection, pool: ThreadPoolExecutor, epoch: str,
                 retention: int) -> None:
        self._db = conn
        self._pool = pool
        self.epoch = epoch
        self.retention = retention

    # --- life cycle -------------------------------------------------------------
    @classmethod
    async def open(cls, path: Path, retention: int = 10_000) -> "Store":
        """Open (creating if needed) the database at *path*; a new database gets a new epoch."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

        def _open() -> tuple[sqlite3.Connection, str]:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (secrets.token_hex(4),))
            epoch = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
            return conn, epoch

        conn, epoch = await asyncio.get_running_loop().run_in_executor(pool, _open)
        return cls(conn, pool, epoch, retention)

    async def close(self) -> None:
        await self._call(self._db.close)
        self._pool.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    def _tx(self, fn: Callable[..., T], *args: Any) -> T:
        """Run *fn* in one write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(*args)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    def _one(self, sql: str, *args: Any) -> Any:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # --- users and tokens ---------------------------------------------------------
    async def create_user(self, name: str, pw_hash: str, now_ms: int) -> bool:
        """Insert a user; False when the name is taken (nothing changes then)."""
        def run() -> bool:
            cur = self._db.execute("INSERT OR IGNORE INTO users(name, pw_hash, created_at) VALUES (?,?,?)",
                                   (name, pw_hash, now_ms))
            return cur.rowcount == 1
        return await self._call(self._tx, run)

    async def password_hash(self, name: str) -> str | None:
        return await self._call(self._one, "SELECT pw_hash FROM users WHERE name=?", name)

    async def missing_users(self, names: list[str]) -> list[str]:
        """Those of *names* that are not registered."""
        def run() -> list[str]:
            return [n for n in names if self._one("SELECT 1 FROM users WHERE name=?", n) is None]
        return await self._call(run)

    async def save_token(self, token_hash: str, user: str, expires_at_ms: int) -> None:
        def run() -> None:
            self._db.execute("INSERT INTO tokens VALUES (?,?,?)", (token_hash, user, expires_at_ms))
        await self._call(self._tx, run)

    async def token_owner(self, token_hash: str, now_ms: int) -> tuple[str, int] | None:
        """``(user, expires_at_ms)`` for a live token, else None."""
        def run() -> tuple[str, int] | None:
            row = self._db.execute("SELECT user, expires_at FROM tokens WHERE token_hash=?",
                                   (token_hash,)).fetchone()
            return None if row is None or row[1] <= now_ms else (row[0], row[1])
        return await self._call(run)

    # --- conversations ------------------------------------------------------------
    def _members(self, conversation: str) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT user FROM members WHERE conversation=? ORDER BY user", (conversation,))]

    def _check_member(self, user: str, conversation: str) -> None:
        """403 for a conversation *user* cannot be in, 404 for an unknown one."""
        m = DM_RE.match(conversation)
        if m and user not in (m.group(1), m.group(2)):
            raise forbidden(f"{conversation}: not a member")
        if self._one("SELECT 1 FROM conversations WHERE id=?", conversation) is None:
            raise not_found(f"{conversation}: no such conversation")
        if self._one("SELECT 1 FROM members WHERE conversation=? AND user=?", conversation, user) is None:
            raise forbidden(f"{conversation}: not a member")

    def _create_conversation(self, conv: str, members: list[str], now_ms: int) -> None:
        self._db.execute("INSERT INTO conversations(id, created_at) VALUES (?,?)", (conv, now_ms))
        self._db.executemany("INSERT INTO members VALUES (?,?)", [(conv, u) for u in members])

    async def create_group(self, creator: str, members: list[str], now_ms: int) -> str:
        """Create ``g:<n>`` with *creator* and *members*; 404 if one is not registered."""
        everyone = sorted(set(members) | {creator})
        if len(everyone) < 2:
            raise bad_request("members: a group needs at least one other user")

        def run() -> str:
            for u in everyone:
                if self._one("SELECT 1 FROM users WHERE name=?", u) is None:
                    raise not_found(f"members: no such user {u!r}")
            n = self._db.execute("INSERT INTO group_ids DEFAULT VALUES").lastrowid
            conv = f"g:{n}"
            self._create_conversation(conv, everyone, now_ms)
            return conv
        return await self._call(self._tx, run)

    async def history(self, user: str, conversation: str, before: int | None,
                      limit: int) -> dict[str, Any]:
        """Up to *limit* messages with id < *before* (all if None), oldest first, plus
        every member's receipt watermarks."""
        def run() -> dict[str, Any]:
            self._check_member(user, conversation)
            rows = self._db.execute(
                "SELECT id, sender, body, client_msg_id, sent_at FROM messages "
                "WHERE conversation=? AND id<? ORDER BY id DESC LIMIT ?",
                (conversation, before if before is not None else 2 ** 62, limit + 1)).fetchall()
            has_more = len(rows) > limit
            messages = [{"id": r[0], "conversation": conversation, "sender": r[1], "body": r[2],
                         "client_msg_id": r[3], "sent_at": r[4]} for r in reversed(rows[:limit])]
            receipts: dict[str, dict[str, int]] = {m: {"delivered": 0, "read": 0}
                                                   for m in self._members(conversation)}
            for u, status, up_to in self._db.execute(
                    "SELECT user, status, up_to FROM receipts WHERE conversation=?", (conversation,)):
                receipts[u][status] = up_to
            for r in receipts.values():  # read implies delivered
                r["delivered"] = max(r["delivered"], r["read"])
            return {"conversation": conversation, "members": sorted(receipts),
                    "messages": messages, "has_more": has_more, "receipts": receipts}
        return await self._call(run)

    # --- writes that fan out ----------------------------------------------------------
    async def add_message(self, sender: str, req: SendRequest, now_ms: int) -> Stored:
        """Store a message (idempotent per ``(sender, client_msg_id)``): a resend returns the
        original ack and stores nothing."""
        def run() -> Stored:
            row = self._db.execute(
                "SELECT id, conversation, sent_at FROM messages WHERE sender=? AND client_msg_id=?",
                (sender, req.client_msg_id)).fetchone()
            if row is not None:
                return Stored(ack_body(row[0], row[1], row[2], req.client_msg_id), None, None)
            if req.to is not None:
                if req.to == sender:
                    raise bad_request("to: cannot send a message to yourself")
                if self._one("SELECT 1 FROM users WHERE name=?", req.to) is None:
                    raise not_found(f"to: no such user {req.to!r}")
                conv = dm_id(sender, req.to)
                if self._one("SELECT 1 FROM conversations WHERE id=?", conv) is None:
                    self._create_conversation(conv, sorted({sender, req.to}), now_ms)
            else:
                assert req.conversation is not None
                conv = req.conversation
                self._check_member(sender, conv)
            (msg_id,) = self._db.execute(
                "UPDATE conversations SET last_msg_id=last_msg_id+1 WHERE id=? RETURNING last_msg_id",
                (conv,)).fetchone()
            self._db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?)",
                             (conv, msg_id, sender, req.body, req.client_msg_id, now_ms))
            item = {"kind": "message", "conversation": conv, "id": msg_id}
            outbox_id = self._db.execute("INSERT INTO outbox(item) VALUES (?)", (json.dumps(item),)).lastrowid
            return Stored(ack_body(msg_id, conv, now_ms, req.client_msg_id), outbox_id, item)
        return await self._call(self._tx, run)

    async def add_receipt(self, user: str, req: ReceiptRequest, now_ms: int) -> Stored:
        """Advance *user*'s watermark. Receipts only move forward: one at or below the
        stored watermark changes nothing and is not fanned out."""
        def run() -> Stored:
            self._check_member(user, req.conversation)
            last = self._one("SELECT last_msg_id FROM conversations WHERE id=?", req.conversation)
            if req.up_to > last:
                raise bad_request(f"up_to={req.up_to}: the conversation's last message is {last}")
            prev = self._one("SELECT up_to FROM receipts WHERE conversation=? AND user=? AND status=?",
                             req.conversation, user, req.status) or 0
            answer = {"conversation": req.conversation, "up_to": max(prev, req.up_to), "status": req.status}
            if req.up_to <= prev:
                return Stored(answer, None, None)
            self._db.execute("INSERT OR REPLACE INTO receipts VALUES (?,?,?,?,?)",
                             (req.conversation, user, req.status, req.up_to, now_ms))
            item = {"kind": "receipt", "conversation": req.conversation, "user": user,
                    "up_to": req.up_to, "status": req.status, "at": now_ms, "prev": prev}
            outbox_id = self._db.execute("INSERT INTO outbox(item) VALUES (?)", (json.dumps(item),)).lastrowid
            return Stored(answer, outbox_id, item)
        return await self._call(self._tx, run)

    async def pending_outbox(self) -> list[tuple[int, dict[str, Any]]]:
        """Outbox rows not yet fanned out (to queue again at start-up)."""
        def run() -> list[tuple[int, dict[str, Any]]]:
            return [(r[0], json.loads(r[1])) for r in self._db.execute("SELECT id, item FROM outbox ORDER BY id")]
        return await self._call(run)

    # --- fan-out into event logs ------------------------------------------------------
    def _targets(self, item: dict[str, Any]) -> tuple[str, list[str], list[Any]]:
        """``(source_key, users, builder args)`` of the event *item* becomes."""
        kind = item["kind"]
        if kind == "message":
            conv, msg_id = item["conversation"], item["id"]
            row = self._db.execute("SELECT sender, body, client_msg_id, sent_at FROM messages "
                                   "WHERE conversation=? AND id=?", (conv, msg_id)).fetchone()
            if row is None:
                return "", [], []
            sender, body, cmid, sent_at = row
            users = [u for u in self._members(conv) if u != sender]
            return f"m:{conv}:{msg_id}", users, [msg_id, conv, sender, body, cmid, sent_at]
        if kind == "receipt":
            conv, user = item["conversation"], item["user"]
            # Receipts go back to whoever sent the messages the watermark just passed.
            users = [r[0] for r in self._db.execute(
                "SELECT DISTINCT sender FROM messages WHERE conversation=? AND id>? AND id<=? AND sender!=?",
                (conv, item["prev"], item["up_to"], user))]
            key = f"r:{conv}:{user}:{item['status']}:{item['up_to']}"
            return key, sorted(users), [conv, user, item["up_to"], item["status"], item["at"]]
        if kind == "presence":
            user = item["user"]
            users = [r[0] for r in self._db.execute(
                "SELECT DISTINCT b.user FROM members a JOIN members b ON a.conversation=b.conversation "
                "WHERE a.user=? AND b.user!=? ORDER BY b.user", (user, user))]
            return f"p:{user}:{item['status']}:{item['at']}", users, [user, item["status"], item["at"]]
        raise ValueError(f"unknown queue item kind {kind!r}")

    async def fan_out(self, item: dict[str, Any], outbox_id: int | None) -> dict[str, list[tuple[int, dict[str, Any]]]]:
        """Append the event *item* causes to each target user's log, in one transaction, and
        delete its outbox row. Idempotent: a redelivered item appends nothing new.
        Returns ``{user: [(seq, event), ...]}`` of the events appended now."""
        def run() -> dict[str, list[tuple[int, dict[str, Any]]]]:
            source_key, users, args = self._targets(item)
            out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
            builder = _BUILDERS[item["kind"]] if users else None
            for user in users:
                if self._one("SELECT 1 FROM events WHERE user=? AND source_key=?", user, source_key):
                    continue  # already appended by an earlier delivery attempt
                seq, trimmed = self._db.execute(
                    "UPDATE users SET last_seq=last_seq+1 WHERE name=? RETURNING last_seq, trimmed_up_to",
                    (user,)).fetchone()
                self._db.execute("INSERT INTO events VALUES (?,?,?,?,?)",
                                 (user, seq, item["kind"], source_key, json.dumps(args)))
                assert builder is not None
                out[user] = [(seq, builder(str(Cursor(self.epoch, seq)), *args))]
                # Trim in batches (10 % slack) so most appends do no deletes.
                if seq - trimmed > self.retention + max(1, self.retention // 10):
                    floor = seq - self.retention
                    self._db.execute("DELETE FROM events WHERE user=? AND seq<=?", (user, floor))
                    self._db.execute("UPDATE users SET trimmed_up_to=? WHERE name=?", (floor, user))
            if outbox_id is not None:
                self._db.execute("DELETE FROM outbox WHERE id=?", (outbox_id,))
            return out
        return await self._call(self._tx, run)

    # --- reading event logs -------------------------------------------------------------
    def _state(self, user: str) -> tuple[int, int]:
        row = self._db.execute("SELECT last_seq, trimmed_up_to FROM users WHERE name=?", (user,)).fetchone()
        return (0, 0) if row is None else (row[0], row[1])

    def _rows_to_events(self, rows: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
        return [_BUILDERS[kind](str(Cursor(self.epoch, seq)), *json.loads(args)) for seq, kind, args in rows]

    def _range(self, user: str, after_seq: int, upto_seq: int, limit: int) -> list[tuple[int, str, str]]:
        return self._db.execute(
            "SELECT seq, kind, args FROM events WHERE user=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (user, after_seq, upto_seq, limit)).fetchall()

    async def read_events(self, user: str, after: Cursor | None, limit: int) -> Page | Expired:
        """Events after *after* (from the start of the retained log when None), at most *limit*.
        A cursor from another epoch, below the trimmed history or beyond the newest event
        gives :class:`Expired`: the caller must say so, never replay partially."""
        def run() -> Page | Expired:
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
        return await self._call(run)

    async def events_between(self, user: str, after_seq: int, upto_seq: int) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, event)`` for after_seq < seq <= upto_seq (a WebSocket filling a gap)."""
        def run() -> list[tuple[int, dict[str, Any]]]:
            rows = self._range(user, after_seq, upto_seq, upto_seq - after_seq)
            return list(zip([r[0] for r in rows], self._rows_to_events(rows)))
        return await self._call(run)

    async def current_cursor(self, user: str) -> Cursor:
        last, _ = await self._call(self._state, user)
        return Cursor(self.epoch, last)

    # --- for tests and /metrics ---------------------------------------------------------
    async def counts(self) -> dict[str, int]:
        """Row count of every table: tests use it to show a refused request stored nothing."""
        tables = ["users", "tokens", "conversations", "members", "messages", "receipts", "events", "outbox"]
        def run() -> dict[str, int]:
            return {t: self._one(f"SELECT COUNT(*) FROM {t}") for t in tables}
        return await self._call(run)
