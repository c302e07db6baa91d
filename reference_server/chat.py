"""The chat service: every operation a client can ask for, independent of transport.

HTTP handlers and the WebSocket session both call these methods with an authenticated
user and a parsed request, and turn the result (or an :class:`ApiError`) into a response
or a frame. Nothing here knows about aiohttp.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from chatcore import Cursor, PresenceState, poll_response

from .admission import Admission
from .auth import Authenticator
from .clock import SYSTEM, Clock
from .config import ServerConfig
from .delivery import DeliveryService
from .errors import ApiError
from .hub import Hub
from .metrics import Metrics
from .payloads import Credentials, ReceiptRequest, SendRequest
from .presence import Presence
from .store import Expired, Item, Page, Store, Stored
from .throttle import TokenBucket

__all__ = ["ChatService", "TokenBucket", "cursor_expired", "unavailable"]


def cursor_expired(current: Cursor) -> ApiError:
    """410: the cursor cannot be resumed; *current* is where the log is now."""
    return ApiError(410, "cursor_expired", "cursor is from another epoch or older than the retained "
                    "history: reload history, then continue from 'cursor'", cursor=str(current))


#: What a write's caller is told when its commit is done: ``(answer, None)`` or ``(None, error)``.
Reply = Callable[[dict[str, Any] | None, ApiError | None], None]


def unavailable() -> ApiError:
    """503: the server failed (a database error); the client should retry."""
    return ApiError(503, "unavailable", "server error; retry later")


class ChatService:
    def __init__(self, config: ServerConfig, store: Store, auth: Authenticator, hub: Hub,
                 presence: Presence, delivery: DeliveryService, metrics: Metrics,
                 admission: Admission | None = None, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.store = store
        self.auth = auth
        self.hub = hub
        self.presence = presence
        self.delivery = delivery
        self.metrics = metrics
        self.admission = admission
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._read_buckets: dict[str, TokenBucket] = {}

    # --- accounts ----------------------------------------------------------------
    async def register(self, cred: Credentials) -> dict[str, Any]:
        await self.auth.register(cred)
        return {"user": cred.user}

    async def login(self, cred: Credentials, address: str = "") -> dict[str, Any]:
        return await self.auth.login(cred, address)

    async def logout(self, token: str | None) -> dict[str, Any]:
        await self.auth.logout(token)
        return {"logged_out": True}

    async def housekeeping(self) -> None:
        """Periodic: drop expired tokens and the throttle buckets that are full again."""
        await self.auth.prune()
        for buckets in (self._buckets, self._read_buckets):
            for user in [u for u, b in buckets.items() if b.refill() >= b.burst]:
                del buckets[user]

    # --- writes --------------------------------------------------------------------
    def _rate_limit(self, user: str) -> None:
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self.config.rate_per_s, self.config.rate_burst, self.clock)
        if not bucket.take():
            raise ApiError(429, "rate_limited", f"more than {self.config.rate_per_s:g} requests/s "
                           f"(burst {self.config.rate_burst}): slow down and resend",
                           retry_after_ms=max(1, round(bucket.wait_s() * 1000)))

    def _read_limit(self, user: str, cost: float) -> None:
        """Reads are cheap one by one but not in bulk (a page of 500 messages is ~100 KB
        built in memory): a per-user bucket, *cost* tokens per read."""
        bucket = self._read_buckets.get(user)
        if bucket is None:
            bucket = self._read_buckets[user] = TokenBucket(self.config.read_rate_per_s, self.config.read_burst,
                                                            self.clock)
        if not bucket.take(cost):
            raise ApiError(429, "rate_limited", f"more than {self.config.read_rate_per_s:g} reads/s "
                           f"(burst {self.config.read_burst}; a history page costs 1 per 50 messages): "
                           "slow down and retry", retry_after_ms=max(1, math.ceil(bucket.wait_s(cost) * 1000)))

    def _admit(self, user: str) -> None:
        """The checks before a send is queued: the user's rate, then the server's load."""
        self._rate_limit(user)
        if self.admission is not None:
            self.admission.check(user)

    def _committed(self, reply: Reply) -> Callable[[Stored | None, BaseException | None], None]:
        """The commit callback of a write: queue its fan-out (in commit order, on the event
        loop), then answer."""
        def done(stored: Stored | None, exc: BaseException | None) -> None:
            if exc is not None:
                reply(None, exc if isinstance(exc, ApiError) else unavailable())
                return
            assert stored is not None
            if stored.item is not None:
                self.delivery.enqueue(stored.item)
            reply(stored.answer, None)
        return done

    def submit_send(self, user: str, req: SendRequest, reply: Reply) -> None:
        """Store the message (or find the one with the same client_msg_id) and queue its
        fan-out; *reply* gets the ack body (chatcore.ack_body) after the commit. Refusals
        before anything is queued (rate, overload) raise :class:`ApiError` at once."""
        self._admit(user)
        self.store.submit_message(user, req, self.clock.wall_ms(), self._committed(reply))

    def submit_receipt(self, user: str, req: ReceiptRequest, reply: Reply) -> None:
        """Advance *user*'s delivered/read watermark; the senders get a receipt event.
        Receipts are rate-limited per user but not refused for overload: there are at most
        as many as deliveries, so refusing sends is what sheds their load too."""
        self._rate_limit(user)
        self.store.submit_receipt(user, req, self.clock.wall_ms(), self._committed(reply))

    async def _wait(self, submit: Callable[[Reply], None]) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def reply(answer: dict[str, Any] | None, exc: ApiError | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(answer or {})
        submit(reply)
        return await fut

    async def send(self, user: str, req: SendRequest) -> dict[str, Any]:
        """:meth:`submit_send`, awaited: returns the ack body."""
        return await self._wait(lambda reply: self.submit_send(user, req, reply))

    async def receipt(self, user: str, req: ReceiptRequest) -> dict[str, Any]:
        """:meth:`submit_receipt`, awaited: returns the stored watermark."""
        return await self._wait(lambda reply: self.submit_receipt(user, req, reply))

    async def create_group(self, user: str, members: list[str]) -> dict[str, Any]:
        self._rate_limit(user)
        conv = await self.store.create_group(user, members, self.clock.wall_ms())
        return {"conversation": conv, "members": sorted(set(members) | {user})}

    async def announce_presence(self, user: str, status: str, at_ms: int) -> None:
        """Presence callback: store the change in the outbox and queue its fan-out to the
        user's contacts (returns without waiting for the commit)."""
        def done(item: Item | None, exc: BaseException | None) -> None:
            if item is not None:
                self.delivery.enqueue(item)
            # A failed commit loses this presence change, as a change in flight may be.
        self.store.submit_presence(user, status, at_ms, done)

    # --- reads -------------------------------------------------------------------------
    async def history(self, user: str, conversation: str, before: int | None, limit: int) -> dict[str, Any]:
        self._read_limit(user, math.ceil(limit / 50))
        return await self.store.history(user, conversation, before, limit)

    async def presence_of(self, viewer: str, users: list[str]) -> dict[str, Any]:
        """Presence of *users* as *viewer* may see it: online/offline for itself and for those
        who have sent a message in a conversation with it, ``unknown`` for everyone else,
        registered or not (the answer does not tell which)."""
        self._read_limit(viewer, math.ceil(len(users) / 50))
        visible = await self.store.visible_to(viewer, users)
        status = await self.presence.status([u for u in users if u in visible])
        return {"presence": {u: status.get(u, PresenceState.UNKNOWN.value) for u in users}}

    async def poll(self, user: str, conn_id: str, after: Cursor | None) -> dict[str, Any]:
        """Short poll: the events after *after* now (possibly none)."""
        await self.presence.touch(user, conn_id)
        return self._page_body(await self.store.read_events(user, after, self.config.poll_max_events))

    async def long_poll(self, user: str, conn_id: str, after: Cursor | None, timeout_s: float,
                        gone: asyncio.Future[None] | None = None) -> dict[str, Any]:
        """Long poll: like :meth:`poll`, but with no events waits up to *timeout_s* for one.
        *gone* resolves when the client disconnects: the hold is released at once, and the
        connection's presence expires a TTL from then, like after any poll (not a TTL after
        the hold it asked for)."""
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
                if gone is not None and gone.done():
                    break
                self.metrics.held_longpolls.inc(1)
                try:
                    await asyncio.wait([waiter] if gone is None else [waiter, gone], timeout=remaining,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self.metrics.held_longpolls.inc(-1)
                if gone is not None and gone.done():
                    break
            finally:
                self.hub.drop_waiter(user, waiter)
        await self.presence.release(user, conn_id)
        return self._page_body(page)  # nobody reads it; the handler ends

    @staticmethod
    def _page_body(page: Page | Expired) -> dict[str, Any]:
        if isinstance(page, Expired):
            raise cursor_expired(page.current)
        return poll_response(page.events, str(page.cursor))
