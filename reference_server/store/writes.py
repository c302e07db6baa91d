"""The write transactions, as sans-I/O generators (:mod:`.ops`): each yields its
statements and returns its answer; the group committer runs it inside the batch's
transaction, on SQLite or PostgreSQL, and never lets it commit on its own.

A transaction raises :class:`~reference_server.errors.ApiError` for a refusal, before it
writes anything; the caller answers 4xx. (Anything that fails after a write makes the
committer undo the batch and run it again with a savepoint per transaction.)

The invariant that makes cursors safe (Synapse #1449): a user's event sequence
``users.last_seq`` is incremented inside the same transaction that inserts the event, and
on that user's row: on SQLite transactions run one after another; on PostgreSQL the row
lock makes a second appender wait for the first to commit. Either way, when event *n* is
visible to a reader every event below *n* is visible too. A cursor never skips.

The outbox: a message, receipt or presence change is inserted together with an ``outbox``
row. The fan-out deletes that row in the transaction that appends the events, so "the
outbox row is gone" means "already fanned out": a redelivered item appends nothing twice.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from chatcore import Cursor, ack_body, encode, message_event, presence_event, receipt_event
from chatcore.states import advance_watermark

from ..errors import ApiError, bad_request, forbidden, not_found
from ..payloads import DM_RE, ReceiptRequest, SendRequest, dm_id
from .ops import All, Exec, Many, One, Tx
from .types import FanOut, Item, Stored

BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "message": message_event, "receipt": receipt_event, "presence": presence_event,
}


def one(sql: str, *args: Any) -> Tx[Any]:
    """The first column of the first row, or None."""
    row = yield One(sql, *args)
    return None if row is None else row[0]


def members(conversation: str) -> Tx[list[str]]:
    """Sorted members: a dm's are in its id, a group's in the members table."""
    m = DM_RE.match(conversation)
    if m:
        return [m.group(1), m.group(2)]
    rows = yield All('SELECT "user" FROM members WHERE conversation=? ORDER BY "user"', conversation)
    return [r[0] for r in rows]


def check_member(user: str, conversation: str) -> Tx[None]:
    """403 for a conversation *user* cannot be in, 404 for an unknown one."""
    m = DM_RE.match(conversation)
    if m and user not in (m.group(1), m.group(2)):
        raise forbidden(f"{conversation}: not a member")
    if (yield from one("SELECT 1 FROM conversations WHERE id=?", conversation)) is None:
        raise not_found(f"{conversation}: no such conversation")
    if not m and (yield from one('SELECT 1 FROM members WHERE conversation=? AND "user"=?',
                                 conversation, user)) is None:
        raise forbidden(f"{conversation}: not a member")


def _outbox(body: dict[str, Any], now_ms: int) -> Tx[int]:
    row = yield One("INSERT INTO outbox(item, created_at) VALUES (?,?) RETURNING id", orjson.dumps(body).decode(),
                    now_ms)
    return int(row[0])


class Writes:
    """Write transactions for a store whose logs carry cursors of *epoch* and keep
    *retention* events per user.

    It keeps four caches of facts that never change once committed: registered users
    (never deleted), existing conversations (never deleted), group members (a group's
    membership is fixed at creation; a dm's is in its id) and who has spoken where (the
    contacts a first message creates are there for good). A fact a transaction finds or
    creates is *staged* and enters the cache only after the transaction commits
    (:meth:`commit_staged`; :meth:`drop_staged` after a rollback), so the cache never
    holds something a rollback undid. A transaction stages what it read when it read it
    (the batch's state, committed or rolled back as a whole) and what it wrote as its last
    step. With several server processes on one PostgreSQL database the caches stay
    correct: each fact, once committed, is true for good.
    """

    def __init__(self, epoch: str, retention: int) -> None:
        self.epoch = epoch
        self.retention = retention
        self._users: set[str] = set()
        self._convs: set[str] = set()
        self._members: dict[str, list[str]] = {}
        self._spoke: set[tuple[str, str]] = set()  # (sender, conversation)
        self._staged: list[tuple[str, Any, Any]] = []

    # --- the caches -----------------------------------------------------------------
    def commit_staged(self) -> None:
        for kind, key, value in self._staged:
            if kind == "user":
                self._users.add(key)
            elif kind == "conv":
                self._convs.add(key)
            elif kind == "spoke":
                self._spoke.add(key)
            else:
                self._members[key] = value
        self._staged.clear()

    def drop_staged(self) -> None:
        self._staged.clear()

    def _user_exists(self, name: str) -> Tx[bool]:
        if name in self._users:
            return True
        if (yield from one("SELECT 1 FROM users WHERE name=?", name)) is None:
            return False
        self._staged.append(("user", name, None))
        return True

    def _conv_exists(self, conv: str) -> Tx[bool]:
        if conv in self._convs:
            return True
        if (yield from one("SELECT 1 FROM conversations WHERE id=?", conv)) is None:
            return False
        self._staged.append(("conv", conv, None))
        return True

    def _members_of(self, conv: str) -> Tx[list[str]]:
        """Sorted members: a dm's are in its id, a group's are read once and cached."""
        if conv.startswith("dm:"):
            return (yield from members(conv))
        cached = self._members.get(conv)
        if cached is None:
            cached = yield from members(conv)
            if cached:
                self._staged.append(("members", conv, cached))
        return cached

    def _check_member(self, user: str, conv: str) -> Tx[None]:
        """403 for a conversation *user* is not in, 404 for an unknown one."""
        m = DM_RE.match(conv)
        if m and user not in (m.group(1), m.group(2)):
            raise forbidden(f"{conv}: not a member")
        if not (yield from self._conv_exists(conv)):
            raise not_found(f"{conv}: no such conversation")
        if user not in (yield from self._members_of(conv)):
            raise forbidden(f"{conv}: not a member")

    # --- users and tokens ------------------------------------------------------------
    def create_user(self, name: str, pw_hash: str, now_ms: int) -> Tx[bool]:
        """Insert a user; False when the name is taken (nothing changes then)."""
        created = yield Exec("INSERT INTO users(name, pw_hash, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                             name, pw_hash, now_ms)
        self._staged.append(("user", name, None))  # created now, or there already
        return bool(created == 1)

    def save_token(self, token_hash: str, user: str, expires_at_ms: int) -> Tx[None]:
        yield Exec("INSERT INTO tokens VALUES (?,?,?)", token_hash, user, expires_at_ms)

    def revoke_token(self, token_hash: str) -> Tx[None]:
        """Logout: the token stops working (deleting an unknown one changes nothing)."""
        yield Exec("DELETE FROM tokens WHERE token_hash=?", token_hash)

    def prune_tokens(self, now_ms: int) -> Tx[int]:
        """Delete the tokens expired at *now_ms*; returns how many."""
        n = yield Exec("DELETE FROM tokens WHERE expires_at<=?", now_ms)
        return int(n or 0)

    # --- conversations -----------------------------------------------------------------
    def create_group(self, everyone: list[str], now_ms: int) -> Tx[str]:
        """Create ``g:<n>`` with *everyone* (sorted, the creator included); 404 if one of them
        is not registered."""
        for u in everyone:
            if not (yield from self._user_exists(u)):
                raise not_found(f"members: no such user {u!r}")
        (n,) = yield One("INSERT INTO group_ids DEFAULT VALUES RETURNING n")
        conv = f"g:{n}"
        yield Exec("INSERT INTO conversations(id, created_at) VALUES (?,?)", conv, now_ms)
        yield Many("INSERT INTO members VALUES (?,?)", [(conv, u) for u in everyone])
        self._staged += [("conv", conv, None), ("members", conv, everyone)]
        return conv

    def _spoken(self, sender: str, conv: str) -> Tx[None]:
        """*sender* sent a message in *conv*: the other members may see its presence from now
        on. The first message per (sender, conversation) writes the contacts; the cache makes
        the later ones free."""
        if (sender, conv) in self._spoke:
            return
        others = [m for m in (yield from self._members_of(conv)) if m != sender]
        yield Many("INSERT INTO contacts VALUES (?,?) ON CONFLICT DO NOTHING", [(sender, m) for m in others])
        self._staged.append(("spoke", (sender, conv), None))

    # --- writes that fan out -------------------------------------------------------------
    def add_message(self, sender: str, req: SendRequest, now_ms: int) -> Tx[Stored]:
        """Store a message, idempotent per ``(sender, client_msg_id)``: a resend to the same
        conversation returns the original ack and stores nothing; the same id reused for
        another conversation is refused (409), never answered with the other message's ack."""
        conv = dm_id(sender, req.to) if req.to is not None else req.conversation
        assert conv is not None
        row = yield One("SELECT id, conversation, sent_at FROM messages WHERE sender=? AND client_msg_id=?",
                        sender, req.client_msg_id)
        if row is not None:
            if row[1] != conv:
                raise ApiError(409, "client_msg_id_reused",
                               f"client_msg_id={req.client_msg_id!r} was already used for a message to "
                               f"another conversation: use a new id for a new message")
            return Stored(ack_body(row[0], row[1], row[2], req.client_msg_id), None)
        if req.to is not None:
            if req.to == sender:
                raise bad_request("to: cannot send a message to yourself")
            if not (yield from self._user_exists(req.to)):
                raise not_found(f"to: no such user {req.to!r}")
            # The dm is created by its first message: one upsert takes the next id either way.
            (msg_id,) = yield One(
                "INSERT INTO conversations(id, created_at, last_msg_id) VALUES (?,?,1) "
                "ON CONFLICT(id) DO UPDATE SET last_msg_id=conversations.last_msg_id+1 RETURNING last_msg_id",
                conv, now_ms)
        else:
            yield from self._check_member(sender, conv)
            (msg_id,) = yield One(
                "UPDATE conversations SET last_msg_id=last_msg_id+1 WHERE id=? RETURNING last_msg_id", conv)
        yield Exec("INSERT INTO messages VALUES (?,?,?,?,?,?)",
                   conv, msg_id, sender, req.body, req.client_msg_id, now_ms)
        yield from self._spoken(sender, conv)
        body = {"kind": "message", "conversation": conv, "id": msg_id}
        outbox_id = yield from _outbox(body, now_ms)
        return Stored(ack_body(msg_id, conv, now_ms, req.client_msg_id), Item(outbox_id, body))

    def add_receipt(self, user: str, req: ReceiptRequest, now_ms: int) -> Tx[Stored]:
        """Advance *user*'s watermark. Receipts only move forward: one at or below the
        stored watermark changes nothing and is not fanned out."""
        yield from self._check_member(user, req.conversation)
        last = yield from one("SELECT last_msg_id FROM conversations WHERE id=?", req.conversation)
        if req.up_to > last:
            raise bad_request(f"up_to={req.up_to}: the conversation's last message is {last}")
        stored = yield from one('SELECT up_to FROM receipts WHERE conversation=? AND "user"=? AND status=?',
                                req.conversation, user, req.status)
        up_to, moved = advance_watermark(stored, req.up_to)  # the rule the simulation uses too
        answer = {"conversation": req.conversation, "up_to": up_to, "status": req.status}
        if not moved:
            return Stored(answer, None)
        prev = stored or 0
        yield Exec('INSERT INTO receipts VALUES (?,?,?,?,?) ON CONFLICT (conversation, "user", status) '
                   "DO UPDATE SET up_to=excluded.up_to, at=excluded.at",
                   req.conversation, user, req.status, req.up_to, now_ms)
        body = {"kind": "receipt", "conversation": req.conversation, "user": user,
                "up_to": req.up_to, "status": req.status, "at": now_ms, "prev": prev}
        outbox_id = yield from _outbox(body, now_ms)
        return Stored(answer, Item(outbox_id, body))

    def add_presence(self, user: str, status: str, at_ms: int) -> Tx[Item]:
        """Queue a presence change for fan-out to whoever may see it (through the outbox,
        like messages and receipts, so a redelivery appends nothing twice)."""
        body = {"kind": "presence", "user": user, "status": status, "at": at_ms}
        outbox_id = yield from _outbox(body, at_ms)
        return Item(outbox_id, body)

    def drop_outbox(self, outbox_ids: list[int]) -> Tx[None]:
        """Forget outbox rows whose items were dead-lettered (the dead-letter stream keeps them)."""
        yield Many("DELETE FROM outbox WHERE id=?", [(i,) for i in outbox_ids])

    # --- fan-out into event logs -----------------------------------------------------------
    def _targets(self, item: dict[str, Any]) -> Tx[tuple[list[str], list[Any]]]:
        """``(users, builder args)`` of the event *item* becomes."""
        kind = item["kind"]
        if kind == "message":
            conv, msg_id = item["conversation"], item["id"]
            row = yield One("SELECT sender, body, client_msg_id, sent_at FROM messages "
                            "WHERE conversation=? AND id=?", conv, msg_id)
            if row is None:
                return [], []
            sender, body, cmid, sent_at = row
            users = [u for u in (yield from self._members_of(conv)) if u != sender]
            return users, [msg_id, conv, sender, body, cmid, sent_at]
        if kind == "receipt":
            conv, user = item["conversation"], item["user"]
            # Receipts go back to whoever sent the messages the watermark just passed.
            rows = yield All("SELECT DISTINCT sender FROM messages WHERE conversation=? AND id>? AND id<=? "
                             "AND sender!=?", conv, item["prev"], item["up_to"], user)
            return sorted(r[0] for r in rows), [conv, user, item["up_to"], item["status"], item["at"]]
        if kind == "presence":
            user = item["user"]  # to whoever may see it: those it has spoken with
            rows = yield All("SELECT viewer FROM contacts WHERE owner=? ORDER BY viewer", user)
            return [r[0] for r in rows], [user, item["status"], item["at"]]
        raise ValueError(f"unknown queue item kind {kind!r}")

    def fan_out(self, items: list[Item]) -> Tx[FanOut]:
        """Append the events *items* cause to each target user's log and delete their outbox
        rows, all in this transaction. An item that fails before changing anything (a poison
        item: its reads come first) is reported in ``failed`` and the others go on; a failure
        after a change (the database itself failing) raises, and the committer undoes it."""
        events: dict[str, list[tuple[int, bytes]]] = {}
        failed: list[tuple[int, str]] = []
        for index, item in enumerate(items):
            try:
                kind = item.body["kind"]
                users, args = yield from self._targets(item.body)
                builder = BUILDERS[kind]
            except Exception as exc:  # nothing written for this item yet
                failed.append((index, f"{type(exc).__name__}: {exc}"[:200]))
                continue
            if (yield Exec("DELETE FROM outbox WHERE id=?", item.outbox_id)) == 0:
                continue  # its outbox row is gone: fanned out by an earlier delivery
            if not users:
                continue
            args_json = orjson.dumps(args).decode()
            for user in users:
                seq, trimmed = yield One(
                    "UPDATE users SET last_seq=last_seq+1 WHERE name=? RETURNING last_seq, trimmed_up_to", user)
                yield Exec('INSERT INTO events VALUES (?,?,?,?)', user, seq, kind, args_json)
                events.setdefault(user, []).append((seq, encode(builder(str(Cursor(self.epoch, seq)), *args))))
                # Trim in batches (10 % slack) so most appends do no deletes.
                if seq - trimmed > self.retention + max(1, self.retention // 10):
                    floor = seq - self.retention
                    yield Exec('DELETE FROM events WHERE "user"=? AND seq<=?', user, floor)
                    yield Exec("UPDATE users SET trimmed_up_to=? WHERE name=?", floor, user)
        return FanOut(events, failed)
