"""The read transactions, sans-I/O like the writes (:mod:`.ops`). The backend runs each in
one read transaction, so a read of several statements sees one committed state: on SQLite
on the event loop's own read connection, synchronously (an indexed lookup in the page
cache takes microseconds, less than a thread hand-off); on PostgreSQL on a pooled
connection, in a REPEATABLE READ READ ONLY transaction.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatcore import Cursor

from .ops import All, One, Tx
from .schema import TABLES
from .types import Expired, Item, Page
from .writes import BUILDERS, check_member, members, one


def password_hash(name: str) -> Tx[str | None]:
    return (yield from one("SELECT pw_hash FROM users WHERE name=?", name))


def missing_users(names: list[str]) -> Tx[list[str]]:
    out = []
    for n in names:
        if (yield from one("SELECT 1 FROM users WHERE name=?", n)) is None:
            out.append(n)
    return out


def visible_to(viewer: str, owners: list[str]) -> Tx[set[str]]:
    """Those of *owners* whose presence *viewer* may see: itself, and whoever has sent a
    message in a conversation *viewer* is in."""
    out = set()
    for o in owners:
        if o == viewer or (yield from one("SELECT 1 FROM contacts WHERE owner=? AND viewer=?", o, viewer)):
            out.add(o)
    return out


def token_owner(token_hash: str, now_ms: int) -> Tx[tuple[str, int] | None]:
    row = yield One('SELECT "user", expires_at FROM tokens WHERE token_hash=?', token_hash)
    return None if row is None or row[1] <= now_ms else (row[0], row[1])


def history(user: str, conversation: str, before: int | None, limit: int) -> Tx[dict[str, Any]]:
    """Up to *limit* messages with id < *before* (all if None), oldest first, plus every
    member's receipt watermarks."""
    yield from check_member(user, conversation)
    rows = yield All("SELECT id, sender, body, client_msg_id, sent_at FROM messages "
                     "WHERE conversation=? AND id<? ORDER BY id DESC LIMIT ?",
                     conversation, before if before is not None else 2 ** 62, limit + 1)
    has_more = len(rows) > limit
    messages = [{"id": r[0], "conversation": conversation, "sender": r[1], "body": r[2],
                 "client_msg_id": r[3], "sent_at": r[4]} for r in reversed(rows[:limit])]
    receipts: dict[str, dict[str, int]] = {m: {"delivered": 0, "read": 0}
                                           for m in (yield from members(conversation))}
    for u, status, up_to in (yield All('SELECT "user", status, up_to FROM receipts WHERE conversation=?',
                                       conversation)):
        receipts[u][status] = up_to
    for r in receipts.values():  # read implies delivered
        r["delivered"] = max(r["delivered"], r["read"])
    return {"conversation": conversation, "members": sorted(receipts),
            "messages": messages, "has_more": has_more, "receipts": receipts}


def _state(user: str) -> Tx[tuple[int, int]]:
    row = yield One("SELECT last_seq, trimmed_up_to FROM users WHERE name=?", user)
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _events(epoch: str, rows: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
    return [BUILDERS[kind](str(Cursor(epoch, seq)), *orjson.loads(args)) for seq, kind, args in rows]


def _range(user: str, after_seq: int, upto_seq: int, limit: int) -> Tx[list[tuple[int, str, str]]]:
    rows = yield All('SELECT seq, kind, args FROM events WHERE "user"=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?',
                     user, after_seq, upto_seq, limit)
    return [(int(r[0]), r[1], r[2]) for r in rows]


def read_events(epoch: str, user: str, after: Cursor | None, limit: int) -> Tx[Page | Expired]:
    """Events after *after* (from the start of the retained log when None), at most *limit*.
    A cursor from another epoch, below the trimmed history or beyond the newest event
    gives :class:`Expired`: the caller must say so, never replay partially."""
    last, trimmed = yield from _state(user)
    if after is None:
        start = trimmed
    elif after.epoch != epoch or not trimmed <= after.seq <= last:
        return Expired(Cursor(epoch, last))
    else:
        start = after.seq
    rows = yield from _range(user, start, last, limit)
    end = rows[-1][0] if rows else start
    return Page(_events(epoch, rows), Cursor(epoch, end), last)


def events_between(epoch: str, user: str, after_seq: int, upto_seq: int) -> Tx[list[tuple[int, dict[str, Any]]]]:
    """``(seq, event)`` for after_seq < seq <= upto_seq (a WebSocket filling a gap)."""
    rows = yield from _range(user, after_seq, upto_seq, max(0, upto_seq - after_seq))
    return list(zip([r[0] for r in rows], _events(epoch, rows)))


def current_seq(user: str) -> Tx[int]:
    return (yield from _state(user))[0]


def pending_outbox(created_before_ms: int | None) -> Tx[list[Item]]:
    """Outbox rows not yet fanned out, oldest first (to queue again); only those created
    before *created_before_ms* when given."""
    rows = yield All("SELECT id, item FROM outbox WHERE created_at<? ORDER BY id",
                     2 ** 62 if created_before_ms is None else created_before_ms)
    return [Item(int(r[0]), orjson.loads(r[1])) for r in rows]


def counts() -> Tx[dict[str, int]]:
    """Row count of every table: tests use it to show a refused request stored nothing."""
    out = {}
    for t in TABLES:
        out[t] = int((yield from one(f"SELECT COUNT(*) FROM {t}")))
    return out
