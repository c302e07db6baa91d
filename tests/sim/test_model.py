"""Functional tests of the model: reproducibility, common random numbers,
conservation (nothing lost, nothing duplicated) and monotonic behaviour."""

import numpy as np
import pandas as pd
import pytest

from chatlab.parallel import run_many
from sim import Scenario, compare, run

SMALL = dict(clients=60, msg_rate_per_min=6, duration_s=60, warmup_s=10)


def sc(**kw):
    return Scenario().with_overrides({**SMALL, **kw})


@pytest.fixture(scope="module")
def small_cmp():
    return compare(sc(seed=7))


def test_same_seed_same_results(small_cmp):
    again = compare(sc(seed=7))
    for t in small_cmp.runs:
        a, b = small_cmp.runs[t], again.runs[t]
        assert a.summary == b.summary
        for table in ("messages", "receipts", "classes", "bins"):
            pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))


def test_other_seed_other_results(small_cmp):
    other = compare(sc(seed=8, transports="websocket"))
    assert not other.runs["websocket"].messages["sent_at"].equals(small_cmp.runs["websocket"].messages["sent_at"])


def test_every_transport_sees_the_same_messages(small_cmp):
    runs = list(small_cmp.runs.values())
    sent = {r.transport: r.summary["messages_sent"] for r in runs}
    assert len(set(sent.values())) == 1
    keys = [r.messages[["msg", "recipient", "sent_at"]].reset_index(drop=True) for r in runs]
    for k in keys[1:]:
        pd.testing.assert_frame_equal(keys[0], k)


@pytest.mark.parametrize("transport", ["short_polling", "long_polling", "websocket"])
def test_nothing_lost_nothing_duplicated(small_cmp, transport):
    r = small_cmp.runs[transport]
    m = r.messages
    assert not m.duplicated(["msg", "recipient"]).any()
    assert r.summary["messages_delivered"] == r.summary["messages_sent"] > 0
    assert (m.received_at >= m.available_at).all() and (m.available_at > m.sent_at).all()
    assert (m.sender != m.recipient).all()


@pytest.mark.parametrize("transport", ["short_polling", "long_polling", "websocket"])
def test_receipts_come_back_to_the_sender(small_cmp, transport):
    r = small_cmp.runs[transport]
    conv = pd.Series(r.messages.drop_duplicates("msg").set_index("msg").conversation)
    rec = r.receipts.assign(conversation=lambda d: d.msg.map(conv))
    assert (rec.received_at > rec.sent_at).all()
    first = r.messages.groupby("msg").received_at.min()
    assert (rec.sent_at >= rec.msg.map(first) - 1e-9).all()  # no receipt before its message arrived
    # A receipt covers every message of its conversation up to the one it names (up_to): every
    # message delivered early enough for its receipt to travel back (up, stored, and down at the
    # sender's next poll: under 2 poll intervals + 1 s) is covered by a delivered receipt.
    sc = small_cmp.scenario
    newest = rec[rec.status == "delivered"].groupby("conversation").msg.max()
    m = r.messages[r.messages.in_window & (r.messages.received_at < sc.duration_s - 2 * sc.poll_interval_s - 1)]
    assert len(m) > 50
    assert (m.msg.to_numpy() <= m.conversation.map(newest).to_numpy()).all()
    # read receipts follow after the (exponential) read delay: most have come back by the end
    assert (rec.status == "read").sum() > 0.5 * (rec.status == "delivered").sum()


def test_receipts_off_means_no_receipt_traffic():
    r = run(sc(receipts=False), "long_polling")
    assert len(r.receipts) == 0
    assert "receipt" not in set(r.classes["class"])


def test_group_messages_fan_out_to_every_other_member():
    r = run(sc(clients=60, group_size=5, transports="websocket"), "websocket")
    per_msg = r.messages.groupby("msg").size()
    assert (per_msg == 4).all()


def test_more_clients_more_load():
    a = run(sc(clients=40), "short_polling").summary
    b = run(sc(clients=80), "short_polling").summary
    assert b["requests_per_s"] > 1.8 * a["requests_per_s"]
    assert b["server_cpu_utilization"] > a["server_cpu_utilization"]
    assert b["open_connections_mean"] > a["open_connections_mean"]


def test_faster_polling_lower_latency_more_requests():
    slow = run(sc(poll_interval_s=4), "short_polling").summary
    fast = run(sc(poll_interval_s=1), "short_polling").summary
    assert fast["latency_ms"]["p50"] < slow["latency_ms"]["p50"]
    polls = {k: run(sc(poll_interval_s=v), "short_polling").classes.set_index("class").at["poll", "up_per_s"]
             for k, v in (("slow", 4), ("fast", 1))}
    assert polls["fast"] == pytest.approx(4 * polls["slow"], rel=0.05)  # +-1 poll per client in 50 s
    assert fast["requests_per_s"] > slow["requests_per_s"]
    assert fast["empty_response_ratio"] > slow["empty_response_ratio"]


def test_overload_shows_as_queueing_not_as_lost_work():
    light = run(sc(clients=200, server_cores=1, transports="short_polling", poll_interval_s=1), "short_polling")
    heavy = run(sc(clients=200, server_cores=1, transports="short_polling", poll_interval_s=1,
                   cpu_poll_ms=6.0), "short_polling")
    assert heavy.summary["server_cpu_utilization"] > 0.95
    assert heavy.summary["cpu_wait_ms_mean"] > 50 * max(light.summary["cpu_wait_ms_mean"], 1e-3)
    assert heavy.summary["latency_ms"]["p95"] > light.summary["latency_ms"]["p95"]


def test_keepalive_shorter_than_poll_interval_reopens_connections():
    kept = run(sc(poll_interval_s=5, http_keepalive_s=75), "short_polling")
    closed = run(sc(poll_interval_s=5, http_keepalive_s=2), "short_polling")
    assert kept.summary["open_connections_mean"] > 1.9 * SMALL["clients"]
    assert closed.summary["open_connections_mean"] < 0.5 * kept.summary["open_connections_mean"]
    # every poll now pays a new connection: the accept's CPU on top of the poll's
    per_poll = closed.classes.set_index("class").loc["poll"]
    s = closed.scenario
    # (each client receives ~1.5 events per 5 s poll at this rate: allow up to 3 events' cost)
    per_op_ms = per_poll.cpu_busy_s / per_poll.cpu_ops * 1000
    assert s.cpu_poll_ms + s.cpu_handshake_ms <= per_op_ms <= s.cpu_poll_ms + s.cpu_handshake_ms + 3 * s.cpu_per_event_ms


class _Conns:
    """Recorder stand-in that keeps the connection intervals an HttpPool reports."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []

    def connection(self, opened: float, closed: float) -> None:
        self.intervals.append((opened, closed))


def test_http_pool_opens_a_connection_only_when_every_one_is_busy():
    from sim.transports.http import HttpPool

    pool, rec = HttpPool(), _Conns()
    assert pool.acquire(0.0, 75.0, rec) is True       # nothing open yet
    assert pool.acquire(0.01, 75.0, rec) is True      # the first still carries a request
    pool.release(0.05)
    pool.release(0.06)
    assert pool.acquire(1.0, 75.0, rec) is False      # reused
    assert pool.acquire(1.0, 75.0, rec) is False      # both reused
    assert pool.acquire(1.0, 75.0, rec) is True       # a third request at once: a third one
    for t in (1.1, 1.2, 1.3):
        pool.release(t)
    # 80 s later all three have been idle past the keep-alive: each closed at idle + 75 s
    assert pool.acquire(81.0, 75.0, rec) is True
    assert sorted(c for _, c in rec.intervals) == pytest.approx([76.1, 76.2, 76.3])
    pool.release(81.5)  # its answer reaches the client at 81.5...
    assert pool.acquire(81.2, 75.0, rec) is True      # ...so a request at 81.2 needs another
    assert pool.acquire(81.6, 75.0, rec) is False     # and one at 81.6 reuses it
    pool.close(100.0, 75.0, rec)
    assert sorted(rec.intervals)[-2:] == [(81.0, 100.0), (81.2, 100.0)] and len(rec.intervals) == 5


def test_overlapping_uploads_open_more_connections_and_pay_the_connect():
    """HTTP/1.1 carries one request at a time: a send or receipt that overlaps another
    upload of the same client needs another connection, and pays its accept on the CPU.
    Long polling holds its own connection, so a client keeps more than two open (the
    reference client measured 2.7 per client at the validation load, docs/VALIDATION.md)."""
    s = sc(msg_rate_per_min=60, read_delay_s=0.5)
    r = run(s, "long_polling")
    assert r.summary["open_connections_mean"] > 2.05 * SMALL["clients"]  # one poll + one upload each: 2.0
    c = r.classes.set_index("class")
    accepts = sum((c.at[k, "cpu_busy_s"] * 1000 - c.at[k, "cpu_ops"] * cost) / s.cpu_handshake_ms
                  for k, cost in (("send", s.cpu_http_send_ms), ("receipt", s.cpu_http_receipt_ms)))
    assert accepts > 5  # connections opened by uploads after warm-up (none with one upload connection)


def test_held_requests_are_counted_until_the_end_of_the_run(small_cmp):
    r = small_cmp.runs["long_polling"]
    b = r.bins
    end = r.scenario.duration_s + 1.0  # the run goes on a little past duration_s (drain)
    last = b[(b.t_s >= end - 5) & (b.t_s + r.scenario.bin_s <= end)]
    # a long poll held when the run ends is still held: the count must not fall off at the end
    assert last.held_requests.min() > 0.8 * SMALL["clients"]


def test_long_polling_holds_a_request_per_client_websocket_holds_none(small_cmp):
    s = small_cmp.summary.set_index("transport")
    assert s.at["long_polling", "held_requests_mean"] > 0.9 * SMALL["clients"]
    assert s.at["websocket", "held_requests_mean"] == 0
    assert s.at["websocket", "open_connections_mean"] == pytest.approx(SMALL["clients"])
    assert s.at["short_polling", "empty_response_ratio"] > s.at["long_polling", "empty_response_ratio"]


def test_jitter_keeps_websocket_frames_in_order():
    r = run(sc(net_jitter_ms=40, transports="websocket"), "websocket")
    m = r.messages.sort_values(["recipient", "available_at"])
    for _, g in m.groupby("recipient"):
        assert np.all(np.diff(g.received_at.to_numpy()) >= -1e-12)
    assert r.summary["latency_ms"]["p99"] > r.summary["latency_ms"]["p50"] + 10


def test_serial_equals_parallel():
    s = sc(seed=3)
    tasks = [(s, t) for t in s.transports]
    serial = run_many(tasks, jobs=1)
    parallel = run_many(tasks, jobs=2)
    for a, b in zip(serial, parallel):
        assert a.summary == b.summary
        pd.testing.assert_frame_equal(a.messages, b.messages)


def test_json_contract(small_cmp):
    out = small_cmp.to_json()
    assert set(out) == {"scenario", "results"}
    assert out["scenario"]["clients"] == SMALL["clients"]
    required = {"transport", "requests_per_s", "empty_response_ratio", "overhead_bytes_up_per_s",
                "overhead_bytes_down_per_s", "payload_bytes_up_per_s", "payload_bytes_down_per_s", "latency_ms",
                "open_connections_mean", "open_connections_peak", "server_cpu_utilization", "messages_sent",
                "messages_delivered"}
    for res in out["results"]:
        assert required <= set(res)
        assert set(res["latency_ms"]) >= {"mean", "p50", "p95", "p99", "max"}
    assert [r["transport"] for r in out["results"]] == list(small_cmp.scenario.transports)


def test_a_receipt_reaches_the_senders_of_every_message_it_passes(monkeypatch):
    """In a group, a read receipt that moves the reader's watermark past messages of several
    senders reaches each of them (the server fans a receipt out to the senders of the messages
    in (previous watermark, up_to]), not only the senders of the batch it was sent for."""
    import numpy as np

    from chatcore.workload import Workload
    from sim import Scenario
    from sim.clients import READ
    from sim.model import ChatModel
    from chatcore.workload import streams

    # Group (0, 1, 2): 0 sends m0 at 1 s (read 5 s later), 1 sends m1 at 2 s (read 0.5 s later).
    # Client 2's read receipt for m1 (about 2.6 s) passes m0 as well: 0 hears of it then, long
    # before client 2's own receipt for m0 (about 6.1 s, which moves nothing).
    wl = Workload(send_time=np.array([1.0, 2.0]), sender=np.array([0, 1]), conversation=np.array([0, 0]),
                  read_delay=np.array([5.0, 0.5]), start_time=np.zeros(3), poll_phase=np.zeros(3),
                  members=((0, 1, 2),), conversation_of=np.zeros(3, dtype=np.int64))
    sc = Scenario().with_overrides({"clients": 3, "group_size": 3, "duration_s": 10.0, "warmup_s": 0.0,
                                    "connect_ramp_s": 0.0, "rtt_ms": 50.0, "transports": "websocket"})
    model = ChatModel(sc, "websocket", wl, streams(sc.seed))
    published = []
    real = model.delivery.publish

    def spy(targets, kind, msg, size, sent, server):
        published.append((model.env.now, [t.idx for t in targets], kind, msg))
        return real(targets, kind, msg, size, sent, server)

    monkeypatch.setattr(model.delivery, "publish", spy)
    model.run()
    read_to_0 = [t for t, targets, kind, msg in published if kind == READ and targets == [0] and msg == 0]
    assert read_to_0 and min(read_to_0) < 4.0, published
