"""The wire envelope: the JSON objects the server sends and receives, and their sizes.

The reference server builds every body with these functions and :func:`encode`,
and the simulation measures the same functions with :class:`WireSizes`, so a
simulated byte count is the byte count of a real body, not an estimate.

Every event a user can see has the same outer shape, whichever transport
carries it (``docs/PROTOCOL.md``)::

    {"type": "message"|"receipt"|"presence", "cursor": "...", ...}

Short and long polls return ``{"events": [...], "cursor": "..."}``; a WebSocket
carries each event as one text frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

#: The three transports, in the order tables and figures show them.
TRANSPORTS: tuple[str, ...] = ("short_polling", "long_polling", "websocket")

#: Largest request body (HTTP) or text frame (WebSocket) the server accepts.
MAX_BODY_BYTES = 16 * 1024
#: Largest chat message body, in characters.
MAX_MESSAGE_BODY_CHARS = 4000


def encode(obj: Any) -> bytes:
    """Serialise *obj* exactly as it goes on the wire: compact UTF-8 JSON, the bytes
    ``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)`` gives, written by orjson
    (about 20 times faster; the server encodes several envelopes per message). Envelopes hold
    strings, integers, booleans, nulls, lists and objects, on which the two agree byte for
    byte (tests/sim/test_chatcore.py); what orjson refuses (integers beyond 64 bits) falls
    back to the standard library. Floats would differ in exponent notation (``1e-7`` against
    ``1e-07``): no envelope carries one."""
    try:
        return orjson.dumps(obj)
    except (TypeError, OverflowError):
        pass
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_size(obj: Any) -> int:
    """Bytes that :func:`encode` produces for *obj*."""
    return len(encode(obj))


# --- bodies -----------------------------------------------------------------

def send_request(body: str, client_msg_id: str, *, to: str | None = None,
                 conversation: str | None = None) -> dict[str, Any]:
    """Client -> server: ``POST /api/messages`` body, or a WebSocket ``send`` frame
    without its ``type`` key. Exactly one of *to* / *conversation* is given."""
    obj: dict[str, Any] = {}
    if to is not None:
        obj["to"] = to
    if conversation is not None:
        obj["conversation"] = conversation
    obj["body"] = body
    obj["client_msg_id"] = client_msg_id
    return obj


def ack_body(msg_id: int, conversation: str, sent_at_ms: int, client_msg_id: str) -> dict[str, Any]:
    """Server -> client answer to a send: the stored message's id and time."""
    return {"id": msg_id, "conversation": conversation, "sent_at": sent_at_ms,
            "client_msg_id": client_msg_id}


def receipt_request(conversation: str, up_to: int, status: str) -> dict[str, Any]:
    """Client -> server: ``POST /api/receipts`` body (or a WebSocket ``receipt`` frame)."""
    return {"conversation": conversation, "up_to": up_to, "status": status}


def message_event(cursor: str, msg_id: int, conversation: str, sender: str, body: str,
                  client_msg_id: str, sent_at_ms: int) -> dict[str, Any]:
    return {"type": "message", "cursor": cursor, "id": msg_id, "conversation": conversation,
            "sender": sender, "body": body, "client_msg_id": client_msg_id,
            "sent_at": sent_at_ms}


def receipt_event(cursor: str, conversation: str, user: str, up_to: int, status: str,
                  at_ms: int) -> dict[str, Any]:
    return {"type": "receipt", "cursor": cursor, "conversation": conversation, "user": user,
            "up_to": up_to, "status": status, "at": at_ms}


def presence_event(cursor: str, user: str, status: str, at_ms: int) -> dict[str, Any]:
    return {"type": "presence", "cursor": cursor, "user": user, "status": status, "at": at_ms}


def poll_response(events: list[dict[str, Any]], cursor: str) -> dict[str, Any]:
    """Body of ``GET /api/poll`` and ``GET /api/longpoll``."""
    return {"events": events, "cursor": cursor}


# --- framing ----------------------------------------------------------------

def ws_frame_overhead(payload_len: int, masked: bool) -> int:
    """WebSocket frame header bytes for a payload of *payload_len* bytes (RFC 6455 §5.2).

    2 bytes up to 125 bytes of payload, 4 up to 65,535, 10 beyond; a client->server
    frame is masked and carries 4 more bytes of masking key.
    """
    if payload_len < 0:
        raise ValueError("payload_len must be >= 0")
    head = 2 if payload_len <= 125 else 4 if payload_len <= 0xFFFF else 10
    return head + (4 if masked else 0)


# --- sizes for the simulation -------------------------------------------------

@dataclass(frozen=True)
class WireSizes:
    """Byte sizes of every body the simulation sends, measured on real envelopes.

    Identifiers get representative widths: user names of ``user_chars``
    characters, a 32-hex-digit client message id (``uuid4().hex``), an 8-hex-digit
    log epoch, cursor sequence numbers and message ids of ``id_digits`` digits, and
    13-digit millisecond timestamps.
    """

    message_event: int
    receipt_event: int
    presence_event: int
    send_request: int
    receipt_request: int
    ack: int
    poll_empty: int
    ws_send_frame: int
    ws_receipt_frame: int
    ws_ack_frame: int

    def poll_body(self, event_bytes: int, n_events: int) -> int:
        """Size of a poll response carrying *n_events* events totalling *event_bytes*."""
        return self.poll_empty + event_bytes + max(0, n_events - 1)

    @staticmethod
    @lru_cache(maxsize=256)
    def measure(payload_bytes: int, user_chars: int = 8, id_digits: int = 7,
                one_to_one: bool = True) -> "WireSizes":
        """Sizes for *payload_bytes* of text. One-to-one messages are sent with
        ``to`` and live in ``dm:<a>:<b>``; group messages name ``g:<n>``."""
        user = "u" * user_chars
        conv = "dm:" + user + ":" + user if one_to_one else "g:" + "9" * id_digits
        cursor = "e" * 8 + "." + "9" * id_digits
        msg_id = int("9" * id_digits)
        cmid = "f" * 32
        ts = 1_764_000_000_000
        body = "x" * payload_bytes
        send = send_request(body, cmid, to=user) if one_to_one else send_request(body, cmid, conversation=conv)
        receipt = receipt_request(conv, msg_id, "delivered")
        ack = ack_body(msg_id, conv, ts, cmid)
        return WireSizes(
            message_event=json_size(message_event(cursor, msg_id, conv, user, body, cmid, ts)),
            receipt_event=json_size(receipt_event(cursor, conv, user, msg_id, "delivered", ts)),
            presence_event=json_size(presence_event(cursor, user, "offline", ts)),
            send_request=json_size(send),
            receipt_request=json_size(receipt),
            ack=json_size(ack),
            poll_empty=json_size(poll_response([], cursor)),
            ws_send_frame=json_size({"type": "send", **send}),
            ws_receipt_frame=json_size({"type": "receipt", **receipt}),
            ws_ack_frame=json_size({"type": "ack", **ack}),
        )
