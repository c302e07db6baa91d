"""What aiohttp's HTTP server does not bound on its own, added around it (docs/server.md,
"Hostile clients").

* **Header timeout.** aiohttp times out an idle keep-alive connection, but not a client
  that sends a request's line and headers one byte at a time: 2,000 such clients hold
  2,000 sockets for as long as they like (Slowloris). :class:`GuardedHandler` closes a
  connection whose request head is not complete ``header_timeout_s`` after the connection
  opened or after the head's first byte (nginx's ``client_header_timeout``, Apache's
  ``RequestReadTimeout``). Bodies (at most 16 KiB) have their own bound in the handlers.
* **Disconnects.** :meth:`GuardedHandler.on_lost` tells a held long poll that its client
  went away, so it is released at once (aiohttp does not cancel a handler whose client
  left, and its ``handler_cancellation`` would cancel every handler at any point).
* **Quiet refusals.** aiohttp logs every malformed request (bad request line, bad header
  bytes, over-long header) at ERROR with a traceback, so anyone can fill the log. A
  malformed request is the client's fault: :class:`QuietServerLog` logs it at INFO, one
  line without the traceback, at most one line per ``every_s`` with a count of the others.
  Every other exception aiohttp reports keeps its level and traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)


class QuietServerLog(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    """The logger aiohttp's request handler is given (``AppRunner(logger=...)``)."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        super().__init__(logger, {})
        self.every_s = every_s
        self.suppressed = 0
        self._last = -float("inf")

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if not isinstance(exc, HttpProcessingError):
            self.logger.error(msg, *args, exc_info=exc_info, **kw)
            return
        now = time.monotonic()
        if now - self._last < self.every_s:
            self.suppressed += 1
            return
        self._last = now
        others, self.suppressed = self.suppressed, 0
        self.logger.info("malformed HTTP request refused (%s)%s", str(exc).replace("\n", " ")[:200],
                         f"; {others} more since the last one logged" if others else "")


class GuardedHandler(web_protocol.RequestHandler):
    """aiohttp's request handler plus the header timeout (module docstring)."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if getattr(self, "_head_timer", None) is None:
            self._head_timer = self._loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count > before or self._upgraded or self._payload_parser is not None:
            self._disarm()  # a whole head arrived (or the connection is a WebSocket now)
        elif self.transport is not None and not self._force_close:
            self._arm()  # part of a new head: it has header_timeout_s from its first byte

    def on_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* when the peer goes away (a held long poll lets go at once, without
        checking on a timer); returns the function that cancels this."""
        callbacks = self.__dict__.setdefault("_lost", set())
        callbacks.add(callback)
        return lambda: callbacks.discard(callback)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        for callback in list(self.__dict__.pop("_lost", ())):
            callback()

    def _head_too_slow(self) -> None:
        """No complete request head since the timer started (a drip, or a connection that
        never sent one): close it, unless a request is being answered (its own bounds apply)."""
        self._head_timer = None
        if not self._request_in_progress:
            log.debug("closing a connection whose request head took over %.1f s", self.header_timeout_s)
            self.force_close()


class _GuardedServer(web.Server):
    header_timeout_s = 10.0

    def __call__(self) -> web_protocol.RequestHandler:
        handler = GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout_s = self.header_timeout_s
        return handler


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections get the header timeout and the quiet log."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        kwargs.setdefault("logger", QuietServerLog(logging.getLogger("aiohttp.server")))
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        server.header_timeout_s = self._header_timeout_s  # type: ignore[attr-defined]
        return server
