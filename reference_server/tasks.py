"""Background loops that always stop.

A loop is stopped by setting its ``stop`` event *and* cancelling it. The event matters
because a library may swallow a cancellation that arrives in the middle of its I/O
(seen with redis-py's asyncio client at shutdown); a loop that checks the event on
every turn ends anyway, and :func:`stop_all` never waits longer than its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep *seconds*, returning early when *stop* is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def run_every(stop: asyncio.Event, seconds: float, fn: Callable[[], Awaitable[object]], what: str) -> None:
    """Call *fn* every *seconds* until *stop* is set; a failure is logged, not fatal."""
    while not stop.is_set():
        await sleep_unless(stop, seconds)
        if stop.is_set():
            return
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)


async def stop_all(stop: asyncio.Event, tasks: list[asyncio.Task[None]], timeout: float = 5.0) -> None:
    """Set *stop*, cancel *tasks* and wait up to *timeout* seconds for them to end."""
    stop.set()
    for t in tasks:
        t.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            log.error("background task %s did not stop within %.1f s", t.get_name(), timeout)
