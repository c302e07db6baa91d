"""``chatlab capacity``: SLO parsing, the bracketing search, and the servers-needed answer."""

import math

import pytest
from sim import Scenario

from chatlab.cli import main
from chatlab.errors import UsageError
from chatlab.sweep import parse_slo, search

TINY = Scenario().with_overrides({"connect_ramp_s": 2.0, "seed": 3})


@pytest.mark.parametrize("text,message", [
    ("latency_p99<=250", "unknown metric latency_p99 (did you mean latency_ms_p99?)"),
    ("latency_ms_p99=<250", "'latency_ms_p99=<250' is not METRIC<=NUMBER"),
    ("latency_ms_p99<=fast", "is not METRIC<=NUMBER"),
    ("latency_ms_p99<=1e999", "'1e999' in 'latency_ms_p99<=1e999' is not a finite number"),
    ("latency_ms_p99<=1,latency_ms_p99<=2", "each metric at most once"),
    ("", "a comma list of METRIC<=NUMBER"),
])
def test_bad_slo(text, message):
    with pytest.raises(UsageError, match=None) as err:
        parse_slo(text)
    assert message in str(err.value) and str(err.value).startswith(f"--slo={text}:")


def test_slo_parses():
    c = parse_slo(" latency_p99_ms <= 250 , server_cpu_utilization<0.7,messages_delivered>=1")
    assert [str(x) for x in c] == ["latency_ms_p99<=250", "server_cpu_utilization<0.7", "messages_delivered>=1"]
    assert c[0].ok(250.0) and not c[1].ok(0.7) and not c[0].ok(None)


def test_search_finds_a_known_limit():
    """A WebSocket client holds exactly one connection, so open_connections_mean <= 300 allows
    exactly 300 clients: the search must end with a passing count within 2 % below 300 and a
    failing one just above."""
    res = search(TINY, "websocket", parse_slo("open_connections_mean<=300"), tolerance=0.02, window_s=2.0)
    assert 294 <= res.capacity <= 300 and 300 < res.bracket_high <= math.ceil(res.capacity * 1.02) + 1
    assert res.deciding == "open_connections_mean<=300"
    assert len(res.probes) <= 6, [p.clients for p in res.probes]
    assert all(p.ok == (p.clients <= 300) for p in res.probes)


def test_search_reports_an_infeasible_target():
    """Short polling every 2 s cannot deliver within 250 ms at the 99th percentile at any size."""
    res = search(TINY, "short_polling", parse_slo("latency_ms_p99<=250"),
                 window_s=5.0)
    assert res.capacity == 0 and res.deciding == "latency_ms_p99<=250"
    assert [p.clients for p in res.probes][-1] == 2


def test_cli_answers_servers_needed_with_assumptions(capsys):
    assert main(["capacity", "--users", "1000000", "--concurrency", "0.15", "--transport", "websocket",
                 "--slo", "open_connections_mean<=300", "--replications", "2", "--window", "2",
                 "--set", "connect_ramp_s=2", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "WebSocket: the search" in out and "#2:" in out
    assert "deciding constraint: open_connections_mean<=300" in out
    assert "1,000,000 daily users x 0.15 online at the peak = 150,000 concurrent connections" in out
    # 150,000 / (294..300 clients) = 500..511 servers
    line = next(l for l in out.splitlines() if "servers" in l and "clients each" in l)
    servers = int(line.split()[1].replace(",", ""))
    assert 500 <= servers <= 511
    assert "users are independent across connection servers" in out


@pytest.mark.parametrize("args,message", [
    (["--slo", "p99<=3"], "--slo=p99<=3: unknown metric p99"),
    (["--users", "-5"], "--users=-5: expected a whole number"),
    (["--concurrency", "2"], "--concurrency=2: expected a number from 1e-06 to 1"),
    (["--transport", "pigeons"], "--transport=pigeons: a comma list"),
    (["--tolerance", "0"], "--tolerance=0"),
    (["--set", "clients=x"], "clients=x"),
])
def test_cli_errors(capsys, args, message):
    assert main(["capacity", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
