"""The chat service: every operation a client can ask for, independent of transport.

HTTP handlers and the WebSocket session both call these methods with an authenticated
user and a parsed request, and turn the result (or an :class:`ApiError`) into a response
or a frame. Nothing here knows about aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chatcore import Cursor, poll_response

from .auth import Authenticator
from .config import ServerConfig
from .delivery import DeliveryService
from .errors import ApiError, not_found
from .hub import Hub
from .metrics import Metrics
from .payloads import Credentials, ReceiptRequest, SendRequest
from .presence import Presence
from .store import Expired, Page, Store


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def cursor_expired(current: Cursor) -> ApiError:
    """410: the cursor cannot be resumed; *current* is where the log is now."""
    return ApiError(410, "cursor_expired", "cursor is from another epoch or older than the retained "
                    "history: reload history, then continue from 'cursor'", cursor=str(current))


class ChatService:
    def __init__(self, config: ServerConfig, store: Store, auth: Authenticator, hub: Hub,
                 presence: Presence, delivery: DeliveryService, metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.auth = auth
        self.hub = hub
        self.presence = presence
        self.delivery = delivery
        self.metrics = metrics
        self._buckets: dict[str, TokenBucket] = {}

    # --- accounts ----------------------------------------------------------------
    async def register(self, cred: Credentials) -> dict[str, Any]:
        await self.auth.register(cred)
        return {"user": cred.user}

    async def login(self, cred: Credentials) -> dict[str, Any]:
        return await self.auth.login(cred)

    # --- writes --------------------------------------------------------------------
    def _rate_limit(self, user: str) -> None:
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self.config.rate_per_s, self.config.rate_burst)
        if not bucket.take():
            raise ApiError(429, "rate_limited", f"more than {self.config.rate_per_s:g} requests/s "
                           f"(burst {self.config.rate_burst}): slow down and resend")

    async def send(self, user: str, req: SendRequest) -> dict[str, Any]:
        """Store the message (or find the one with the same client_msg_id) and queue its
        fan-out. Returns the ack body (chatcore.ack_body)."""
        self._rate_limit(user)
        stored = await self.store.add_message(user, req, _now_ms())
        if stored.item is not None:
            await self.delivery.enqueue(stored.item, stored.outbox_id)
        return stored.answer

    async def receipt(self, user: str, req: ReceiptRequest) -> dict[str, Any]:
        """Advance *user*'s delivered/read watermark; the senders get a receipt event."""
        self._rate_limit(user)
        stored = await self.store.add_receipt(user, req, _now_ms())
        if stored.item is not None:
            await self.delivery.enqueue(stored.item, stored.outbox_id)
        return stored.answer

    async def create_group(self, user: str, members: list[str]) -> dict[str, Any]:
        self._rate_limit(user)
        conv = await self.store.create_group(user, members, _now_ms())
        return {"conversation": conv, "members": sorted(set(members) | {user})}

    async def announce_presence(self, user: str, status: str, at_ms: int) -> None:
        """Presence callback: queue the change for fan-out to the user's contacts."""
        await self.delivery.enqueue({"kind": "presence", "user": user, "status": status, "at": at_ms})

    # --- reads -------------------------------------------------------------------------
    async def history(self, user: str, conversation: str, before: int | None, limit: int) -> dict[str, Any]:
        return await self.store.history(user, conversation, before, limit)

    async def presence_of(self, users: list[str]) -> dict[str, Any]:
        missing = await self.store.missing_users(users)
        if missing:
            raise not_found(f"users: no such user {missing[0]!r}")
        return {"presence": await self.presence.status(users)}

    async def poll(self, user: str, conn_id: str, after: Cursor | None) -> dict[str, Any]:
        """Short poll: the events after *after* now (possibly none)."""
        await self.presence.touch(user, conn_id)
        return self._page_body(await self.store.read_events(user, after, self.config.poll_max_events))

    async def long_poll(self, user: str, conn_id: str, after: Cursor | None, timeout_s: float) -> dict[str, Any]:
        """Long poll: like :meth:`poll`, but with no events waits up to *timeout_s* for one."""
        await self.presence.touch(user, conn_id, extra_ms=int(timeout_s * 1000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            waiter = self.hub.waiter(user)  # before the read: no lost wake-up
            try:
                page = await self.store.read_events(user, after, self.config.poll_max_events)
                remaining = deadline - loop.time()
                if isinstance(page, Expired) or page.events or remaining <= 0 or self.hub.closing:
                    return self._page_body(page)
                self.metrics.held_longpolls.inc(1)
                try:
                    async with asyncio.timeout(remaining):
                        await waiter
                except TimeoutError:
                    pass
                finally:
                    self.metrics.held_longpolls.inc(-1)
            finally:
                self.hub.drop_waiter(user, waiter)

    @staticmethod
    def _page_body(page: Page | Expired) -> dict[str, Any]:
        if isinstance(page, Expired):
            raise cursor_expired(page.current)
        return poll_response(page.events, str(page.cursor))


def _now_ms() -> int:
    return int(time.time() * 1000)
