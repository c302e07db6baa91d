"""The PostgreSQL schema and connections (psycopg 3), for several server processes sharing
one database (``--db postgresql://...``; docs/server.md "A cluster").

The tables are SQLite's (schema.py) in PostgreSQL's types; the transactions are the same
(writes.py, reads.py). Several processes may start at once against an empty database: the
schema is created under an advisory lock, and the epoch is set once.
"""

from __future__ import annotations

import secrets
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, pw_hash TEXT NOT NULL, created_at BIGINT NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0, trimmed_up_to BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users(name), expires_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, last_msg_id BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS group_ids (n BIGSERIAL PRIMARY KEY);
CREATE TABLE IF NOT EXISTS members (
    conversation TEXT NOT NULL REFERENCES conversations(id), "user" TEXT NOT NULL REFERENCES users(name),
    PRIMARY KEY (conversation, "user")
);
CREATE TABLE IF NOT EXISTS contacts (owner TEXT NOT NULL, viewer TEXT NOT NULL, PRIMARY KEY (owner, viewer));
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL, id BIGINT NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
    client_msg_id TEXT NOT NULL, sent_at BIGINT NOT NULL,
    PRIMARY KEY (conversation, id), UNIQUE (sender, client_msg_id)
);
CREATE TABLE IF NOT EXISTS receipts (
    conversation TEXT NOT NULL, "user" TEXT NOT NULL, status TEXT NOT NULL, up_to BIGINT NOT NULL, at BIGINT NOT NULL,
    PRIMARY KEY (conversation, "user", status)
);
CREATE TABLE IF NOT EXISTS events (
    "user" TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, args TEXT NOT NULL,
    PRIMARY KEY ("user", seq)
);
CREATE TABLE IF NOT EXISTS outbox (id BIGSERIAL PRIMARY KEY, item TEXT NOT NULL, created_at BIGINT NOT NULL);
"""

_LOCK = 7_340_021  # pg_advisory_lock key of "creating the schema"


def is_url(where: object) -> bool:
    """Whether *where* names a PostgreSQL database rather than a SQLite file."""
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


async def connect(url: str) -> Any:
    """An autocommit ``AsyncConnection`` to *url* on which the schema exists."""
    import psycopg

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
    try:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            for statement in filter(str.strip, SCHEMA.split(";")):
                await conn.execute(statement)
            await conn.execute("INSERT INTO meta VALUES ('epoch', %s) ON CONFLICT DO NOTHING", (secrets.token_hex(4),))
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    except BaseException:
        await conn.close()
        raise
    return conn


async def epoch_of(conn: Any) -> str:
    cur = await conn.execute("SELECT value FROM meta WHERE key='epoch'")
    row = await cur.fetchone()
    return str(row[0])


def read_pool(url: str, size: int = 4) -> Any:
    """A pool of autocommit connections for reads (not opened yet)."""
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(url, min_size=1, max_size=size, kwargs={"autocommit": True}, open=False,
                               timeout=10)
