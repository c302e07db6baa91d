"""The SQLite schema and how a connection to it is opened.

Durability: WAL with ``synchronous=FULL`` by default, so a committed transaction (and
the ack that follows it) survives a power loss, not only a crash of the process; the
group committer makes this affordable by syncing once per batch. ``NORMAL`` (durable
at the next checkpoint; a power cut can lose the last transactions, never corrupt the
database) is available for comparison (``ServerConfig.sqlite_synchronous``).
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

SYNCHRONOUS = ("FULL", "NORMAL")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, pw_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,      -- newest event in this user's log
    trimmed_up_to INTEGER NOT NULL DEFAULT 0  -- events at or below were deleted
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, last_msg_id INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_ids (n INTEGER PRIMARY KEY AUTOINCREMENT);
-- Members of groups (g:<n>); a dm's two members are in its id (dm:<a>:<b>).
CREATE TABLE IF NOT EXISTS members (
    conversation TEXT NOT NULL REFERENCES conversations(id), user TEXT NOT NULL REFERENCES users(name),
    PRIMARY KEY (conversation, user)
) WITHOUT ROWID;
-- Presence is by participation: viewer may see owner's presence once owner has sent a message
-- in a conversation viewer is in (docs/PROTOCOL.md, "Presence").
CREATE TABLE IF NOT EXISTS contacts (
    owner TEXT NOT NULL, viewer TEXT NOT NULL,
    PRIMARY KEY (owner, viewer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL, id INTEGER NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
    client_msg_id TEXT NOT NULL, sent_at INTEGER NOT NULL,
    PRIMARY KEY (conversation, id),
    UNIQUE (sender, client_msg_id)            -- idempotency: one message per client id
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    conversation TEXT NOT NULL, user TEXT NOT NULL, status TEXT NOT NULL,
    up_to INTEGER NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (conversation, user, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    user TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    args TEXT NOT NULL,                       -- JSON list: the chatcore builder's arguments
    PRIMARY KEY (user, seq)
) WITHOUT ROWID;
-- Every message, receipt and presence change waits here until its fan-out commits; the
-- fan-out deletes the row in the same transaction, so a missing row means "done".
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL,
    created_at INTEGER NOT NULL               -- ms; the periodic re-queue skips young rows
);
"""

#: Bumped when the schema changes; a database made by another version is refused.
SCHEMA_VERSION = "3"

#: Tables whose row counts tests compare to show that a refused request stored nothing.
TABLES = ("users", "tokens", "conversations", "members", "contacts", "messages", "receipts", "events", "outbox")


def connect(path: Path, synchronous: str = "FULL", *, create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, *synchronous*.
    With *create*, make the file, the schema and the epoch when missing."""
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous={synchronous!r}: expected one of {', '.join(SYNCHRONOUS)}")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache: the hot logs and indexes stay in memory
    if create:
        old = conn.execute("SELECT 1 FROM sqlite_master WHERE name='users'").fetchone()
        version = None
        if old:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() \
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() else None
            version = row[0] if row else "1"
            if version != SCHEMA_VERSION:
                conn.close()
                raise SchemaMismatch(f"{path}: made by another version of the server (schema {version}, "
                                     f"this one uses {SCHEMA_VERSION}): move it away or use another --data-dir")
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (secrets.token_hex(4),))
    return conn


class SchemaMismatch(RuntimeError):
    """The database file was made by a version of the server with another schema."""


def epoch_of(conn: sqlite3.Connection) -> str:
    """The database's epoch: a new database is a new epoch, so old cursors expire."""
    return str(conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])
