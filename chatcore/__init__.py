"""Vocabulary shared by the simulation (``sim``) and the reference server.

This package is pure: no sockets, no files, no clocks, no global random state.
It is the one place where the wire envelope and its byte sizes, cursors, the
message/receipt/presence/connection states and their transitions, the receipt watermark
rule, the reconnect backoff policies, the scenario parameters and the tables both halves
report are defined.
``sim`` and ``reference_server`` both import it and never import each other.
"""

from .backoff import POLICIES, Backoff, backoff_delay, reconnect_seed
from .cursor import Cursor, CursorError
from .states import (
    CONNECTION_TRANSITIONS,
    MESSAGE_TRANSITIONS,
    ConnectionState,
    EventKind,
    MessageState,
    PresenceState,
    ReceiptStatus,
    TransitionError,
    advance_message_state,
    advance_watermark,
    check_transition,
)
from .wire import (
    MAX_BODY_BYTES,
    MAX_MESSAGE_BODY_CHARS,
    TRANSPORTS,
    WireSizes,
    ack_body,
    encode,
    json_size,
    message_event,
    poll_response,
    presence_event,
    receipt_event,
    receipt_request,
    send_request,
    ws_frame_overhead,
)

__all__ = [
    "POLICIES",
    "Backoff",
    "backoff_delay",
    "reconnect_seed",
    "Cursor",
    "CursorError",
    "ConnectionState",
    "MessageState",
    "PresenceState",
    "ReceiptStatus",
    "advance_message_state",
    "advance_watermark",
    "check_transition",
    "CONNECTION_TRANSITIONS",
    "MESSAGE_TRANSITIONS",
    "EventKind",
    "TransitionError",
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BODY_CHARS",
    "TRANSPORTS",
    "WireSizes",
    "ack_body",
    "encode",
    "json_size",
    "message_event",
    "poll_response",
    "presence_event",
    "receipt_event",
    "receipt_request",
    "send_request",
    "ws_frame_overhead",
]
