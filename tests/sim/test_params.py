"""Scenario parameters: validated, frozen, one-line errors."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import PARAMETER_NAMES, ParameterError, Scenario, parse_assignment

CONTRACT = {"clients", "duration_s", "warmup_s", "msg_rate_per_min", "group_size", "payload_bytes",
            "poll_interval_s", "long_poll_timeout_s", "rtt_ms", "server_cores",
            "http_request_header_bytes", "http_response_header_bytes", "ws_heartbeat_s", "receipts",
            "read_delay_s", "seed", "transports"}


def test_contract_names_exist():
    assert CONTRACT <= set(PARAMETER_NAMES)


def test_default_is_valid_and_frozen():
    sc = Scenario()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sc.clients = 5  # type: ignore[misc]


def test_overrides_build_a_new_scenario_and_leave_the_old_one_alone():
    base = Scenario()
    other = base.with_overrides({"clients": "10", "transports": "websocket,short_polling"})
    assert (other.clients, other.transports) == (10, ("websocket", "short_polling"))
    assert base.clients == Scenario().clients and base.transports == Scenario().transports


BAD = [  # (name, value, fragment of what is allowed)
    ("clients", "0", "an integer >= 2"),
    ("clients", "1.5", "an integer >= 2"),
    ("clients", "many", "an integer >= 2"),
    ("msg_rate_per_min", "-1", "a number >= 0"),
    ("long_poll_timeout_s", "0", "a number > 0"),
    ("poll_interval_s", "inf", "a number > 0"),
    ("rtt_ms", "nan", "a number >= 0"),
    ("warmup_s", "999", "< duration_s"),
    ("group_size", "5000", "<= clients"),
    ("payload_bytes", "100000", "an integer 1..4000"),
    ("payload_bytes", "0", "an integer 1..4000"),
    ("receipts", "maybe", "true or false"),
    ("transports", "carrier_pigeon", "short_polling,long_polling,websocket"),
    ("transports", "websocket,websocket", "at most once"),
    ("transports", "", "a comma list"),
    ("service_time_dist", "uniform", "deterministic or exponential"),
    ("no_such_thing", "1", "unknown parameter"),
]


@pytest.mark.parametrize("name,value,allowed", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_bad_value_names_parameter_value_and_what_is_allowed(name, value, allowed):
    with pytest.raises(ParameterError) as info:
        Scenario().with_overrides({name: value})
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{name}=")
    assert allowed in msg


def test_typed_values_are_checked_too():
    with pytest.raises(ParameterError, match="clients=2.0"):
        Scenario().with_overrides({"clients": 2.0})
    with pytest.raises(ParameterError, match="receipts"):
        Scenario(receipts=1)  # type: ignore[arg-type]


def test_toml_file_and_scenario_table():
    a = Scenario.from_toml('clients = 50\nrtt_ms = 20\ntransports = ["websocket"]\nreceipts = false\n')
    b = Scenario.from_toml('[scenario]\nclients = 50\nrtt_ms = 20.0\ntransports = "websocket"\nreceipts = false\n')
    assert a == b and a.clients == 50 and a.rtt_ms == 20.0 and a.transports == ("websocket",)


@pytest.mark.parametrize("text,fragment", [
    ("clients = ", "valid TOML"),
    ("clients = -3", "clients=-3"),
    ("[other]\nclients = 3", "unknown parameter"),
    ('clients = "ten"', "clients=ten"),
])
def test_broken_toml(text, fragment):
    with pytest.raises(ParameterError, match=fragment):
        Scenario.from_toml(text)


def test_parse_assignment():
    assert parse_assignment("clients=10") == ("clients", "10")
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        parse_assignment("clients")


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(PARAMETER_NAMES), value=st.text(max_size=12))
def test_any_text_gives_a_scenario_or_a_parameter_error(name, value):
    try:
        sc = Scenario().with_overrides({name: value})
    except ParameterError as exc:
        assert str(exc).startswith(f"{name}=") and "\n" not in str(exc)
    else:
        assert isinstance(sc, Scenario)
