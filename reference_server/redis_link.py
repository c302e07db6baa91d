"""Connecting to Redis: a real server from a URL, or the embedded fakeredis.

The embedded mode uses one explicit ``fakeredis.FakeServer`` per process, shared by
every client made here: two FakeAsyncRedis objects without a shared server would
see two different databases.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool

_EMBEDDED: Any = None


def embedded_server() -> Any:
    """The process-wide fakeredis server (created on first use)."""
    global _EMBEDDED
    if _EMBEDDED is None:
        import fakeredis

        _EMBEDDED = fakeredis.FakeServer()
    return _EMBEDDED


def connect(url: str | None, max_connections: int = 64, pool_timeout_s: float = 10.0) -> aioredis.Redis:
    """A client for *url*, or for the embedded server when *url* is None. Replies are str.

    The pool holds at most *max_connections*; a command that finds them all busy waits up
    to *pool_timeout_s* for one (``BlockingConnectionPool``) instead of failing at once, so
    a burst of connects or polls queues for Redis rather than erroring."""
    if url is None:
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=embedded_server(), decode_responses=True,
                                        connection_pool_class=BlockingConnectionPool,
                                        max_connections=max_connections, timeout=pool_timeout_s)
    pool = BlockingConnectionPool.from_url(url, decode_responses=True, socket_connect_timeout=2,
                                           health_check_interval=30, max_connections=max_connections,
                                           timeout=pool_timeout_s)
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def connect_single(url: str | None) -> aioredis.Redis:
    """A client on one dedicated connection (commands from several tasks take turns), for
    the delivery queue: its few commands per batch skip the pool's bookkeeping."""
    if url is None:
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=embedded_server(), decode_responses=True,
                                        single_connection_client=True)
    return aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2,
                                   health_check_interval=30, single_connection_client=True)
