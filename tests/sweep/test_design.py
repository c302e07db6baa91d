"""Points, seeds and runs: grid x zip x sample, SeedSequence-derived seeds, common random numbers."""

import numpy as np
import pytest

from chatlab.sweep import design_points, load_sweep, plan, run_seed

from .conftest import write_sweep


def test_grid_zip_and_sample_cross(tmp_path):
    f = write_sweep(tmp_path / "s.toml", """
replications = 2
[grid]
rtt_ms = [10, 20, 30]
msg_rate_per_min = {start = 0.5, stop = 8, num = 3, scale = "log"}
[[zip]]
poll_interval_s = [1, 2]
long_poll_timeout_s = [15, 30]
[sample]
method = "lhs"
count = 4
bounds = {net_jitter_ms = [1, 100], clients = [10, 40]}
log = ["net_jitter_ms"]
""")
    spec = load_sweep(f)
    pts = design_points(spec)
    assert len(pts) == 3 * 3 * 2 * 4
    assert [p["msg_rate_per_min"] for p in pts[:24:8]] == pytest.approx([0.5, 2.0, 8.0])
    assert {(p["poll_interval_s"], p["long_poll_timeout_s"]) for p in pts} == {(1.0, 15.0), (2.0, 30.0)}
    assert all(isinstance(p["clients"], int) and 10 <= p["clients"] <= 40 for p in pts)
    runs = plan(spec)
    assert len(runs) == len(pts) * 2 * 2  # x transports x replications
    assert len({r.run_id for r in runs}) == len(runs)
    assert plan(load_sweep(f)) == runs, "the plan depends only on the file"


def test_latin_hypercube_puts_one_point_in_each_slice(tmp_path):
    f = write_sweep(tmp_path / "s.toml", """
[sample]
method = "lhs"
count = 10
bounds = {rtt_ms = [0, 100], net_jitter_ms = [1, 1000]}
log = ["net_jitter_ms"]
""")
    pts = design_points(load_sweep(f))
    rtt = np.array([p["rtt_ms"] for p in pts])
    jit = np.log10([p["net_jitter_ms"] for p in pts])  # uniform in log10 on [0, 3]
    assert sorted(np.floor(rtt / 10).astype(int)) == list(range(10))
    assert sorted(np.floor(jit / 0.3).astype(int)) == list(range(10))


def test_run_seed_is_the_seedsequence_child():
    ss = np.random.SeedSequence(123).spawn(4)[2]
    assert run_seed(123, 2) == int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1
    seeds = [run_seed(123, r) for r in range(200)]
    assert len(set(seeds)) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert run_seed(124, 0) != run_seed(123, 0)
    assert run_seed(123, 0, point=1) != run_seed(123, 0, point=2) != run_seed(123, 0)


def test_common_random_numbers_share_a_seed_per_replication(tiny_sweep, tmp_path):
    runs = plan(load_sweep(tiny_sweep))
    by_rep = {}
    for r in runs:
        by_rep.setdefault(r.replication, set()).add(r.seed)
        assert r.scenario.seed == r.seed
    assert all(len(s) == 1 for s in by_rep.values()), "every point of a replication shares its seed"
    assert len({next(iter(s)) for s in by_rep.values()}) == 3, "replications have distinct seeds"
    text = tiny_sweep.read_text().replace('name = "tiny"', 'name = "tiny"\ncommon_random_numbers = false')
    indep = plan(load_sweep(write_sweep(tmp_path / "i.toml", text, base="")))
    assert len({r.seed for r in indep if r.replication == 0}) == 2, "one seed per point without CRN"
    assert {r.seed for r in indep if r.transport == "websocket"} == {r.seed for r in indep
                                                                      if r.transport == "long_polling"}


def test_common_random_numbers_make_differences_less_noisy(tmp_path):
    """Points differing only in rtt_ms: with CRN both see the same messages (same count in every
    replication), so their difference has no workload noise; without CRN it has."""
    from chatlab.sweep.adapter import run_compare

    for crn in (True, False):
        f = write_sweep(tmp_path / f"c{crn}.toml", f"""
replications = 4
common_random_numbers = {'true' if crn else 'false'}
metrics = ["messages_sent"]
[grid]
rtt_ms = [20, 80]
""", base='[base]\nclients = 40\nduration_s = 30\nwarmup_s = 5\nconnect_ramp_s = 2\ntransports = ["websocket"]\n')
        runs = plan(load_sweep(f))
        sent = {(r.point, r.replication): run_compare(r.scenario, r.transport)["messages_sent"] for r in runs}
        diffs = [sent[(1, k)] - sent[(0, k)] for k in range(4)]
        if crn:
            assert diffs == [0, 0, 0, 0]
        else:
            assert any(d != 0 for d in diffs)
