"""The write transactions. Each method is a *job* for the group committer: it runs in
the writer thread, on the one write connection, inside the batch's transaction (and
its own savepoint), and must not commit.

A job raises :class:`~reference_server.errors.ApiError` for a refusal; the committer
rolls back what the job did and the caller answers 4xx. Nothing is written before
the checks that can refuse.

The invariant that makes cursors safe (Synapse #1449): a user's event sequence
``users.last_seq`` is incremented inside the same transaction that inserts the event,
and transactions run one after another, so when event *n* is visible to a reader
every event below *n* is visible too. A cursor never skips.

The outbox: a message or receipt is inserted together with an ``outbox`` row. The
fan-out deletes that row in the transaction that appends the events, so "the outbox
row is gone" means "already fanned out": a redelivered item appends nothing twice.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable

from chatcore import Cursor, ack_body, encode, message_event, presence_event, receipt_event
from chatcore.states import advance_watermark

from ..errors import ApiError, bad_request, forbidden, not_found
from ..payloads import DM_RE, ReceiptRequest, SendRequest, dm_id
from .types import FanOut, Item, Stored

Db = sqlite3.Connection

BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "message": message_event, "receipt": receipt_event, "presence": presence_event,
}


def one(db: Db, sql: str, *args: Any) -> Any:
    """The first column of the first row, or None."""
    row = db.execute(sql, args).fetchone()
    return None if row is None else row[0]


def members(db: Db, conversation: str) -> list[str]:
    """Sorted members: a dm's are in its id, a group's in the members table."""
    m = DM_RE.match(conversation)
    if m:
        return [m.group(1), m.group(2)]
    return [r[0] for r in db.execute(
        "SELECT user FROM members WHERE conversation=? ORDER BY user", (conversation,))]


def check_member(db: Db, user: str, conversation: str) -> None:
    """403 for a conversation *user* cannot be in, 404 for an unknown one."""
    m = DM_RE.match(conversation)
    if m and user not in (m.group(1), m.group(2)):
        raise forbidden(f"{conversation}: not a member")
    if one(db, "SELECT 1 FROM conversations WHERE id=?", conversation) is None:
        raise not_found(f"{conversation}: no such conversation")
    if not m and one(db, "SELECT 1 FROM members WHERE conversation=? AND user=?", conversation, user) is None:
        raise forbidden(f"{conversation}: not a member")


class Writes:
    """Write jobs for a store whose logs carry cursors of *epoch* and keep *retention*
    events per user.

    It keeps four caches of facts that never change once committed: registered users
    (never deleted), existing conversations (never deleted), group members (a group's
    membership is fixed at creation; a dm's is in its id) and who has spoken where (the
    contacts a first message creates are there for good). A fact a job finds or creates
    is *staged* and enters the cache only after the transaction commits
    (:meth:`commit_staged`; :meth:`drop_staged` after a rollback), so the cache never holds
    something a rollback undid. A job stages what it read when it read it (the batch's
    state, committed or rolled back as a whole) and what it wrote as its last step.
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

    def _user_exists(self, db: Db, name: str) -> bool:
        if name in self._users:
            return True
        if one(db, "SELECT 1 FROM users WHERE name=?", name) is None:
            return False
        self._staged.append(("user", name, None))
        return True

    def _conv_exists(self, db: Db, conv: str) -> bool:
        if conv in self._convs:
            return True
        if one(db, "SELECT 1 FROM conversations WHERE id=?", conv) is None:
            return False
        self._staged.append(("conv", conv, None))
        return True

    def _members_of(self, db: Db, conv: str) -> list[str]:
        """Sorted members: a dm's are in its id, a group's are read once and cached."""
        if conv.startswith("dm:"):
            return members(db, conv)
        cached = self._members.get(conv)
        if cached is None:
            cached = members(db, conv)
            if cached:
                self._staged.append(("members", conv, cached))
        return cached

    def _check_member(self, db: Db, user: str, conv: str) -> None:
        """403 for a conversation *user* is not in, 404 for an unknown one."""
        m = DM_RE.match(conv)
        if m and user not in (m.group(1), m.group(2)):
            raise forbidden(f"{conv}: not a member")
        if not self._conv_exists(db, conv):
            raise not_found(f"{conv}: no such conversation")
        if user not in self._members_of(db, conv):
            raise forbidden(f"{conv}: not a member")

    # --- users and tokens ------------------------------------------------------------
    def create_user(self, db: Db, name: str, pw_hash: str, now_ms: int) -> bool:
        cur = db.execute("INSERT OR IGNORE INTO users(name, pw_hash, created_at) VALUES (?,?,?)",
                         (name, pw_hash, now_ms))
        self._staged.append(("user", name, None))  # created now, or there already
        return cur.rowcount == 1

    def save_token(self, db: Db, token_hash: str, user: str, expires_at_ms: int) -> None:
        db.execute("INSERT INTO tokens VALUES (?,?,?)", (token_hash, user, expires_at_ms))

    # --- conversations -----------------------------------------------------------------
    def _create_group(self, db: Db, conv: str, users: list[str], now_ms: int) -> None:
        db.execute("INSERT INTO conversations(id, created_at) VALUES (?,?)", (conv, now_ms))
        db.executemany("INSERT INTO members VALUES (?,?)", [(conv, u) for u in users])

    def _spoken(self, db: Db, sender: str, conv: str) -> None:
        """*sender* sent a message in *conv*: the other members may see its presence from now
        on. The first message per (sender, conversation) writes the contacts; the cache makes
        the later ones free."""
        if (sender, conv) in self._spoke:
            return
        db.executemany("INSERT OR IGNORE INTO contacts VALUES (?,?)",
                       [(sender, m) for m in self._members_of(db, conv) if m != sender])
        self._staged.append(("spoke", (sender, conv), None))

    def create_group(self, db: Db, everyone: list[str], now_ms: int) -> str:
        for u in everyone:
            if not self._user_exists(db, u):
                raise not_found(f"members: no such user {u!r}")
        n = db.execute("INSERT INTO group_ids DEFAULT VALUES").lastrowid
        conv = f"g:{n}"
        self._create_group(db, conv, everyone, now_ms)
        self._staged += [("conv", conv, None), ("members", conv, everyone)]
        return conv

    # --- writes that fan out -------------------------------------------------------------
    def add_message(self, db: Db, sender: str, req: SendRequest, now_ms: int) -> Stored:
        """Store a message, idempotent per ``(sender, client_msg_id)``: a resend to the same
        conversation returns the original ack and stores nothing; the same id reused for
        another conversation is refused (409), never answered with the other message's ack."""
        conv = dm_id(sender, req.to) if req.to is not None else req.conversation
        assert conv is not None
        row = db.execute("SELECT id, conversation, sent_at FROM messages WHERE sender=? AND client_msg_id=?",
                         (sender, req.client_msg_id)).fetchone()
        if row is not None:
            if row[1] != conv:
                raise ApiError(409, "client_msg_id_reused",
                               f"client_msg_id={req.client_msg_id!r} was already used for a message to "
                               f"another conversation: use a new id for a new message")
            return Stored(ack_body(row[0], row[1], row[2], req.client_msg_id), None)
        if req.to is not None:
            if req.to == sender:
                raise bad_request("to: cannot send a message to yourself")
            if not self._user_exists(db, req.to):
                raise not_found(f"to: no such user {req.to!r}")
            # The dm is created by its first message: one upsert takes the next id either way.
            (msg_id,) = db.execute(
                "INSERT INTO conversations(id, created_at, last_msg_id) VALUES (?,?,1) "
                "ON CONFLICT(id) DO UPDATE SET last_msg_id=last_msg_id+1 RETURNING last_msg_id",
                (conv, now_ms)).fetchone()
        else:
            self._check_member(db, sender, conv)
            (msg_id,) = db.execute(
                "UPDATE conversations SET last_msg_id=last_msg_id+1 WHERE id=? RETURNING last_msg_id",
                (conv,)).fetchone()
        db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?)",
                   (conv, msg_id, sender, req.body, req.client_msg_id, now_ms))
        self._spoken(db, sender, conv)
        body = {"kind": "message", "conversation": conv, "id": msg_id}
        outbox_id = db.execute("INSERT INTO outbox(item, created_at) VALUES (?,?)",
                               (json.dumps(body), now_ms)).lastrowid
        assert outbox_id is not None
        return Stored(ack_body(msg_id, conv, now_ms, req.client_msg_id), Item(outbox_id, body))

    def add_receipt(self, db: Db, user: str, req: ReceiptRequest, now_ms: int) -> Stored:
        """Advance *user*'s watermark. Receipts only move forward: one at or below the
        stored watermark changes nothing and is not fanned out."""
        self._check_member(db, user, req.conversation)
        last = one(db, "SELECT last_msg_id FROM conversations WHERE id=?", req.conversation)
        if req.up_to > last:
            raise bad_request(f"up_to={req.up_to}: the conversation's last message is {last}")
        stored = one(db, "SELECT up_to FROM receipts WHERE conversation=? AND user=? AND status=?",
                     req.conversation, user, req.status)
        up_to, moved = advance_watermark(stored, req.up_to)  # the rule the simulation uses too
        answer = {"conversation": req.conversation, "up_to": up_to, "status": req.status}
        if not moved:
            return Stored(answer, None)
        prev = stored or 0
        db.execute("INSERT OR REPLACE INTO receipts VALUES (?,?,?,?,?)",
                   (req.conversation, user, req.status, req.up_to, now_ms))
        body = {"kind": "receipt", "conversation": req.conversation, "user": user,
                "up_to": req.up_to, "status": req.status, "at": now_ms, "prev": prev}
        outbox_id = db.execute("INSERT INTO outbox(item, created_at) VALUES (?,?)",
                               (json.dumps(body), now_ms)).lastrowid
        assert outbox_id is not None
        return Stored(answer, Item(outbox_id, body))

    def add_presence(self, db: Db, user: str, status: str, at_ms: int) -> Item:
        """Queue a presence change for fan-out to the user's contacts (through the outbox,
        like messages and receipts, so a redelivery appends nothing twice)."""
        body = {"kind": "presence", "user": user, "status": status, "at": at_ms}
        outbox_id = db.execute("INSERT INTO outbox(item, created_at) VALUES (?,?)",
                               (json.dumps(body), at_ms)).lastrowid
        assert outbox_id is not None
        return Item(outbox_id, body)

    def drop_outbox(self, db: Db, outbox_ids: list[int]) -> None:
        """Forget outbox rows whose items were dead-lettered (the dead-letter stream keeps them)."""
        db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in outbox_ids])

    # --- fan-out into event logs -----------------------------------------------------------
    def _targets(self, db: Db, item: dict[str, Any]) -> tuple[list[str], list[Any]]:
        """``(users, builder args)`` of the event *item* becomes."""
        kind = item["kind"]
        if kind == "message":
            conv, msg_id = item["conversation"], item["id"]
            row = db.execute("SELECT sender, body, client_msg_id, sent_at FROM messages "
                             "WHERE conversation=? AND id=?", (conv, msg_id)).fetchone()
            if row is None:
                return [], []
            sender, body, cmid, sent_at = row
            users = [u for u in self._members_of(db, conv) if u != sender]
            return users, [msg_id, conv, sender, body, cmid, sent_at]
        if kind == "receipt":
            conv, user = item["conversation"], item["user"]
            # Receipts go back to whoever sent the messages the watermark just passed.
            users = [r[0] for r in db.execute(
                "SELECT DISTINCT sender FROM messages WHERE conversation=? AND id>? AND id<=? AND sender!=?",
                (conv, item["prev"], item["up_to"], user))]
            return sorted(users), [conv, user, item["up_to"], item["status"], item["at"]]
        if kind == "presence":
            user = item["user"]  # to whoever may see it: those it has spoken with
            users = [r[0] for r in db.execute("SELECT viewer FROM contacts WHERE owner=? ORDER BY viewer", (user,))]
            return users, [user, item["status"], item["at"]]
        raise ValueError(f"unknown queue item kind {kind!r}")

    def _fan_out_one(self, db: Db, item: Item, out: list[tuple[str, int, bytes]]) -> None:
        # Reads first: a poison item (unknown kind, missing fields) raises before it changes anything.
        users, args = self._targets(db, item.body)
        kind = item.body["kind"]
        builder = BUILDERS[kind]
        if db.execute("DELETE FROM outbox WHERE id=?", (item.outbox_id,)).rowcount == 0:
            return  # its outbox row is gone: fanned out by an earlier delivery
        if not users:
            return
        args_json = json.dumps(args)
        for user in users:
            seq, trimmed = db.execute(
                "UPDATE users SET last_seq=last_seq+1 WHERE name=? RETURNING last_seq, trimmed_up_to",
                (user,)).fetchone()
            db.execute("INSERT INTO events VALUES (?,?,?,?)", (user, seq, kind, args_json))
            out.append((user, seq, encode(builder(str(Cursor(self.epoch, seq)), *args))))
            # Trim in batches (10 % slack) so most appends do no deletes.
            if seq - trimmed > self.retention + max(1, self.retention // 10):
                floor = seq - self.retention
                db.execute("DELETE FROM events WHERE user=? AND seq<=?", (user, floor))
                db.execute("UPDATE users SET trimmed_up_to=? WHERE name=?", (floor, user))

    def fan_out(self, db: Db, items: list[Item]) -> FanOut:
        """Append the events *items* cause to each target user's log and delete their outbox
        rows, all in this transaction. An item that fails before changing anything (a poison
        item: its reads come first) is reported in ``failed`` and the others go on; a failure
        after a change (the database itself failing) raises, and the committer undoes the job."""
        events: dict[str, list[tuple[int, bytes]]] = {}
        failed: list[tuple[int, str]] = []
        for index, item in enumerate(items):
            appended: list[tuple[str, int, bytes]] = []
            changes = db.total_changes
            try:
                self._fan_out_one(db, item, appended)
            except Exception as exc:
                if db.total_changes != changes:
                    raise
                failed.append((index, f"{type(exc).__name__}: {exc}"[:200]))
                continue
            for user, seq, data in appended:
                events.setdefault(user, []).append((seq, data))
        return FanOut(events, failed)
