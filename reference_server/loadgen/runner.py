"""The load generator: N real :class:`~reference_server.client.ChatClient` s of one
transport against a server process, through the counting proxy, on the simulation's
workload. Returns tables with the simulation's names (``RunResult``'s ``summary``,
``messages``, ``classes``, ``bins``).

    result = asyncio.run(run_load(LoadConfig.from_params({"clients": 50, "rtt_ms": 50}, transport="websocket")))
    result.summary["latency_ms"]["p50"]

Timeline (``t`` = seconds since the workload's time zero, one monotonic clock):
accounts are registered and logged in before ``t = 0`` (not measured); clients start
as in the model (WebSocket and long polling at uniform times in ``[0, connect_ramp_s)``,
short polling at its phase); messages leave at their drawn times; everything in
``[warmup_s, duration_s]`` is measured; the run goes on as long as the model's does
(a poll interval plus four round trips plus 1 s) so that late messages arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from types import MappingProxyType
from pathlib import Path
from typing import Any, Mapping, Protocol

import aiohttp
import numpy as np
import pandas as pd

from chatcore import TRANSPORTS, ConnectionState, reconnect_seed
from chatcore import params as spec
from chatcore.params import ParameterError
from chatcore.stats import LATENCY_KEYS, latency_stats, step_profile, traffic_summary
from chatcore.tables import (DOWN, OVH_DOWN, OVH_UP, PAY_DOWN, PAY_UP, TRAFFIC_COUNTERS, UP, class_columns,
                             class_rows, delivery_outcomes, fanout, fully_delivered, jsonable)

from ..client import ChatClient, ChatError
from .proxy import CountingProxy, Counters
from .process import ServerFailed, ServerProcess, cpu_seconds
from .workload import Workload, draw



#: What one machine's load generator can drive (the only limits of its own; every other limit is
#: the parameter's, from chatcore.params).
CAPACITY = {"clients": (5000, "an integer 2..5000 (what one load generator drives)"),
            "duration_s": (3600.0, "a number in (0, 3600] (one load run)")}


@dataclass(frozen=True)
class LoadConfig:
    """A load run: the scenario's parameters (every name of ``chatcore.params``, validated there,
    the same names, limits and errors as ``sim.Scenario``) plus the run's own settings. Read a
    parameter as an attribute (``cfg.clients``). Build it with :meth:`from_params`."""

    params: Mapping[str, Any]
    transport: str = "websocket"
    crash: bool = False  # SIGKILL the server at crash_at_s and restart it at once (fault servers, reset)
    redis_url: str | None = None
    setup_timeout_s: float = 120.0
    #: > 0: run against that many servers behind HAProxy (reference_server.cluster), clients
    #: sticky by its cookie; the crash kills the first server and restarts it after downtime_s.
    cluster: int = 0
    #: The cluster's PostgreSQL database (None: a private PostgreSQL for the run).
    db_url: str | None = None

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(name)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, transport: str = "websocket", crash: bool = False,
                    redis_url: str | None = None, setup_timeout_s: float = 120.0, cluster: int = 0,
                    db_url: str | None = None) -> "LoadConfig":
        """From parameter values (typed or ``--set`` text; the rest take their defaults). An unknown
        name or a value out of its limits raises :class:`chatcore.params.ParameterError`."""
        values = spec.with_overrides(spec.DEFAULTS, params)
        if transport not in TRANSPORTS:
            raise ParameterError("transport", transport, f"one of {', '.join(TRANSPORTS)}")
        for name, (limit, allowed) in CAPACITY.items():
            if values[name] > limit:
                raise ParameterError(name, spec.show(values[name]), allowed)
        if crash and not 0 < values["crash_at_s"] < values["duration_s"]:
            raise ParameterError("crash_at_s", spec.show(values["crash_at_s"]),
                                 f"a number in (0, duration_s) ({spec.show(values['duration_s'])}) for a crash run")
        if cluster and crash and values["crash_at_s"] + values["downtime_s"] >= values["duration_s"]:
            raise ParameterError("downtime_s", spec.show(values["downtime_s"]),
                                 "a number with crash_at_s + downtime_s < duration_s for a cluster crash run")
        return cls(MappingProxyType(values), transport, crash, redis_url, setup_timeout_s, cluster, db_url)

    def to_dict(self) -> dict[str, Any]:
        """The run's settings and every parameter, JSON-ready."""
        return jsonable({"transport": self.transport, "crash": self.crash, "redis_url": self.redis_url,
                         "setup_timeout_s": self.setup_timeout_s, "cluster": self.cluster, **self.params})


@dataclass
class LoadResult:
    config: LoadConfig
    summary: dict[str, Any]
    messages: pd.DataFrame
    classes: pd.DataFrame
    bins: pd.DataFrame
    crash: dict[str, Any] | None = None
    samples: list[dict[str, float]] = field(default_factory=list, repr=False)


class _Client(ChatClient):
    """The reference client, with two things a load generator needs: short polls on a
    fixed schedule (``phase + k * interval``, the model's and a browser ``setInterval``'s;
    the library's own loop sleeps *after* each response), and the times of each
    disconnect and reconnect (for the crash run).

    A long poll that resumes after a crash is held by the server until something happens,
    which may be seconds: its answer says nothing about when the client was back. So a long
    poller counts as reconnected when an answer *could* have reached it: two round trips
    (``rtt_s``: the TCP handshake, then the request and its answer) after the connection that
    carried its first successful poll was opened, one after it took a pooled connection, or at
    the answer if that came sooner; a poll still held when the run ends counts the same way
    (a refused one is reset within a round trip). The connection's time comes from aiohttp's
    tracing (:func:`poll_connection_trace`), per request, so aiohttp's own retry counts the
    connection that worked."""

    next_poll: float = 0.0
    rtt_s: float = 0.0

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.reconnected_at: list[float] = []
        self.lost_at: list[float] = []
        self.failed_at: list[float] = []  # connect attempts that failed (refused, timed out, 5xx)
        self.attempt_at: list[float] = []  # when each connect attempt (WebSocket, or a poll while not connected) began
        #: the current (or last answered) long poll's connection: (when it was opened or taken
        #: from the pool, opened?); None while it has none or after it failed
        self.poll_connection: tuple[float, bool] | None = None

    async def _ws_session(self) -> None:
        self.attempt_at.append(self.clock())
        await super()._ws_session()

    async def _long_poll_once(self) -> None:
        if self.state != ConnectionState.CONNECTED:
            self.attempt_at.append(self.clock())
        await super()._long_poll_once()

    async def _poll_once(self) -> None:
        now = self.clock()
        if self.next_poll > now:
            await asyncio.sleep(self.next_poll - now)
        self.next_poll += self.poll_interval
        await self._fetch("/api/poll", {}, timeout=30.0)
        now = self.clock()
        if self.next_poll < now:  # never two polls outstanding
            self.next_poll = now

    def _connected(self) -> None:
        if self.state != ConnectionState.CONNECTED:
            now = self.clock()
            back = self.poll_back()
            self.reconnected_at.append(now if back is None else min(now, back))
        super()._connected()

    def poll_back(self) -> float | None:
        """When the current long poll's answer could reach this client (None: no poll, or not
        long polling)."""
        if self.transport != "long_polling" or self.poll_connection is None:
            return None
        at, opened = self.poll_connection
        return at + (2.0 if opened else 1.0) * self.rtt_s

    async def _back_off(self) -> None:
        if self.state == ConnectionState.CONNECTED:
            self.lost_at.append(self.clock())
        elif self.lost_at:
            self.failed_at.append(self.clock())
        await super()._back_off()


def poll_connection_trace(clients: dict[int, "_Client"], idx: int, clock: Any) -> aiohttp.TraceConfig:
    """aiohttp tracing for client *idx*'s session: each long poll that is answered leaves on
    the client (``poll_connection``) when its connection was opened or taken from the pool
    (per request: after aiohttp's own retry, the connection that worked)."""
    tc = aiohttp.TraceConfig()

    def note(ctx: Any, value: tuple[float, bool] | None) -> None:
        if getattr(ctx, "poll", False) and idx in clients:
            clients[idx].poll_connection = value

    async def started(_s: Any, ctx: Any, params: Any) -> None:
        ctx.poll = params.url.path == "/api/longpoll"

    async def opened(_s: Any, ctx: Any, _p: Any) -> None:
        note(ctx, (clock(), True))

    async def reused(_s: Any, ctx: Any, _p: Any) -> None:
        note(ctx, (clock(), False))

    async def failed(_s: Any, ctx: Any, params: Any) -> None:
        if not isinstance(params.exception, asyncio.CancelledError):  # not the run's end
            note(ctx, None)

    tc.on_request_start.append(started)
    tc.on_connection_create_end.append(opened)
    tc.on_connection_reuseconn.append(reused)
    tc.on_request_exception.append(failed)
    return tc


def user_name(i: int) -> str:
    return f"u{i:07d}"  # 8 characters, as the simulation's wire sizes assume


def step_average(intervals: list[list[float]], t0: float, t1: float) -> tuple[float, int]:
    """Time-average and peak over [t0, t1] of how many intervals are open."""
    if t1 <= t0 or not intervals:
        return 0.0, 0
    a = np.asarray(intervals, dtype=float)
    mean, peak, _ = step_profile(a[:, 0], a[:, 1], t0, t1)
    return mean, peak


async def _gather_limited(coros: list[Any], limit: int, timeout: float, what: str) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    try:
        return await asyncio.wait_for(asyncio.gather(*(one(c) for c in coros)), timeout)
    except asyncio.TimeoutError:
        raise ServerFailed(f"{what} did not finish within {timeout:g} s") from None


class Target(Protocol):
    """What a run drives and may crash: one server process (:class:`ServerProcess`) or a
    cluster behind HAProxy (``reference_server.cluster.ClusterTarget``)."""

    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def proc(self) -> asyncio.subprocess.Process | None: ...

    #: When (``time.monotonic()``) clients could last reach it again after :meth:`start`.
    available_at: float

    def cpu_seconds(self) -> float: ...
    async def kill(self) -> None: ...
    async def start(self) -> Any: ...


class LoadRun:
    """One run; :func:`run_load` is the usual entry point."""

    def __init__(self, cfg: LoadConfig, server: Target) -> None:
        self.cfg = cfg
        self.server = server
        self.wl: Workload = draw(cfg.clients, cfg.msg_rate_per_min, cfg.group_size, cfg.duration_s,
                                 cfg.read_delay_s, cfg.connect_ramp_s, cfg.seed)
        self.names = [user_name(i) for i in range(cfg.clients)]
        self.prefix = f"{cfg.seed % (1 << 32):08x}"
        self.t0 = math.inf
        self.clock = time.monotonic
        self.stopped_at = math.inf  # when run() began stopping its clients
        self.delivered: dict[tuple[int, int], float] = {}
        self.duplicates = 0
        self.sent_at = np.full(len(self.wl.send_time), np.nan)
        self.acked = np.zeros(len(self.wl.send_time), dtype=bool)
        self.send_failures = 0
        self.receipt_sent: dict[tuple[str, int, str], float] = {}
        self.receipt_latency: list[tuple[float, float]] = []  # (sent_at, latency_ms)
        self.batches: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.samples: list[dict[str, float]] = []
        self.loop_lag: list[tuple[float, float]] = []  # (at_s, ms late)
        self.crash: dict[str, Any] | None = None
        self.targets: dict[int, dict[str, str]] = {}
        self.offline_seen: list[tuple[str, float]] = []  # (user, when a contact saw it go offline)
        self.stopping = False

    def rel(self, t: float) -> float:
        return t - self.t0

    def _spawn(self, coro: Any) -> None:
        if self.stopping:  # the run is over: an event that arrives now starts nothing
            coro.close()
            return
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    # --- accounts (before time zero; not measured) ---------------------------------------
    async def setup(self) -> dict[str, str]:
        cfg = self.cfg
        tokens: dict[str, str] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as s:
            async def account(name: str) -> None:
                c = ChatClient(self.server.url, name, "pw", session=s)
                await c.register()
                tokens[name] = await c.login()

            await _gather_limited([account(n) for n in self.names], 16, cfg.setup_timeout_s, "registering users")
            for conv, members in enumerate(self.wl.members):
                if len(members) == 2:
                    a, b = members
                    self.targets[a] = {"to": self.names[b]}
                    self.targets[b] = {"to": self.names[a]}
                    continue
                creator = ChatClient(self.server.url, self.names[members[0]], "pw", session=s)
                creator.token = tokens[self.names[members[0]]]
                gid = await asyncio.wait_for(creator.create_group([self.names[m] for m in members[1:]]), 30)
                for m in members:
                    self.targets[m] = {"conversation": gid}
        return tokens

    # --- receiving ----------------------------------------------------------------------
    def on_event(self, idx: int, event: dict[str, Any], t: float) -> None:
        kind = event.get("type")
        if kind == "presence":
            if event.get("status") == "offline":
                self.offline_seen.append((str(event.get("user")), t))
            return
        if kind == "message":
            cmid = str(event.get("client_msg_id", ""))
            if len(cmid) != 32 or not cmid.startswith(self.prefix):
                return
            key = (int(cmid[8:], 16), idx)
            if key in self.delivered:
                self.duplicates += 1
                return
            self.delivered[key] = t
            if self.cfg.receipts:
                batch = self.batches[idx]
                if not batch:
                    asyncio.get_running_loop().call_soon(self._flush, idx)
                batch.append((event["conversation"], int(event["id"]), key[0]))
        elif kind == "receipt":
            sent = self.receipt_sent.get((event.get("conversation"), event.get("up_to"),  # type: ignore[arg-type]
                                          event.get("status")))
            if sent is not None:
                self.receipt_latency.append((self.rel(sent), (t - sent) * 1000.0))

    def _flush(self, idx: int) -> None:
        """One delivered receipt per batch of messages received together (a response or
        the frames read at once), then a read receipt after the newest one's read delay."""
        batch, self.batches[idx] = self.batches[idx], []
        newest: dict[str, tuple[int, int]] = {}
        for conv, mid, i in batch:
            if conv not in newest or mid > newest[conv][0]:
                newest[conv] = (mid, i)
        for conv, (mid, i) in newest.items():
            self._spawn(self._receipts(idx, conv, mid, float(self.wl.read_delay[i])))

    async def _receipts(self, idx: int, conv: str, up_to: int, read_delay: float) -> None:
        client = self.clients[idx]
        for status in ("delivered", "read"):
            if status == "read" and read_delay > 0:
                await asyncio.sleep(read_delay)
            self.receipt_sent.setdefault((conv, up_to, status), self.clock())
            try:
                await client.receipt(conv, up_to, status)
            except ChatError:
                return

    # --- sending --------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        for i, t in enumerate(self.wl.send_time.tolist()):
            wait = self.t0 + t - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._spawn(self._send(i))

    async def _send(self, i: int) -> None:
        s = int(self.wl.sender[i])
        self.sent_at[i] = self.clock()
        body = "x" * self.cfg.payload_bytes
        # As in the model: a user whose app has not started yet sends once it starts. (Sent at
        # once, an HTTP client's early send opened a connection that its first poll then reused,
        # leaving it one connection short of the model's when its uploads first overlapped.)
        wait = self.t0 + float(self.wl.start_time[s]) - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self.clients[s].send(body, client_msg_id=f"{self.prefix}{i:024x}", **self.targets[s])
            self.acked[i] = True
        except ChatError:
            self.send_failures += 1

    # --- sampling and the crash --------------------------------------------------------------
    async def _sampler(self, proxy: CountingProxy) -> None:
        k = 0
        while True:
            due = self.t0 + k * self.cfg.bin_s
            wait = due - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                srv = self.server.cpu_seconds()
            except (OSError, ValueError, ServerFailed):
                srv = math.nan
            self.samples.append({
                "t": self.rel(self.clock()), "server_cpu_s": srv, "loadgen_cpu_s": cpu_seconds(os.getpid()),
                "connected": sum(1 for c in self.clients if c.state == ConnectionState.CONNECTED),
                "accepts": len(proxy.counters.conn_intervals)})
            k += 1

    async def _lag_probe(self) -> None:
        """How late this process's event loop wakes a task: every client, the proxy and
        the timestamps share it, so a late loop lands in every measured latency."""
        period = 0.01
        while True:
            t = self.clock()
            await asyncio.sleep(period)
            self.loop_lag.append((self.rel(t), max(0.0, self.clock() - t - period) * 1000.0))

    async def _crash(self) -> None:
        assert self.cfg.crash
        await asyncio.sleep(max(0.0, self.t0 + self.cfg.crash_at_s - self.clock()))
        cpu_before = self.server.cpu_seconds()
        killed = self.clock()
        await self.server.kill()
        if self.cfg.cluster:  # the scenario's downtime, then the restart (HAProxy sees it up)
            await asyncio.sleep(max(0.0, killed + self.cfg.downtime_s - self.clock()))
        await self.server.start()  # same port, same data directory (or database)
        up = self.server.available_at  # accepting again (the health check comes a little later)
        self.crash = {"killed_at_s": self.rel(killed), "restarted_at_s": self.rel(up),
                      "downtime_s": up - killed, "cpu_before_kill_s": cpu_before}

    # --- the run ----------------------------------------------------------------------------
    async def run(self) -> LoadResult:
        cfg = self.cfg
        tokens = await self.setup()
        window = (cfg.warmup_s, cfg.duration_s)
        counters = Counters(in_window=lambda t: window[0] <= t - self.t0 <= window[1],
                            bin_of=lambda t: int(math.floor((t - self.t0) / cfg.bin_s)))
        proxy = await CountingProxy("127.0.0.1", self.server.port, cfg.rtt_ms, counters=counters).start()
        self.clients: list[_Client] = []
        by_index: dict[int, _Client] = {}
        try:
            for i, name in enumerate(self.names):
                traces = [poll_connection_trace(by_index, i, self.clock)] if cfg.transport == "long_polling" else []
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    keepalive_timeout=cfg.http_keepalive_s, limit=8),
                    cookie_jar=aiohttp.DummyCookieJar() if cfg.cluster else None, trace_configs=traces)
                c = _Client(proxy.url, name, "pw", transport=cfg.transport, session=session,
                            reconnect_policy=cfg.reconnect_policy, backoff_base=cfg.backoff_base_s,
                            backoff_cap=cfg.backoff_cap_s,
                            rng=random.Random(reconnect_seed(cfg.seed, i)), retry_rng=random.Random(f"retry {cfg.seed} {i}"),
                            poll_interval=cfg.poll_interval_s, longpoll_timeout=cfg.long_poll_timeout_s,
                            on_event=lambda e, t, i=i: self.on_event(i, e, t), clock=self.clock,
                            route_cookie="SERVERID" if cfg.cluster else None)
                c.token = tokens[name]
                c.rtt_s = cfg.rtt_ms / 1000.0
                by_index[i] = c
                self.clients.append(c)
            self.t0 = self.clock() + 0.5
            for i, c in enumerate(self.clients):
                if cfg.transport == "short_polling":
                    c.next_poll = self.t0 + float(self.wl.poll_phase[i]) * cfg.poll_interval_s
                    self._spawn(self._start_at(c, self.t0))
                else:
                    self._spawn(self._start_at(c, self.t0 + float(self.wl.start_time[i])))
            self._spawn(self._dispatch())
            self._spawn(self._sampler(proxy))
            self._spawn(self._lag_probe())
            if cfg.crash:
                self._spawn(self._crash())
            drain = (cfg.poll_interval_s if cfg.transport == "short_polling" else 0.0) + 4 * cfg.rtt_ms / 1000 + 1.0
            end = self.t0 + cfg.duration_s + drain
            while self.clock() < end or (cfg.crash and self.crash is None and self.clock() < end + 60):
                # (a crash run also waits, a minute at most, for the restart it began)
                await asyncio.sleep(max(0.05, min(0.5, end - self.clock())))
                if self.server.proc is not None and self.server.proc.returncode is not None \
                        and self.crash is not None:
                    raise ServerFailed(f"the server exited during the run (status {self.server.proc.returncode})")
        finally:
            self.stopping = True
            self.stopped_at = self.clock()  # before cancelling: a poll in flight now proves nothing
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True), 10)
            for c in self.clients:
                with contextlib.suppress(Exception):
                    await c.session.close()
            await proxy.stop()
        return self._result(counters)

    async def _start_at(self, c: _Client, at: float) -> None:
        wait = at - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        await c.start()

    # --- tables ---------------------------------------------------------------------------------
    def _result(self, counters: Counters) -> LoadResult:
        cfg, wl = self.cfg, self.wl
        w0, w1 = cfg.warmup_s, cfg.duration_s
        window = w1 - w0
        rows = []
        for (i, r), t in sorted(self.delivered.items()):
            rows.append((i, int(wl.sender[i]), r, int(wl.conversation[i]), self.rel(self.sent_at[i]), self.rel(t)))
        msgs = pd.DataFrame(rows, columns=["msg", "sender", "recipient", "conversation", "sent_at", "received_at"])
        msgs.insert(0, "transport", cfg.transport)
        msgs["latency_ms"] = (msgs["received_at"] - msgs["sent_at"]) * 1000.0
        msgs["in_window"] = (msgs["sent_at"] >= w0) & (msgs["sent_at"] <= w1)

        tot = np.zeros(TRAFFIC_COUNTERS)
        for c in counters.classes.values():
            tot += np.asarray(c, dtype=float)
        classes = pd.DataFrame(class_rows(cfg.transport, counters.classes, window, cpu=False),
                               columns=class_columns(cpu=False))

        # per-bin table, with CPU and connected clients from the samples
        samples = pd.DataFrame(self.samples)
        nb = int(math.ceil((cfg.duration_s + 1e-9) / cfg.bin_s))
        if len(samples) > 1:
            nb = max(nb, len(samples) - 1)
        brow = []
        for k in range(nb):
            b = counters.bins.get(k, [0, 0, 0, 0, 0])
            t_s = k * cfg.bin_s
            row = {"transport": cfg.transport, "t_s": t_s,
                   "in_window": t_s >= w0 - 1e-9 and t_s + cfg.bin_s <= w1 + 1e-9,
                   "requests_up": b[0], "overhead_bytes_up": b[1], "payload_bytes_up": b[2],
                   "overhead_bytes_down": b[3], "payload_bytes_down": b[4]}
            if k + 1 < len(samples):
                s0, s1 = samples.iloc[k], samples.iloc[k + 1]
                dt = s1["t"] - s0["t"]
                row["cpu_utilization"] = (s1["server_cpu_s"] - s0["server_cpu_s"]) / dt if dt > 0 else math.nan
                row["connected_clients"] = int(s1["connected"])
                row["connect_attempts_per_s"] = (s1["accepts"] - s0["accepts"]) / dt if dt > 0 else math.nan
            brow.append(row)
        bins = pd.DataFrame(brow)

        # server CPU over the window, from the samples nearest its ends
        util = lg_util = None
        if len(samples) > 1:
            a = samples.iloc[(samples["t"] - w0).abs().idxmin()]
            b = samples.iloc[(samples["t"] - w1).abs().idxmin()]
            dt = b["t"] - a["t"]
            if dt > 0:
                if self.crash is None:
                    util = (b["server_cpu_s"] - a["server_cpu_s"]) / dt
                lg_util = (b["loadgen_cpu_s"] - a["loadgen_cpu_s"]) / dt

        abs_w0, abs_w1 = self.t0 + w0, self.t0 + w1
        conn_mean, conn_peak = step_average(counters.conn_intervals, abs_w0, abs_w1)
        held_mean, held_peak = step_average(counters.held_intervals, abs_w0, abs_w1)
        in_win_sent = (wl.send_time >= w0) & (wl.send_time <= w1)
        n_sent = int(in_win_sent.sum())
        lat = msgs.loc[msgs["in_window"], "latency_ms"].to_numpy()
        fully = fully_delivered(wl.send_time, fanout(wl.conversation, wl.members),
                                msgs.loc[msgs["in_window"], "msg"].to_numpy(), w0, w1)
        rl = np.array([l for s, l in self.receipt_latency if w0 <= s <= w1])
        lag = np.array([l for s, l in self.loop_lag if w0 <= s <= w1])
        summary: dict[str, Any] = {
            "transport": cfg.transport,
            **traffic_summary(requests_up=tot[UP], overhead_up=tot[OVH_UP], payload_up=tot[PAY_UP],
                              overhead_down=tot[OVH_DOWN], payload_down=tot[PAY_DOWN], window_s=window,
                              messages_sent=n_sent, poll_responses=counters.poll_responses,
                              empty_responses=counters.empty_responses),
            "latency_ms": latency_stats(lat),
            "receipt_latency_ms": latency_stats(rl),
            "open_connections_mean": conn_mean,
            "open_connections_peak": conn_peak,
            "held_requests_mean": held_mean,
            "held_requests_peak": held_peak,
            "server_cpu_utilization": util,
            "messages_sent": n_sent,
            "messages_delivered": fully,
            "deliveries": int(len(lat)),
            # measured only
            "loadgen_cpu_utilization": lg_util,
            "loadgen_loop_lag_ms": latency_stats(lag),
            # how far the emulated one-way delay was off, per chunk (ms; < 0: early)
            "proxy_delay_excess_ms": latency_stats(np.array(counters.delay_excess) * 1000.0),
            "send_failures": self.send_failures,
            "duplicates_after_dedup": self.duplicates,
            "duplicates_dropped_by_client": sum(c.duplicates_dropped for c in self.clients),
        }
        crash = self._crash_summary(bins) if self.crash is not None else None
        return LoadResult(cfg, summary, msgs, classes, bins, crash, self.samples)

    def _crash_summary(self, bins: pd.DataFrame) -> dict[str, Any]:
        assert self.crash is not None
        killed = self.t0 + self.crash["killed_at_s"]
        back = []
        affected = 0
        ended = self.stopped_at
        for c in self.clients:
            if any(t >= killed for t in c.lost_at):
                affected += 1
                after = [t for t in c.reconnected_at if t >= killed]
                held = c.poll_back() if not after else None  # a resumed long poll still held at the end
                # held at the end by a server that took it: its answer could have come a round
                # trip before the run stopped (a refused connection is reset within one)
                if held is not None and held >= max(t for t in c.lost_at if t >= killed) \
                        and held + self.cfg.rtt_ms / 1000.0 <= ended:
                    c.reconnected_at.append(held)
                    after = [held]
                back.append(min(after) if after else math.inf)
        all_back = bool(back) and all(math.isfinite(t) for t in back)
        wl = self.wl
        out = delivery_outcomes(((i, r) for i in range(len(wl.send_time)) for r in wl.members[int(wl.conversation[i])]
                                 if r != int(wl.sender[i])), set(self.delivered), lambda i: bool(self.acked[i]))
        lost, unacked = out["lost"], out["unacked"]
        after = bins[bins["t_s"] >= self.crash["killed_at_s"] - self.cfg.bin_s]
        affected_users = {self.names[i] for i, c in enumerate(self.clients) if any(t >= killed for t in c.lost_at)}
        flapped = {u for u, t in self.offline_seen if t >= killed and u in affected_users}
        failed = sum(1 for c in self.clients for t in c.failed_at if t >= killed)
        # Where the time to reconnect goes, per affected client: noticing the loss, the backoff
        # delay before the attempt that succeeded began, and that attempt (connect, upgrade,
        # auth, resume until the 'resumed' frame).
        detect, wait, connect = [], [], []
        for c in self.clients:
            lost_t = [t for t in c.lost_at if t >= killed]
            back_t = [t for t in c.reconnected_at if t >= killed]
            if not lost_t or not back_t:
                continue
            began = [t for t in c.attempt_at if lost_t[0] <= t <= back_t[0]]
            detect.append(lost_t[0] - killed)
            if began:
                wait.append(began[-1] - lost_t[0])
                connect.append(back_t[0] - began[-1])
        phases = {f"reconnect_{name}_ms_{stat}": (1000.0 * f(v) if v else None)
                  for name, v in (("detect", detect), ("wait", wait), ("connect", connect))
                  for stat, f in (("median", statistics.median), ("max", max))}
        return {**self.crash,
                "servers": max(1, self.cfg.cluster),
                "affected_clients": affected,
                "connects_failed": failed,
                **phases,
                "presence_flaps": len(flapped),
                "time_to_reconnect_all_s": (max(back) - killed) if all_back else None,
                "clients_not_reconnected": sum(1 for t in back if not math.isfinite(t)),
                "reconnect_peak_per_s": float(after["connect_attempts_per_s"].max()) if len(after) else 0.0,
                "messages_lost": lost,
                "messages_undelivered_unacked": unacked,
                "messages_duplicated": self.duplicates,
                "duplicates_dropped_by_client": sum(c.duplicates_dropped for c in self.clients),
                "send_failures": self.send_failures}


async def run_load(cfg: LoadConfig, server: Target | None = None) -> LoadResult:
    """Run *cfg* against *server*, or against a fresh server process in a temporary
    directory (started and stopped here), or with ``cfg.cluster`` against a fresh cluster
    of that many servers behind HAProxy. Raises :class:`ServerFailed` with a clear
    message when the server does not start or dies."""
    if server is not None:
        return await LoadRun(cfg, server).run()
    if cfg.cluster:
        from ..cluster import ClusterSpec, ClusterTarget, ComponentFailed, LocalCluster, MissingComponent

        cluster = LocalCluster(ClusterSpec(servers=cfg.cluster, redis_url=cfg.redis_url, db_url=cfg.db_url,
                                           profile="loadtest"))
        try:
            await cluster.start()
            return await LoadRun(cfg, ClusterTarget(cluster)).run()
        except (ComponentFailed, MissingComponent) as exc:
            raise ServerFailed(str(exc)) from None
        finally:
            await cluster.stop()
    with tempfile.TemporaryDirectory(prefix="chatlab-load-") as tmp:
        srv = ServerProcess(Path(tmp) / "server", redis_url=cfg.redis_url,
                            redis_prefix=f"chatlab-load-{uuid.uuid4().hex[:8]}")
        await srv.start()
        try:
            return await LoadRun(cfg, srv).run()
        finally:
            await srv.stop()


def result_json(res: LoadResult) -> dict[str, Any]:
    """``{"scenario": {...}, "results": [summary]}``: the shape of ``chatlab compare --json``."""
    out: dict[str, Any] = {"scenario": res.config.to_dict(), "results": [jsonable(res.summary)]}
    if res.crash is not None:
        out["crash"] = jsonable(res.crash)
    return out
