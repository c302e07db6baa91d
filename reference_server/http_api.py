"""HTTP endpoints (docs/PROTOCOL.md): thin handlers that authenticate, parse and call
:class:`~reference_server.chat.ChatService`.

The error middleware is the one place where a refusal becomes a response: an
:class:`ApiError` keeps its status, aiohttp's own refusals (unknown route, wrong
method, body too large) get the same JSON shape, and an unexpected exception is
logged and answered 503 (the server's fault, retry later), never 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from chatcore import MAX_BODY_BYTES, encode

from . import payloads
from .auth import bearer
from .chat import ChatService
from .errors import ApiError, bad_request
from .http_guard import GuardedHandler
from .metrics import Metrics

log = logging.getLogger(__name__)

CHAT: web.AppKey[ChatService] = web.AppKey("chat", ChatService)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TRANSPORT_OF_PATH = {"/api/poll": "short_polling", "/api/longpoll": "long_polling"}
_AIOHTTP_CODES = {404: "not_found", 405: "method_not_allowed", 408: "timeout", 413: "too_large"}


def json_response(obj: Any, status: int = 200) -> web.Response:
    """A response whose body is exactly ``chatcore.encode(obj)``."""
    return web.Response(body=encode(obj), status=status, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except ApiError as exc:
        response = json_response(exc.body(), exc.status)
        retry_ms = exc.extra.get("retry_after_ms")
        if isinstance(retry_ms, int):
            response.headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))  # whole seconds, rounded up
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _AIOHTTP_CODES.get(exc.status, "bad_request" if exc.status < 500 else "unavailable")
        message = exc.reason if exc.status != 413 else f"body larger than {MAX_BODY_BYTES} bytes"
        response = json_response({"error": code, "message": message}, exc.status)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response = json_response({"error": "unavailable", "message": "server error; retry later"}, 503)
    if response.status >= 400:
        metrics.rejected.inc(status=str(response.status))
    if request.path != "/ws" and isinstance(response, web.Response):
        transport = _TRANSPORT_OF_PATH.get(request.path, "api")
        body_out = len(response.body) if isinstance(response.body, (bytes, bytearray)) else 0
        metrics.traffic(transport, request.content_length or 0, body_out)
    return response


def _query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, refusing unknown or repeated ones (and a token in the URL)."""
    q = request.query
    unknown = set(q) - allowed
    if unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    for key in q:
        if len(q.getall(key)) > 1:
            raise bad_request(f"{key}: given more than once")
    return dict(q)


async def _raw_body(request: web.Request) -> bytes:
    try:  # a body dripped byte by byte gets as long as a request head (http_guard.py)
        async with asyncio.timeout(request.app[CHAT].config.http_header_timeout_s):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "timeout", "request body not received in time") from None


async def _body(request: web.Request) -> Any:
    return payloads.decode_json(await _raw_body(request))


def token_of(request: web.Request) -> str | None:
    return bearer(request.headers.get("Authorization"))


async def _user(request: web.Request) -> str:
    return await request.app[CHAT].auth.user_of(token_of(request))


def poll_conn_id(token: str | None) -> str:
    """Presence identity of a polling client: one per login (token), i.e. per device (the
    router prefixes it with ``t:`` and, in a cluster, the server)."""
    return hashlib.sha256((token or "").encode()).hexdigest()[:16]


# --- handlers ---------------------------------------------------------------------
async def register(request: web.Request) -> web.Response:
    _query(request, set())
    cred = payloads.parse_credentials(await _body(request))
    return json_response(await request.app[CHAT].register(cred), 201)


async def login(request: web.Request) -> web.Response:
    _query(request, set())
    cred = payloads.parse_credentials(await _body(request))
    return json_response(await request.app[CHAT].login(cred, request.remote or ""))


async def logout(request: web.Request) -> web.Response:
    """Revoke the request's token; idempotent (a retry after a lost answer succeeds too)."""
    _query(request, set())
    if (await _raw_body(request)).strip():
        raise bad_request("logout takes no body")
    return json_response(await request.app[CHAT].logout(token_of(request)))


async def send_message(request: web.Request) -> web.Response:
    user = await _user(request)
    _query(request, set())
    req = payloads.parse_send(await _body(request))
    return json_response(await request.app[CHAT].send(user, req))


async def post_receipt(request: web.Request) -> web.Response:
    user = await _user(request)
    _query(request, set())
    req = payloads.parse_receipt(await _body(request))
    return json_response(await request.app[CHAT].receipt(user, req))


async def create_group(request: web.Request) -> web.Response:
    user = await _user(request)
    _query(request, set())
    members = payloads.parse_group(await _body(request))
    return json_response(await request.app[CHAT].create_group(user, members), 201)


async def history(request: web.Request) -> web.Response:
    user = await _user(request)
    q = _query(request, {"before", "limit"})
    conv = payloads.conversation_id(request.match_info["conversation"], "conversation id")
    before = payloads.parse_int(q.get("before"), "before", None, 1, 2 ** 53)
    limit = payloads.parse_int(q.get("limit"), "limit", 50, 1, 500)
    assert limit is not None
    return json_response(await request.app[CHAT].history(user, conv, before, limit))


async def presence(request: web.Request) -> web.Response:
    viewer = await _user(request)
    q = _query(request, {"users"})
    names = [n for n in q.get("users", "").split(",") if n]
    if not names or len(names) > 100:
        raise bad_request("users: expected 1-100 comma-separated user names")
    users = [payloads.user_name(n, "users[]") for n in dict.fromkeys(names)]
    return json_response(await request.app[CHAT].presence_of(viewer, users))


async def poll(request: web.Request) -> web.Response:
    user = await _user(request)
    q = _query(request, {"after"})
    after = payloads.parse_cursor(q.get("after"))
    chat = request.app[CHAT]
    conn_id = chat.delivery.router.conn_id("t", poll_conn_id(token_of(request)))
    return json_response(await chat.poll(user, conn_id, after))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def long_poll(request: web.Request) -> web.Response:
    user = await _user(request)
    chat = request.app[CHAT]
    q = _query(request, {"after", "timeout"})
    after = payloads.parse_cursor(q.get("after"))
    timeout = payloads.parse_number(q.get("timeout"), "timeout", chat.config.longpoll_default_timeout_s,
                                    0.0, chat.config.longpoll_max_timeout_s)
    conn_id = chat.delivery.router.conn_id("t", poll_conn_id(token_of(request)))
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    transport = request.transport
    if transport is None or transport.is_closing():
        gone.set_result(None)
    protocol = request.protocol
    cancel = protocol.on_lost(partial(_resolve, gone)) \
        if isinstance(protocol, GuardedHandler) else None  # another runner: held to its timeout
    try:
        return json_response(await chat.long_poll(user, conn_id, after, timeout, gone))
    finally:
        if cancel is not None:
            cancel()


async def metrics_endpoint(request: web.Request) -> web.Response:
    await _user(request)
    chat = request.app[CHAT]
    try:
        chat.metrics.queue_lag.set(await chat.delivery.queue.lag())
    except Exception:
        log.warning("could not read queue lag", exc_info=True)
    return web.Response(text=chat.metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


async def healthz(request: web.Request) -> web.Response:
    """200 only when Redis answers, the delivery queue still has its consumer group and the
    consumer has read it recently; else 503 naming what is wrong."""
    chat = request.app[CHAT]
    delivery = chat.delivery
    try:
        await delivery.queue.redis.ping()
        has_group = await delivery.queue.has_group()
    except Exception as exc:
        return json_response({"status": "unavailable", "redis": str(exc)[:200]}, 503)
    if not has_group:
        return json_response({"status": "unavailable", "delivery": "the queue's consumer group is missing"}, 503)
    if not delivery.healthy(chat.clock.monotonic()):
        return json_response({"status": "unavailable", "delivery": "the delivery consumer is not reading"}, 503)
    return json_response({"status": "ok", "epoch": chat.store.epoch, "delivery_backlog": delivery.backlog()})


#: The demo page loads its script and style from /static (no inline code), talks to the same
#: origin over fetch and WebSocket, and is never framed. ``connect-src 'self'`` covers ws:/wss:
#: to the same host in CSP Level 3 browsers; the explicit ws(s) source covers older ones.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Headers that only mean something for a document a browser shows (the page and its static
#: files): the API's JSON answers, polled many times a second, carry only ``nosniff``, so that
#: the header bytes the lab measures per poll stay what a lean chat API sends.
_DOCUMENT_HEADERS = {"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                     "Cross-Origin-Opener-Policy": "same-origin"}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer: no MIME sniffing; on the page and static files also no referrer,
    no framing, and on HTML the Content-Security-Policy (docs/PROTOCOL.md, "Hostile clients")."""
    if isinstance(response, web.WebSocketResponse) or response.status == 101:
        return
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/api/") or request.path in ("/healthz", "/metrics", "/ws"):
        return
    for key, value in _DOCUMENT_HEADERS.items():
        response.headers.setdefault(key, value)
    if response.content_type == "text/html" or request.path == "/":
        host = request.host if _HOST_RE.match(request.host) else "localhost"
        response.headers.setdefault("Content-Security-Policy", _CSP.format(host=host))


_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def add_routes(app: web.Application, static_dir: Path) -> None:
    app.router.add_post("/api/register", register)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_post("/api/messages", send_message)
    app.router.add_post("/api/receipts", post_receipt)
    app.router.add_post("/api/groups", create_group)
    app.router.add_get("/api/conversations/{conversation}/messages", history)
    app.router.add_get("/api/presence", presence)
    app.router.add_get("/api/poll", poll)
    app.router.add_get("/api/longpoll", long_poll)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/healthz", healthz)

    app.on_response_prepare.append(_security_headers)

    async def index(request: web.Request) -> web.StreamResponse:
        page = static_dir / "index.html"
        if not page.is_file():
            raise ApiError(404, "not_found", "no demo page installed (reference_server/static/index.html)")
        return web.FileResponse(page)

    app.router.add_get("/", index)
    if static_dir.is_dir():
        app.router.add_static("/static/", static_dir, follow_symlinks=False)
