"""Operations: /metrics, /healthz, the demo page, and ``chatlab serve`` as a process."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

from reference_server.app import STATIC_DIR

from .conftest import Api, poll_until, wait_until, ws_frames_until, ws_open


async def test_metrics_count_each_transport(server, api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    held = asyncio.create_task(api.call("GET", "/api/longpoll?timeout=5", bob))
    await wait_until(lambda: server.chat.metrics.held_longpolls.get() == 1, what="a held long poll")
    ws = await ws_open(api, alice)
    await ws_frames_until(ws, lambda f: f["type"] == "resumed")
    await ws.send_json({"type": "send", "to": "bob", "body": "hi", "client_msg_id": "m1"})
    await ws_frames_until(ws, lambda f: f["type"] == "ack")
    status, _ = await held
    assert status == 200
    await api.poll(bob)
    status, text = await api.call("GET", "/metrics", bob)
    assert status == 200 and isinstance(text, str)
    lines = text.splitlines()

    def value(name: str) -> float:
        (line,) = [ln for ln in lines if ln.startswith(name + " ")]
        return float(line.split()[-1])

    for transport in ("short_polling", "long_polling", "websocket", "api"):
        assert value(f'chatlab_requests_total{{transport="{transport}"}}') >= 1
        assert value(f'chatlab_sent_bytes_total{{transport="{transport}"}}') > 0
    assert value('chatlab_open_connections{transport="websocket"}') == 1
    assert value("chatlab_held_long_polls") == 0
    assert value("chatlab_delivery_latency_seconds_count") >= 1
    assert value('chatlab_delivery_latency_seconds_bucket{le="+Inf"}') == value(
        "chatlab_delivery_latency_seconds_count")
    assert "# TYPE chatlab_queue_lag gauge" in lines
    await ws.close()


async def test_healthz_and_demo_page(server, api: Api) -> None:
    status, body = await api.call("GET", "/healthz")
    assert status == 200 and body["status"] == "ok" and body["epoch"] == server.chat.store.epoch
    async with api.session.get(api.url + "/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert page == (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    first = sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file())[0]
    async with api.session.get(api.url + "/static/" + first) as r:
        assert r.status == 200
    async with api.session.get(api.url + "/static/../app.py") as r:
        assert r.status == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chatlab_serve_answers_healthz(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chatlab.cli", "serve", "--port", str(port),
                             "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200 and b'"ok"' in r.read()
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "chatlab serve did not answer in 20 s"
                time.sleep(0.1)
        assert (tmp_path / "chat.sqlite3").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out.decode()
    assert b"Traceback" not in out


def test_chatlab_serve_refuses_bad_values(tmp_path: Path) -> None:
    for args, message in ((["--port", "abc"], "--port=abc: expected an integer 1-65535"),
                          (["--port", "70000"], "--port=70000: expected an integer 1-65535"),
                          (["--redis-url", "http://x"], "--redis-url=http://x: expected"),
                          (["--db", str(tmp_path)], "is a directory"),
                          (["--host", "999.1.1.1", "--data-dir", str(tmp_path / "d")], "--host=999.1.1.1")):
        proc = subprocess.run([sys.executable, "-m", "chatlab.cli", "serve", *args],
                              capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists() and not (tmp_path / "var").exists()  # nothing created


async def test_shutdown_answers_held_long_polls(make_server, session: aiohttp.ClientSession) -> None:
    server = await make_server()
    api = Api(session, server.url)
    bob = await api.user("bob")
    await poll_until(api, bob, lambda e: True, count=0)
    held = asyncio.create_task(api.call("GET", "/api/longpoll?timeout=60", bob))
    await wait_until(lambda: server.chat.metrics.held_longpolls.get() == 1, what="a held long poll")
    t0 = time.monotonic()
    await server.stop()
    status, body = await held
    assert status == 200 and body["events"] == []
    assert time.monotonic() - t0 < 3, "shutdown does not wait for the hold to expire"
