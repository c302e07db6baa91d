"""The shared vocabulary: framing sizes, envelope sizes, cursors, states, backoff."""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore import (Backoff, Cursor, CursorError, MessageState, WireSizes, advance_message_state, encode,
                      message_event, poll_response, ws_frame_overhead)
from chatcore.backoff import POLICIES, backoff_delay


@pytest.mark.parametrize("length,masked,expected", [
    (0, False, 2), (125, False, 2), (126, False, 4), (65535, False, 4), (65536, False, 10),
    (0, True, 6), (125, True, 6), (126, True, 8), (65536, True, 14),
])
def test_rfc6455_5_2_frame_header_sizes(length, masked, expected):
    assert ws_frame_overhead(length, masked) == expected


def test_sizes_are_the_sizes_of_real_envelopes():
    s = WireSizes.measure(57)
    ev = message_event("eeeeeeee.9999999", 9999999, "dm:uuuuuuuu:uuuuuuuu", "uuuuuuuu", "x" * 57,
                       "f" * 32, 1_764_000_000_000)
    assert s.message_event == len(encode(ev))
    assert s.poll_body(2 * s.message_event, 2) == len(encode(poll_response([ev, ev], "eeeeeeee.9999999")))
    assert s.poll_body(0, 0) == len(encode(poll_response([], "eeeeeeee.9999999")))


def test_payload_grows_envelope_byte_for_byte():
    assert WireSizes.measure(300).message_event - WireSizes.measure(100).message_event == 200


@given(epoch=st.from_regex(r"[0-9a-z]{1,16}", fullmatch=True), seq=st.integers(0, 10**15))
def test_cursor_round_trip(epoch, seq):
    c = Cursor(epoch, seq)
    assert Cursor.parse(str(c)) == c


@pytest.mark.parametrize("text", ["", "abc", "abc.", ".5", "abc.-1", "ABC.1", "a.b", "a.1.2", "x" * 50,
                                  "a.١"])
def test_cursor_rejects(text):
    with pytest.raises(CursorError):
        Cursor.parse(text)


def test_message_state_only_moves_forward():
    assert advance_message_state(MessageState.SENT, "delivered") is MessageState.DELIVERED
    assert advance_message_state(MessageState.DELIVERED, "read") is MessageState.READ
    assert advance_message_state(MessageState.READ, "delivered") is MessageState.READ
    assert advance_message_state(MessageState.SENT, "read") is MessageState.READ


@given(policy=st.sampled_from(POLICIES), attempt=st.integers(0, 80),
       base=st.floats(0.01, 5), cap=st.floats(0.01, 120), seed=st.integers(0, 2**32 - 1))
def test_backoff_stays_within_aws_bounds(policy, attempt, base, cap, seed):
    rng = random.Random(seed)
    v = min(cap, base * 2.0 ** attempt)
    prev = base * 1.7
    d = backoff_delay(policy, attempt, base, cap, prev, rng)
    bounds = {"immediate": (0, 0), "fixed": (min(cap, base), min(cap, base)), "exponential": (v, v),
              "full_jitter": (0, v), "equal_jitter": (v / 2, v),
              "decorrelated_jitter": (min(cap, base), min(cap, max(base, 3 * prev)))}[policy]
    assert bounds[0] - 1e-12 <= d <= bounds[1] + 1e-12


def test_backoff_works_with_numpy_and_stdlib_rngs_and_resets():
    for rng in (random.Random(1), np.random.default_rng(1)):
        b = Backoff("exponential", 0.5, 8.0, rng)
        assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
        b.reset()
        assert b.next_delay() == 0.5
    with pytest.raises(ValueError, match="reconnect_policy"):
        Backoff("sometimes", 1, 2, random.Random())


def test_one_to_one_sends_name_the_peer_and_groups_name_the_conversation():
    from chatcore import send_request

    one, group = WireSizes.measure(10, one_to_one=True), WireSizes.measure(10, one_to_one=False, id_digits=3)
    assert one.send_request == len(encode(send_request("x" * 10, "f" * 32, to="u" * 8)))
    assert group.send_request == len(encode(send_request("x" * 10, "f" * 32, conversation="g:999")))
    assert WireSizes.measure(10, id_digits=2).message_event == one.message_event - 2 * 5  # cursor and id


def test_quantile_ci_covers_the_true_quantile_at_least_95_percent_of_the_time():
    """Exponential(1) samples of 169 (a light validation row): the true median is ln 2 and
    the true p95 is ln 20. Over 1,000 samples the coverage must be >= 95 % up to three
    standard errors of a proportion (sqrt(0.95 * 0.05 / 1000) = 0.7 %)."""
    from chatcore.stats import quantile_ci

    rng = np.random.default_rng(7)
    hits = {0.5: 0, 0.95: 0}
    widths = []
    for _ in range(1000):
        x = rng.exponential(1.0, 169)
        for q, true in ((0.5, np.log(2)), (0.95, np.log(20))):
            lo, hi = quantile_ci(x, q)
            assert lo <= np.percentile(x, q * 100) <= hi
            hits[q] += lo <= true <= hi
            if q == 0.95:
                widths.append(hi - lo)
    for q, h in hits.items():
        assert h / 1000 >= 0.95 - 3 * 0.0069, (q, h)
    assert quantile_ci(rng.exponential(1.0, 20), 0.95) is None  # 20 draws cannot bound a p95
    # exact order statistics: n = 20, median -> x(6) and x(15) (Conover, table A3)
    assert quantile_ci(np.arange(1.0, 21.0), 0.5) == (6.0, 15.0)
    assert quantile_ci(np.array([]), 0.5) is None
    # more data, a narrower interval
    lo, hi = quantile_ci(rng.exponential(1.0, 10_000), 0.95)
    assert hi - lo < np.median(widths) / 4


# --- states as data, used ------------------------------------------------------------------
def test_a_transition_outside_the_table_is_an_error():
    from chatcore.states import CONNECTION_TRANSITIONS, ConnectionState as CS, TransitionError, check_transition

    assert check_transition(CONNECTION_TRANSITIONS, CS.DISCONNECTED, CS.CONNECTING) is CS.CONNECTING
    with pytest.raises(TransitionError, match="disconnected -> connected"):
        check_transition(CONNECTION_TRANSITIONS, CS.DISCONNECTED, CS.CONNECTED)


def test_the_watermark_only_moves_forward():
    from chatcore.states import advance_watermark

    assert advance_watermark(None, 3) == (3, True)
    assert advance_watermark(3, 5) == (5, True)
    assert advance_watermark(5, 5) == (5, False)
    assert advance_watermark(5, 2) == (5, False)
    # cursors are ordered too
    assert advance_watermark(Cursor.parse("ab.7"), Cursor.parse("ab.9")) == (Cursor.parse("ab.9"), True)
    assert advance_watermark(Cursor.parse("ab.9"), Cursor.parse("ab.7"))[1] is False


def test_the_simulation_moves_connections_only_along_the_table(monkeypatch):
    """Drop the reconnect edge from the table: a crash run must refuse to reconnect."""
    import sim.model
    from chatcore.states import CONNECTION_TRANSITIONS, ConnectionState as CS, TransitionError
    from sim import Scenario
    from sim.crash import run_crash

    sc = Scenario().with_overrides(dict(clients=40, servers=2, duration_s=40, warmup_s=12, crash_at_s=20,
                                        transports="websocket"))
    r = run_crash(sc, "websocket")
    assert r.summary["affected_clients"] > 0
    broken = {**CONNECTION_TRANSITIONS, CS.BACKING_OFF: frozenset({CS.DISCONNECTED})}
    monkeypatch.setattr(sim.model, "CONNECTION_TRANSITIONS", broken)
    with pytest.raises(TransitionError, match="backing_off -> connecting"):
        run_crash(sc, "websocket")


def test_the_simulation_applies_the_shared_watermark_rule(monkeypatch):
    import sim.model
    from chatcore.states import advance_watermark
    from sim import Scenario, run

    calls = []

    def spy(stored, proposed):
        calls.append((stored, proposed))
        return advance_watermark(stored, proposed)

    monkeypatch.setattr(sim.model, "advance_watermark", spy)
    r = run(Scenario().with_overrides(dict(clients=60, duration_s=30, warmup_s=12, transports="websocket")),
            "websocket")
    assert len(calls) >= len(r.receipts) > 0


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1)
    | st.text(st.characters(blacklist_categories=("Cs",))),  # lone surrogates are not text
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, derandomize=True)
@given(_json_values)
def test_encode_is_the_standard_librarys_compact_json(obj: object) -> None:
    """encode() writes with orjson for speed; the bytes must be those of json.dumps with the
    compact separators and ensure_ascii=False, on every kind of value an envelope holds."""
    assert encode(obj) == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_encode_falls_back_where_orjson_refuses() -> None:
    obj = {"big": 2 ** 70, "small": -(2 ** 70)}
    assert encode(obj) == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
