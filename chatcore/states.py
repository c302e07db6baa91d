"""States as data (after h11's ``_state.py``): what exists, and what may follow what.

Message ticks only move forward: sent -> delivered -> read. A receipt that would
move a message backwards (a late "delivered" after "read") changes nothing.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import Mapping, TypeVar

S = TypeVar("S")
W = TypeVar("W")


class MessageState(str, Enum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"


class ReceiptStatus(str, Enum):
    """What a recipient reports in ``POST /api/receipts``."""

    DELIVERED = "delivered"
    READ = "read"


class EventKind(IntEnum):
    """What an event in a user's log carries: a message, or a receipt of one of the two kinds
    (the simulation keeps these as small integers in its hot loops)."""

    MESSAGE = 0
    DELIVERED = 1
    READ = 2


class PresenceState(str, Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    #: What a user who may not see another's presence is told (the server's presence is by
    #: participation): not a state a user is in, so no transition leads to or from it.
    UNKNOWN = "unknown"


class ConnectionState(str, Enum):
    """A client's connection, as the client library and the crash model see it."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"


#: Allowed forward moves of a message's state.
MESSAGE_TRANSITIONS: dict[MessageState, frozenset[MessageState]] = {
    MessageState.SENT: frozenset({MessageState.DELIVERED, MessageState.READ}),
    MessageState.DELIVERED: frozenset({MessageState.READ}),
    MessageState.READ: frozenset(),
}

#: Allowed moves of a client connection (the client library and the simulation's clients move
#: only along these; closing the client is allowed from any state).
CONNECTION_TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.DISCONNECTED: frozenset({ConnectionState.CONNECTING}),
    ConnectionState.CONNECTING: frozenset({ConnectionState.CONNECTED, ConnectionState.BACKING_OFF,
                                           ConnectionState.DISCONNECTED}),
    ConnectionState.CONNECTED: frozenset({ConnectionState.DISCONNECTED, ConnectionState.BACKING_OFF}),
    ConnectionState.BACKING_OFF: frozenset({ConnectionState.CONNECTING, ConnectionState.DISCONNECTED}),
}


def advance_message_state(current: MessageState, receipt: ReceiptStatus | str) -> MessageState:
    """The state after *receipt*; unchanged when the receipt would go backwards."""
    target = MessageState(ReceiptStatus(receipt).value)
    return target if target in MESSAGE_TRANSITIONS[current] else current


class TransitionError(ValueError):
    """A move that the state table does not allow."""


def check_transition(table: Mapping[S, frozenset[S]], current: S, target: S) -> S:
    """Return *target* if the table allows ``current -> target``; raise TransitionError otherwise."""
    if target not in table[current]:
        raise TransitionError(f"{getattr(current, 'value', current)} -> {getattr(target, 'value', target)}: "
                              f"not an allowed transition")
    return target


def advance_watermark(stored: W | None, proposed: W) -> tuple[W, bool]:
    """Receipts only move forward: the watermark after a receipt for *proposed* arrives where
    *stored* was the newest acknowledged position (None: none yet). Returns ``(effective, moved)``;
    a receipt at or below the stored watermark changes nothing (``moved`` is False) and reaches
    nobody. Positions are anything ordered: message ids, cursors."""
    if stored is None or stored < proposed:  # type: ignore[operator]
        return proposed, True
    return stored, False
