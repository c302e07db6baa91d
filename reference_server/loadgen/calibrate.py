"""Calibration: the server's CPU per operation and the real header sizes, measured on a
server process through the counting proxy (round trip 0).

Method: for each operation, run it *n* times (a few at a time) and divide the server
process's CPU seconds (``/proc/<pid>/stat``, 10 ms ticks: hence hundreds of
repetitions) by *n*, after subtracting the idle CPU rate of its background loops
measured first. Whatever the server does for an operation counts, including work
after the answer (the fan-out into the recipient's log, the Redis stream, SQLite),
because the simulation has no other CPU to put it on. Latencies of the stages that
are pure delays in the model come from wall-clock medians of sequential requests.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import websockets

from chatcore import encode

from .proxy import CountingProxy
from .process import ServerProcess


class _Api:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.s = url, session

    async def call(self, method: str, path: str, token: str | None = None, body: Any = None,
                   params: dict[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.s.request(method, self.url + path, headers=headers, params=params,
                                  data=None if body is None else encode(body),
                                  timeout=aiohttp.ClientTimeout(total=30)) as r:
            data = await r.read()
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {r.status} {data[:200]!r}")
            return json.loads(data) if data else None


#: Writes at a time in the batched measurement of the group commit.
GROUP = 16


def split_commit(c1: float, cn: float, share: float) -> tuple[float, float]:
    """A write's CPU measured alone (*c1* = w + B) and many at a time (*cn* = w + share * B, where
    *share* is the part of a lone write's commits each write paid: 1/n when *n* writes always
    commit together), split into the group commit's CPU B = (c1 - cn) / (1 - share) and the
    write's own w = c1 - B. B is clipped to [0, c1]: a noisy pair where *cn* > *c1* means no
    measurable commit cost."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share={share}: the writes must have shared commits (0 <= share < 1)")
    batch = min(c1, max(0.0, (c1 - cn) / (1.0 - share)))
    return batch, c1 - batch


def commit_cpu_ms(batch_ms: float, commits_per_lone_write: float | None) -> float:
    """The CPU of one commit: what a lone write's commits cost together (*batch_ms*, B), over
    how many commits a lone write makes (the server's counters: about 2, its own and its
    fan-out's); 2 when the counters were unread or implausible (below 1)."""
    n = commits_per_lone_write if commits_per_lone_write and commits_per_lone_write >= 1.0 else 2.0
    return batch_ms / n


def _per(before: tuple[float, float] | None, after: tuple[float, float] | None, ops: int) -> float | None:
    if before is None or after is None or ops <= 0:
        return None
    return round((after[0] - before[0]) / ops, 4)


async def _times(n: int, concurrency: int, op: Callable[[int], Awaitable[Any]]) -> None:
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await op(i)
    await asyncio.gather(*(worker() for _ in range(concurrency)))


class Calibration:
    def __init__(self, server: ServerProcess, scale: float = 1.0, log: Callable[[str], None] | None = None):
        self.server = server
        self.scale = scale
        self.log = log or (lambda s: None)
        self.idle_rate = 0.0
        self.details: dict[str, Any] = {}

    def n(self, base: int) -> int:
        return max(10, int(base * self.scale))

    async def cpu_per_op(self, name: str, n: int, concurrency: int, op: Callable[[int], Awaitable[Any]],
                         settle_s: float = 0.3) -> float:
        """Server CPU ms per call of *op*, background CPU subtracted."""
        c0, t0 = self.server.cpu_seconds(), time.monotonic()
        await _times(n, concurrency, op)
        await asyncio.sleep(settle_s)  # work after the answer (fan-out) finishes
        c1, t1 = self.server.cpu_seconds(), time.monotonic()
        busy = max(0.0, (c1 - c0) - self.idle_rate * (t1 - t0))
        ms = busy / n * 1000.0
        self.details[name] = {"ops": n, "cpu_s": round(c1 - c0, 3), "wall_s": round(t1 - t0, 3),
                              "cpu_ms_per_op": round(ms, 4)}
        self.log(f"  {name:<22} {ms:7.3f} ms CPU/op  ({n} ops, {c1 - c0:.2f} s CPU)")
        return ms

    async def commits(self, api: _Api, token: str) -> tuple[float, float] | None:
        """The server's group-commit counters (batches, writes) from /metrics; None if unreadable."""
        try:
            async with api.s.get(api.url + "/metrics", headers={"Authorization": f"Bearer {token}"},
                                 timeout=aiohttp.ClientTimeout(total=30)) as r:
                text = await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None
        got: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("chatlab_commit_batches_total", "chatlab_commit_jobs_total"):
                got[name] = float(value)
        if len(got) != 2:
            return None
        return got["chatlab_commit_batches_total"], got["chatlab_commit_jobs_total"]

    async def run(self) -> dict[str, Any]:
        proxy = await CountingProxy("127.0.0.1", self.server.port, 0.0).start()
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as s:
                return await self._run(_Api(proxy.url, s), proxy)
        finally:
            await proxy.stop()

    async def _run(self, api: _Api, proxy: CountingProxy) -> dict[str, Any]:
        users = [f"cal{uuid.uuid4().hex[:5]}" for _ in range(4)]  # 8 characters
        tok = {}
        for u in users:
            await api.call("POST", "/api/register", body={"user": u, "password": "pw"})
            tok[u] = (await api.call("POST", "/api/login", body={"user": u, "password": "pw"}))["token"]
        a, b, c, d = users
        c0, t0 = self.server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(2.0 * max(0.5, min(1.0, self.scale)))
        self.idle_rate = (self.server.cpu_seconds() - c0) / (time.monotonic() - t0)
        self.details["idle_cpu_rate"] = round(self.idle_rate, 4)
        body = "x" * 100
        p: dict[str, float] = {}

        # short poll, nothing new
        cur = (await api.call("GET", "/api/poll", tok[a]))["cursor"]
        p["cpu_poll_ms"] = await self.cpu_per_op("poll (empty)", self.n(1500), 4, lambda i: api.call(
            "GET", "/api/poll", tok[a], params={"after": cur}))

        # HTTP send a -> b (b not connected): parse, store, queue, fan-out into b's log. One at a
        # time (each write its own group commit; the sequential wall times give the store stage)
        # and sixteen at a time (16 senders, one send each per round: the writes share commits).
        walls: list[float] = []

        async def send(i: int) -> None:
            t = time.monotonic()
            await api.call("POST", "/api/messages", tok[a], {"to": b, "body": body,
                                                             "client_msg_id": uuid.uuid4().hex})
            walls.append(time.monotonic() - t)
        commits0 = await self.commits(api, tok[a])
        send_1 = await self.cpu_per_op("http send (1 at a time)", self.n(300), 1, send)
        commits1 = await self.commits(api, tok[a])
        send_wall = statistics.median(walls) * 1000.0
        senders = [f"cal{uuid.uuid4().hex[:5]}" for _ in range(GROUP)]
        for u in senders:
            await api.call("POST", "/api/register", body={"user": u, "password": "pw"})
            tok[u] = (await api.call("POST", "/api/login", body={"user": u, "password": "pw"}))["token"]

        async def send_round(r: int) -> None:
            await asyncio.gather(*(api.call("POST", "/api/messages", tok[u], {
                "to": b, "body": body, "client_msg_id": uuid.uuid4().hex}) for u in senders))
        rounds = max(2, self.n(600) // GROUP)
        commits2 = await self.commits(api, tok[a])
        send_16 = await self.cpu_per_op(f"http send ({GROUP} at a time)", rounds, 1, send_round) / GROUP
        commits3 = await self.commits(api, tok[a])
        self.details[f"http send ({GROUP} at a time)"]["cpu_ms_per_op"] = round(send_16, 4)
        # The server's counters say how many commits a send took each way (its store's and its
        # fan-out's: about 2 alone); without them, assume GROUP writes per commit.
        per_1 = _per(commits0, commits1, self.n(300))
        per_16 = _per(commits2, commits3, rounds * GROUP)
        share = per_16 / per_1 if per_1 and per_16 is not None and per_16 < per_1 else 1.0 / GROUP
        batch_ms, send_w = split_commit(send_1, send_16, share)
        p["cpu_http_send_ms"] = send_w
        self.details["group_commit"] = {
            "send_1_ms": round(send_1, 4), f"send_{GROUP}_ms": round(send_16, 4),
            "batch_ms": round(batch_ms, 4), "send_per_write_ms": round(send_w, 4),
            # the server's own counters (every group commit, the fan-out's included), per send
            "commits_per_send_1": per_1, f"commits_per_send_{GROUP}": per_16, "share": round(share, 4)}
        self.log(f"  group commit: {batch_ms:.3f} ms CPU per batch, {send_w:.3f} ms per send")

        # a poll returning E events: the extra CPU per event
        events = min(300, self.n(600))
        poll_full = await self.cpu_per_op(f"poll ({events} events)", self.n(60), 2, lambda i: api.call(
            "GET", "/api/poll", tok[b]))
        p["cpu_per_event_ms"] = max(0.0, (poll_full - p["cpu_poll_ms"]) / events)
        last_id = (await api.call("POST", "/api/messages", tok[a], {"to": b, "body": body,
                                                                    "client_msg_id": uuid.uuid4().hex}))["id"]
        conv = f"dm:{min(a, b)}:{max(a, b)}"
        n_rc = min(self.n(600), last_id)
        p["cpu_http_receipt_ms"] = await self.cpu_per_op("http receipt", n_rc, 1, lambda i: api.call(
            "POST", "/api/receipts", tok[b], {"conversation": conv, "up_to": i + 1, "status": "delivered"}))

        # long poll: accepted with nothing to wait for (timeout 0) ~ hold; woken by a send
        cur_c = (await api.call("GET", "/api/poll", tok[c]))["cursor"]
        p["cpu_longpoll_hold_ms"] = await self.cpu_per_op("long poll (timeout 0)", self.n(1200), 4, lambda i: api.call(
            "GET", "/api/longpoll", tok[c], params={"after": cur_c, "timeout": "0"}))
        state = {"cur": cur_c}

        async def wake(i: int) -> None:
            held = asyncio.create_task(api.call("GET", "/api/longpoll", tok[c],
                                                params={"after": state["cur"], "timeout": "10"}))
            await asyncio.sleep(0.004)
            await api.call("POST", "/api/messages", tok[d], {"to": c, "body": body, "client_msg_id": uuid.uuid4().hex})
            state["cur"] = (await held)["cursor"]
        round_ms = await self.cpu_per_op("long poll woken + send", self.n(300), 1, wake)
        # the woken send went alone: its cost with a whole commit
        p["cpu_longpoll_release_ms"] = max(0.0, round_ms - send_1 - p["cpu_longpoll_hold_ms"]
                                           - p["cpu_per_event_ms"])

        # WebSocket: handshake (+ auth + resume + close), frames in and out
        ws_url = "ws" + api.url[len("http"):] + "/ws"

        async def open_ws(user: str) -> Any:
            ws = await asyncio.wait_for(websockets.connect(ws_url, compression=None, ping_interval=None), 10)
            await ws.send(encode({"type": "auth", "token": tok[user]}).decode())
            await ws.send(encode({"type": "resume", "after": None}).decode())
            while json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type") != "resumed":
                pass
            return ws

        async def handshake(i: int) -> None:
            ws = await open_ws(d)
            await ws.close()
        p["cpu_handshake_ms"] = await self.cpu_per_op("ws connect+auth+resume", self.n(300), 4, handshake)

        wa = await open_ws(a)
        lock = asyncio.Lock()

        async def ws_send(i: int) -> None:
            async with lock:
                await wa.send(encode({"type": "send", "to": b, "body": body,
                                      "client_msg_id": uuid.uuid4().hex}).decode())
                while json.loads(await asyncio.wait_for(wa.recv(), 10)).get("type") != "ack":
                    pass
        p["cpu_ws_frame_in_ms"] = await self.cpu_per_op("ws send frame", self.n(600), 1, ws_send)
        wb = await open_ws(b)
        lat: list[float] = []

        async def ws_pair(i: int) -> None:
            t = time.monotonic()
            await ws_send(i)
            while json.loads(await asyncio.wait_for(wb.recv(), 10)).get("type") != "message":
                pass
            lat.append(time.monotonic() - t)
        pair_ms = await self.cpu_per_op("ws send -> ws push", self.n(600), 1, ws_pair)
        p["cpu_ws_frame_out_ms"] = max(0.0, pair_ms - p["cpu_ws_frame_in_ms"])
        ws_e2e = statistics.median(lat) * 1000.0
        await wa.close()
        await wb.close()

        # stage latencies (pure delays in the model): from sequential wall times, less the CPU of
        # the writes measured one at a time (their own part and a whole commit's)
        store = max(0.0, send_wall - send_1)
        p["queue_latency_ms"] = min(0.2, store)
        p["persist_latency_ms"] = store - p["queue_latency_ms"]
        # a message crosses two commits (its own, then its fan-out's): the model adds the second
        # one's wait after the delivery stage, so the stage is what remains of both
        p["delivery_latency_ms"] = max(0.0, ws_e2e - p["cpu_ws_frame_in_ms"] - 2 * store - p["cpu_ws_frame_out_ms"])
        # Writes measured one at a time carry their whole commits each (their own and their
        # fan-out's), so their per-write part is the rest; the model charges
        # cpu_commit_batch_ms once per commit, and a lone write makes per_1 of them (2: the
        # store's and the fan-out's, as the model's two stages; 2 if the counters are unread).
        for k in ("cpu_http_receipt_ms", "cpu_ws_frame_in_ms"):
            self.details["group_commit"][k.removeprefix("cpu_") + "_1"] = round(p[k], 4)
            p[k] = max(0.0, p[k] - batch_ms)
        p["cpu_commit_batch_ms"] = commit_cpu_ms(batch_ms, per_1)
        self.details["http_send_wall_ms_median"] = round(send_wall, 3)
        self.details["ws_end_to_end_ms_median"] = round(ws_e2e, 3)

        # header sizes, as counted by the proxy
        cls = proxy.counters.classes
        req = [cls[k] for k in ("poll", "longpoll", "send", "receipt") if k in cls]
        p["http_request_header_bytes"] = round(sum(c[2] for c in req) / max(1, sum(c[0] for c in req)))
        p["http_response_header_bytes"] = round(sum(c[4] for c in req) / max(1, sum(c[1] for c in req)))
        hs = cls.get("handshake")
        if hs and hs[0]:
            p["ws_handshake_request_bytes"] = round(hs[2] / hs[0])
            p["ws_handshake_response_bytes"] = round(hs[4] / max(1, hs[1]))
        p["server_cores"] = 1
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()}
        return {"parameters": out, "details": self.details}


async def calibrate(data_dir: Path, scale: float = 1.0, redis_url: str | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start a server process in *data_dir*, measure, stop it."""
    srv = ServerProcess(data_dir, redis_url=redis_url, redis_prefix=f"chatlab-cal-{uuid.uuid4().hex[:8]}")
    await srv.start()
    try:
        return await Calibration(srv, scale, log).run()
    finally:
        await srv.stop()
