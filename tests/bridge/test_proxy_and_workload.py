"""The load generator's pieces without a server: the workload is the simulation's, and
the proxy's parsers count what the wire carries."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from reference_server.loadgen.proxy import OVH_DOWN, OVH_UP, PAY_DOWN, PAY_UP, UP, CountingProxy, Counters, _Conn
from reference_server.loadgen.runner import step_average
from reference_server.loadgen.workload import draw
from sim import Scenario
from sim.workload import draw as sim_draw, streams


@pytest.mark.parametrize("over", [{"clients": 30, "group_size": 2}, {"clients": 31, "group_size": 5,
                                                                       "read_delay_s": 0, "connect_ramp_s": 0}])
def test_workload_is_the_simulations(over):
    sc = Scenario().with_overrides({"duration_s": 40, "warmup_s": 5, "msg_rate_per_min": 7, **over})
    a = sim_draw(sc, streams(sc.seed))
    b = draw(sc.clients, sc.msg_rate_per_min, sc.group_size, sc.duration_s, sc.read_delay_s,
             sc.connect_ramp_s, sc.seed)
    for name in ("send_time", "sender", "conversation", "read_delay", "start_time", "poll_phase",
                 "conversation_of"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.members == b.members


def _frame(payload: bytes, masked: bool, opcode: int = 1) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([(0x80 if masked else 0) | n]) if n <= 125 else
                                     bytes([(0x80 if masked else 0) | 126]) + n.to_bytes(2, "big"))
    if not masked:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(p ^ key[i % 4] for i, p in enumerate(payload))


def test_parsers_split_headers_bodies_and_frames():
    c = Counters()
    conn = _Conn(c, 0.0)
    req = b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    resp = b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}'
    # in arbitrary pieces, as TCP delivers them
    for i in range(0, len(req), 7):
        conn.up.feed(req[i:i + 7], 1.0)
    conn.down.feed(resp, 1.0)
    send = c.classes["send"]
    assert send[UP] == 1 and send[PAY_UP] == 5 and send[OVH_UP] == len(req) - 5
    assert send[PAY_DOWN] == 2 and send[OVH_DOWN] == len(resp) - 2
    conn.up.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 2.0)
    conn.down.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 2.0)
    body = b'{"type":"send","to":"b","body":"' + b"x" * 200 + b'"}'
    data = _frame(body, True) + _frame(b'{"type":"receipt"}', True) + _frame(b"", True, 0xA)
    for i in range(0, len(data), 5):
        conn.up.feed(data[i:i + 5], 3.0)
    conn.down.feed(_frame(b'{"type":"message","cursor":"a.1"}', False) + _frame(b'{"type":"ack"}', False)
                   + _frame(b"", False, 0x9), 3.0)
    assert c.classes["ws_send"][PAY_UP] == len(body) and c.classes["ws_send"][OVH_UP] == 8
    assert c.classes["ws_receipt"][UP] == 1 and c.classes["pong"][OVH_UP] == 6
    assert c.classes["ws_event"][OVH_DOWN] == 2 and c.classes["ws_ack"][PAY_DOWN] == 14
    assert c.classes["ping"][OVH_DOWN] == 2
    assert c.classes["handshake"][UP] == 1


def test_step_average():
    assert step_average([[0, 10], [5, 20]], 0, 10) == (1.5, 2)


@contextlib.asynccontextmanager
async def echo_behind_proxy(rtt_ms: float) -> AsyncIterator[tuple[CountingProxy, asyncio.StreamReader,
                                                                   asyncio.StreamWriter]]:
    """An echo server behind a CountingProxy of *rtt_ms*, and a connection through it."""
    async def echo(r, w):
        while data := await r.read(100):
            w.write(data)
            await w.drain()
        w.close()
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = await CountingProxy("127.0.0.1", srv.sockets[0].getsockname()[1], rtt_ms=rtt_ms).start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        yield proxy, r, w
        w.close()
    finally:
        await proxy.stop()
        srv.close()


def test_proxy_delays_each_direction_by_half_the_rtt():
    async def main():
        async with echo_behind_proxy(100) as (proxy, r, w):
            loop = asyncio.get_running_loop()
            t = loop.time()
            w.write(b"ping")
            await r.readexactly(4)
            first = loop.time() - t  # connect round trip + one round trip
            t = loop.time()
            w.write(b"pong")
            await r.readexactly(4)
            second = loop.time() - t
        assert proxy.counters.total_up == 8 and proxy.counters.total_down == 8
        return first, second
    first, second = asyncio.run(main())
    assert 0.19 <= first < 0.4
    assert 0.09 <= second < 0.2  # each wake-up may come up to `early` (<= 3 ms) before its due time


def test_proxy_records_how_far_each_delayed_chunk_was_off():
    """The proxy sets each wake-up `early` before the chunk is due, learnt from how late the
    wake-ups came, and keeps every chunk's excess (``delay_excess``) for the summary."""
    async def main():
        async with echo_behind_proxy(10) as (proxy, r, w):
            for _ in range(20):
                w.write(b"ping")
                await r.readexactly(4)
        return proxy
    proxy = asyncio.run(main())
    excess = proxy.counters.delay_excess
    assert len(excess) >= 40  # every chunk, both ways (and the closing EOF)
    assert 0.0 <= proxy.early <= 0.003
    assert all(x > -0.0035 for x in excess)  # never more than the cap early


def test_the_load_generator_takes_its_configuration_from_the_scenario_spec():
    """One configuration: the load generator's parameters are Scenario's, with the same errors."""
    from chatcore.params import ParameterError
    from reference_server.loadgen import LoadConfig

    sc = Scenario().with_overrides({"clients": 40, "rtt_ms": 30})
    cfg = LoadConfig.from_params(sc.to_values(), transport="long_polling")
    assert cfg.clients == 40 and cfg.rtt_ms == 30.0 and cfg.duration_s == sc.duration_s
    assert cfg.to_dict()["transport"] == "long_polling"
    for bad in ({"bogus": 1}, {"payload_bytes": 0}, {"warmup_s": 500}, {"group_size": 99, "clients": 10}):
        with pytest.raises(ParameterError) as from_loadgen:
            LoadConfig.from_params(bad)
        with pytest.raises(ParameterError) as from_sim:
            Scenario().with_overrides(bad)
        assert str(from_loadgen.value) == str(from_sim.value)


def test_a_refused_connection_is_reset_one_round_trip_after_it_was_opened():
    """A connect to a dead server costs the client a round trip (SYN out, RST back) on a real
    link; the proxy accepts at once on loopback, so it holds the reset for that round trip."""
    async def main():
        dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = dead.sockets[0].getsockname()[1]
        dead.close()
        await dead.wait_closed()
        proxy = await CountingProxy("127.0.0.1", port, rtt_ms=100).start()
        try:
            loop = asyncio.get_running_loop()
            t = loop.time()
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            with contextlib.suppress(ConnectionError):
                assert await r.read(10) == b""
            w.close()
            return loop.time() - t
        finally:
            await proxy.stop()
    took = asyncio.run(main())
    assert 0.095 <= took < 0.3  # the timer may fire up to a few ms early, never a round trip late
