"""Strict parsing of request bodies and query parameters.

Each parser takes the decoded JSON (or query string values) and returns a small
frozen dataclass, or raises :class:`~reference_server.errors.ApiError` 400 naming
the field. Unknown fields are refused: a client that sends ``sender`` learns at
once that the sender is always the token's user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from chatcore import MAX_BODY_BYTES, MAX_MESSAGE_BODY_CHARS, Cursor, CursorError, ReceiptStatus

from .errors import ApiError, bad_request

USER_RE = re.compile(r"^[a-z0-9_]{1,32}$")
DM_RE = re.compile(r"^dm:([a-z0-9_]{1,32}):([a-z0-9_]{1,32})$")
GROUP_RE = re.compile(r"^g:([1-9][0-9]{0,17})$")
CLIENT_MSG_ID_RE = re.compile(r"^[\x21-\x7e]{1,64}$")
MAX_PASSWORD_CHARS = 256
MAX_GROUP_MEMBERS = 256


def dm_id(a: str, b: str) -> str:
    """The id of the 1:1 conversation between *a* and *b*: ``dm:<a>:<b>``, names sorted."""
    x, y = sorted((a, b))
    return f"dm:{x}:{y}"


def decode_json(raw: bytes) -> Any:
    """Decode a request body or text frame; 413 when too large, 400 when it is not strict
    JSON text in UTF-8. ``orjson`` refuses everything that could not be stored or sent on as
    UTF-8 JSON: invalid UTF-8, a lone surrogate escape (``"\\ud800"``), ``NaN``/``Infinity``,
    a number too large for a double (thousands of digits), and nesting past its depth limit
    (a Rust parser: no Python recursion)."""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"body of {len(raw)} bytes: at most {MAX_BODY_BYTES}")
    if not raw.strip():
        raise bad_request("empty body: expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON: {exc}") from None


def _object(obj: Any, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise bad_request(f"expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - required - optional
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(repr(k) for k in sorted(unknown))}")
    missing = required - set(obj)
    if missing:
        raise bad_request(f"missing field(s): {', '.join(sorted(missing))}")
    return obj


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise bad_request(f"{key}: expected a string")
    return value


def user_name(value: Any, field: str = "user") -> str:
    if not isinstance(value, str) or not USER_RE.match(value):
        raise bad_request(f"{field}={value!r}: expected 1-32 characters a-z 0-9 _")
    return value


def conversation_id(value: Any, field: str = "conversation") -> str:
    if not isinstance(value, str) or not (DM_RE.match(value) or GROUP_RE.match(value)):
        raise bad_request(f"{field}={value!r}: expected 'dm:<a>:<b>' or 'g:<n>'")
    m = DM_RE.match(value)
    if m and not m.group(1) < m.group(2):
        raise bad_request(f"{field}={value!r}: dm names must be distinct and sorted")
    return value


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


def parse_credentials(obj: Any) -> Credentials:
    o = _object(obj, {"user", "password"})
    password = _str(o, "password")
    if not 1 <= len(password) <= MAX_PASSWORD_CHARS:
        raise bad_request(f"password: 1-{MAX_PASSWORD_CHARS} characters")
    return Credentials(user_name(o["user"]), password)


@dataclass(frozen=True)
class SendRequest:
    body: str
    client_msg_id: str
    to: str | None = None
    conversation: str | None = None


def parse_send(obj: Any) -> SendRequest:
    """``{to | conversation, body, client_msg_id}`` (a WebSocket frame has no ``type`` here)."""
    o = _object(obj, {"body", "client_msg_id"}, {"to", "conversation"})
    if ("to" in o) == ("conversation" in o):
        raise bad_request("exactly one of 'to' and 'conversation' is required")
    body = _str(o, "body")
    if not 1 <= len(body) <= MAX_MESSAGE_BODY_CHARS:
        raise bad_request(f"body: 1-{MAX_MESSAGE_BODY_CHARS} characters, got {len(body)}")
    cmid = _str(o, "client_msg_id")
    if not CLIENT_MSG_ID_RE.match(cmid):
        raise bad_request("client_msg_id: 1-64 printable ASCII characters, no spaces")
    if "to" in o:
        return SendRequest(body, cmid, to=user_name(o["to"], "to"))
    return SendRequest(body, cmid, conversation=conversation_id(o["conversation"]))


@dataclass(frozen=True)
class ReceiptRequest:
    conversation: str
    up_to: int
    status: str


def parse_receipt(obj: Any) -> ReceiptRequest:
    o = _object(obj, {"conversation", "up_to", "status"})
    up_to = o["up_to"]
    if isinstance(up_to, bool) or not isinstance(up_to, int) or not 1 <= up_to < 2 ** 53:
        raise bad_request("up_to: expected a message id (integer >= 1)")
    try:
        status = ReceiptStatus(o["status"]).value
    except (ValueError, TypeError):
        raise bad_request("status: expected 'delivered' or 'read'") from None
    return ReceiptRequest(conversation_id(o["conversation"]), up_to, status)


def parse_group(obj: Any) -> list[str]:
    o = _object(obj, {"members"})
    members = o["members"]
    if not isinstance(members, list) or not members:
        raise bad_request("members: expected a non-empty list of user names")
    if len(members) > MAX_GROUP_MEMBERS:
        raise bad_request(f"members: at most {MAX_GROUP_MEMBERS}")
    return [user_name(m, "members[]") for m in members]


def parse_cursor(text: str | None) -> Cursor | None:
    """``after`` query parameter or ``resume`` field: absent -> None, malformed -> 400."""
    if text is None:
        return None
    try:
        return Cursor.parse(text)
    except CursorError as exc:
        raise bad_request(f"after: {exc}") from None


def parse_number(text: str | None, field: str, default: float, low: float, high: float) -> float:
    """A query parameter that must be a finite number in [low, high]."""
    if text is None:
        return default
    try:
        value = float(text) if len(text) <= 32 else float("nan")
    except ValueError:
        raise bad_request(f"{field}={text[:40]!r}: expected a number") from None
    if not low <= value <= high:  # also refuses nan
        raise bad_request(f"{field}={text[:40]!r}: expected {low:g}-{high:g}")
    return value


def parse_int(text: str | None, field: str, default: int | None, low: int, high: int) -> int | None:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > len(str(high)):
        raise bad_request(f"{field}={text[:40]!r}: expected an integer {low}-{high}")
    value = int(text)
    if not low <= value <= high:
        raise bad_request(f"{field}={text!r}: expected an integer {low}-{high}")
    return value
