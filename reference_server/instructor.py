"""A workshop instructor's outage switch (docs/PROTOCOL.md, "Instructor outage").

``chatlab serve --instructor-key KEY`` registers ``POST /api/instructor/outage``. With the key,
``{"down": true}`` makes the server behave as if it had died: every open WebSocket and every
request in flight has its TCP connection aborted (no close frame, as a crash would), and every
new request and WebSocket upgrade is answered ``503 unavailable`` until ``{"down": false}`` (or
the optional ``"for_s"`` has passed). The store, the queue and the event logs are untouched, so
each client backs off, reconnects when the server is back and resumes from its cursor: the
room sees its own backoff delays grow while the server stays down.

The page (``/``, its static files) and this endpoint keep answering, so the instructor can
bring the server back from the same page. Without ``--instructor-key`` none of this exists
(the endpoint is 404).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web

from chatcore import encode

log = logging.getLogger(__name__)

#: Longest automatic outage (``for_s``): a forgotten switch heals itself within ten minutes.
MAX_FOR_S = 600.0
PATH = "/api/instructor/outage"


class Outage:
    """Whether the server plays dead, and the connections to cut when it starts to."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.down = False
        self.inflight: set[asyncio.Transport] = set()
        self._timer: asyncio.TimerHandle | None = None

    def set(self, down: bool, for_s: float | None = None) -> int:
        """Go down (cutting every connection in flight; returns how many) or come back up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.down = down
        if not down:
            return 0
        cut = 0
        for t in list(self.inflight):
            if not t.is_closing():
                t.abort()
                cut += 1
        self.inflight.clear()
        if for_s is not None:
            self._timer = asyncio.get_running_loop().call_later(for_s, self.set, False)
        return cut


OUTAGE: web.AppKey[Outage] = web.AppKey("outage", Outage)
_EXEMPT = ("/static/", PATH)


def _exempt(path: str) -> bool:
    return path == "/" or path.startswith(_EXEMPT)


def _json(body: dict, status: int) -> web.Response:
    return web.Response(body=encode(body), status=status, content_type="application/json")


@web.middleware
async def outage_middleware(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    outage = request.app.get(OUTAGE)
    if outage is None or _exempt(request.path):
        return await handler(request)
    if outage.down:
        return _json({"error": "unavailable", "message": "the server is down (the instructor's outage)"}, 503)
    transport = request.transport
    if transport is None:
        return await handler(request)
    outage.inflight.add(transport)
    try:
        return await handler(request)
    finally:
        outage.inflight.discard(transport)


async def outage_handler(request: web.Request) -> web.Response:
    outage = request.app[OUTAGE]
    try:
        body = await request.json()
    except ValueError:
        return _json({"error": "bad_request", "message": "expected a JSON object"}, 400)
    if not isinstance(body, dict) or set(body) - {"key", "down", "for_s"}:
        return _json({"error": "bad_request", "message": "expected {\"key\", \"down\", optional \"for_s\"}"}, 400)
    key = body.get("key")
    if not isinstance(key, str) or not hmac.compare_digest(key.encode(), outage.key.encode()):
        return _json({"error": "forbidden", "message": "wrong instructor key"}, 403)
    down = body.get("down")
    if not isinstance(down, bool):
        return _json({"error": "bad_request", "message": f"down={down!r}: expected true or false"}, 400)
    for_s = body.get("for_s")
    if for_s is not None and (isinstance(for_s, bool) or not isinstance(for_s, (int, float))
                              or not math.isfinite(for_s) or not 0 < for_s <= MAX_FOR_S):
        return _json({"error": "bad_request", "message": f"for_s={for_s!r}: expected a number of seconds in "
                      f"(0, {MAX_FOR_S:g}]"}, 400)
    if for_s is not None and not down:
        return _json({"error": "bad_request", "message": "for_s goes with down=true"}, 400)
    cut = outage.set(down, float(for_s) if for_s is not None else None)
    log.warning("instructor outage: %s%s", "DOWN" if down else "up",
                f" for {for_s:g} s, {cut} connections cut" if down and for_s else (f", {cut} connections cut" if down else ""))
    return _json({"down": outage.down, "connections_cut": cut, "for_s": for_s}, 200)


def install(app: web.Application, key: str) -> None:
    """Add the outage switch to *app* (before it starts)."""
    app[OUTAGE] = Outage(key)
    app.middlewares.append(outage_middleware)
    app.router.add_post(PATH, outage_handler)
