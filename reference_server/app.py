"""Assembly: build the components, wire them into an aiohttp application, run it.

    Client -> http_api / ws_api -> ChatService -> Store (SQLite: durable append + outbox)
           -> DeliveryQueue (Redis Stream) -> DeliveryService -> Store (event logs) -> Hub
           -> the recipient's WebSocket send queue, or its waiting long poll

``create_app(config)`` returns an application whose start-up opens SQLite and Redis and
starts the delivery and presence loops; ``run_server(config)`` also binds the port
(0 = any free port) and returns a :class:`RunningServer` to read the port from and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from aiohttp import web

from chatcore import MAX_BODY_BYTES

from .admission import Admission, LoopMonitor
from .auth import Authenticator
from .chat import ChatService
from .clock import SYSTEM, Clock
from .config import ServerConfig
from .delivery import DeliveryService
from .http_api import CHAT, METRICS, add_routes, error_middleware
from .http_guard import GuardedRunner
from .hub import Hub
from .metrics import Metrics
from .presence import Presence
from .queue import DeliveryQueue
from .redis_link import connect, connect_single
from .routing import Router
from .store import Store
from .tasks import run_every, stop_all
from .ws_api import ws_handler

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONFIG: web.AppKey[ServerConfig] = web.AppKey("config", ServerConfig)
#: Optional: the clock the server's rules use (tests put a FakeClock here).
CLOCK: web.AppKey[Clock] = web.AppKey("clock", Clock)


def create_app(config: ServerConfig, static_dir: Path = STATIC_DIR, clock: Clock = SYSTEM) -> web.Application:
    """An aiohttp application for *config*; nothing is opened until the app starts."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[error_middleware])
    app[CONFIG] = config
    app[CLOCK] = clock
    app[METRICS] = Metrics()
    add_routes(app, static_dir)
    app.router.add_get("/ws", ws_handler)
    if config.instructor_key:
        from .instructor import install

        install(app, config.instructor_key)
    app.cleanup_ctx.append(_components)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _components(app: web.Application) -> AsyncIterator[None]:
    """Open everything at start-up, close it in reverse order at clean-up."""
    config = app[CONFIG]
    metrics = app[METRICS]
    clock = app.get(CLOCK, SYSTEM)
    store = await Store.open(config.store_location, retention=config.event_retention,
                             synchronous=config.sqlite_synchronous, monotonic=clock.monotonic)
    redis = connect(config.redis_url, config.redis_max_connections, config.redis_pool_timeout_s)
    try:
        await redis.ping()
    except Exception as exc:
        await store.close()
        await redis.aclose()
        raise RuntimeError(f"--redis-url={config.redis_url}: Redis does not answer ({exc})") from None
    hub = Hub()
    queue_redis = connect_single(config.redis_url)
    queue = DeliveryQueue(queue_redis, config.redis_prefix)
    push_redis = connect_single(config.redis_url) if config.server_id else None  # blocks reading its stream
    router = Router(hub, redis, config.redis_prefix, config.server_id, clock, reader=push_redis)
    delivery = DeliveryService(config, store, queue, hub, metrics, clock, router)
    chat_ref: list[ChatService] = []

    async def announce(user: str, status: str, at_ms: int) -> None:
        await chat_ref[0].announce_presence(user, status, at_ms)

    presence = Presence(redis, config.redis_prefix, config.presence_ttl_s, config.presence_heartbeat_s,
                        announce, clock)
    auth = Authenticator(store, config.scrypt_n, config.token_ttl_s, clock, config)
    monitor = LoopMonitor(clock)
    admission = None
    if config.admission:
        admission = Admission(clock, max_delivery_lag_s=config.admission_max_delivery_lag_ms / 1000,
                              max_commit_wait_s=config.admission_max_commit_wait_ms / 1000,
                              max_loop_lag_s=config.admission_max_loop_lag_ms / 1000,
                              delivery_age=delivery.oldest_age, commit_age=store.committer.oldest_age,
                              loop_lag=lambda: monitor.lag,
                              light_rate_per_s=config.rate_per_s * config.admission_light_share
                              if config.admission_light_share > 0 else None)
    chat = ChatService(config, store, auth, hub, presence, delivery, metrics, admission, clock)
    chat_ref.append(chat)
    app[CHAT] = chat

    def collect(m: Metrics) -> None:
        m.pushed_events, m.pushed_bytes = hub.events_pushed, hub.bytes_pushed
        m.batch_jobs.set(store.committer.stats.jobs)
        m.batches.set(store.committer.stats.batches)
        if admission is not None:
            for signal, n in admission.refused.items():
                m.overloaded.set(n, signal=signal)
    metrics.collectors.append(collect)

    await delivery.start()
    router.start()
    monitor.start()
    stop = asyncio.Event()
    loops = [asyncio.create_task(run_every(stop, config.presence_sweep_s, presence.sweep, "presence sweep"),
                                 name="presence-sweep"),
             asyncio.create_task(run_every(stop, min(1.0, config.presence_heartbeat_s / 4),
                                           presence.refresh_local, "presence heartbeat"),
                                 name="presence-heartbeat"),
             asyncio.create_task(run_every(stop, config.housekeeping_s, chat.housekeeping, "housekeeping"),
                                 name="housekeeping")]
    log.info("chat server: db=%s redis=%s epoch=%s", store.where, config.redis_url or "embedded",
             store.epoch)
    yield
    await stop_all(stop, loops)
    await monitor.stop()
    await delivery.stop()
    await router.stop()
    if push_redis is not None:
        await push_redis.aclose()
    await queue_redis.aclose()
    await redis.aclose()
    await store.close()


async def _on_shutdown(app: web.Application) -> None:
    """Answer held long polls and close WebSockets so shutdown does not wait for them."""
    chat = app.get(CHAT)
    if chat is not None:
        chat.hub.close()


@dataclass
class RunningServer:
    """A started server: ``url`` to talk to it, :meth:`stop` to end it."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def app(self) -> web.Application:
        return self.runner.app

    @property
    def chat(self) -> ChatService:
        return self.runner.app[CHAT]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def run_server(config: ServerConfig, static_dir: Path = STATIC_DIR, clock: Clock = SYSTEM) -> RunningServer:
    """Start the server in this event loop; returns once it accepts connections."""
    runner = GuardedRunner(create_app(config, static_dir, clock), header_timeout_s=config.http_header_timeout_s,
                           keepalive_timeout=config.http_keepalive_timeout_s, access_log=None,
                           shutdown_timeout=2.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = config.port
    server: Any = site._server  # the asyncio Server: the only place the bound port of port 0 is
    if server is not None and getattr(server, "sockets", None):
        port = server.sockets[0].getsockname()[1]
    return RunningServer(runner, config.host, port)


async def serve_forever(config: ServerConfig) -> None:
    """Run until SIGTERM or cancellation (Ctrl-C in ``chatlab serve``), then stop cleanly."""
    server = await run_server(config)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # Said as soon as the port accepts connections: a supervisor (the load generator's crash
    # run) times the restart by this line, and connections made from here on are served.
    print(f"chat server on {server.url}  (db {server.chat.store.where}, redis "
          f"{config.redis_url or 'embedded fakeredis'}, ws compression "
          f"{'on' if config.ws_compression else 'off'})", flush=True)
    # Everything made at start-up (modules, functions, the app) lives as long as the process:
    # keep it out of the garbage collector's full passes, which otherwise stall the event
    # loop for tens of milliseconds scanning it.
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
