"""What the store hands back: small frozen records, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatcore import Cursor


@dataclass(frozen=True)
class Item:
    """One thing to fan out: a message, a receipt or a presence change.

    *outbox_id* names the outbox row that keeps it until its fan-out is committed (the
    fan-out deletes the row, so a redelivered item whose row is gone appends nothing);
    *body* is the JSON object the delivery queue carries
    (``{"kind": "message", "conversation": ..., "id": ...}``).
    """

    outbox_id: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Stored:
    """Result of a write that the delivery service must fan out: the answer to give the
    client, and the item to queue (``None`` when nothing new was stored)."""

    answer: dict[str, Any]
    item: Item | None


@dataclass(frozen=True)
class FanOut:
    """Result of fanning out a batch of items in one transaction.

    *events*: ``{user: [(seq, encoded event), ...]}`` appended now, in sequence order per
    user (an item fanned out before appends nothing again). *failed*: ``(index into the
    batch, reason)`` of the items whose fan-out raised; their changes were rolled back and
    the others' were committed.
    """

    events: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    failed: list[tuple[int, str]] = field(default_factory=list)


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
