"""One client class per transport: how it reads its log, how it uploads, and how it notices a
dead session.

* short polling: each client polls every ``poll_interval_s`` at its own phase; a poll returns
  every event in its log. An event waits for the next poll. A poll into a dead server fails:
  the client notices one round trip later (reset) or after ``request_timeout_s`` (silent).
* long polling: the client always has one request held at the server; the delivery service
  wakes it, the response carries every pending event, and the client re-requests at once. An
  event that arrives while no request is held waits for the next request, which returns at
  once. A reset breaks the held request at once; a silent server is noticed when the client's
  own timeout (``long_poll_timeout_s + request_timeout_s`` after sending) expires.
* WebSocket: one connection per client, opened once (handshake); the delivery service pushes
  each event as a frame; the server pings every ``ws_heartbeat_s``. A reset breaks the
  connection at once; a silent server is noticed when no ping came for ``ws_heartbeat_s +
  request_timeout_s``.

Uploads (sends and receipts) are POSTs from a pool of keep-alive connections
(:class:`sim.transports.http.HttpPool`) for the HTTP transports and frames for WebSocket.
"""

from __future__ import annotations

from ..clients import Client
from .long_polling import LongPollingClient
from .short_polling import ShortPollingClient
from .websocket import WebSocketClient

__all__ = ["CLIENTS", "LongPollingClient", "ShortPollingClient", "WebSocketClient"]

CLIENTS: dict[str, type[Client]] = {"short_polling": ShortPollingClient, "long_polling": LongPollingClient,
                                    "websocket": WebSocketClient}
