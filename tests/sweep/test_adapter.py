"""The adapter's metric lists are the model's summary columns, and every metric has a unit."""

from sim import Scenario

from chatlab.sweep.adapter import (CAPACITY_METRICS, COMPARE_METRICS, CRASH_METRICS, metric_unit, run_compare,
                                   run_crash)

TINY = Scenario().with_overrides({"clients": 20, "duration_s": 40, "warmup_s": 5, "connect_ramp_s": 2,
                                  "crash_at_s": 12, "downtime_s": 5})


def test_compare_metrics_are_the_summary_columns():
    import sim

    row = run_compare(TINY, "long_polling")
    assert tuple(row) == COMPARE_METRICS
    cmp_cols = [c for c in sim.compare(TINY.with_overrides({"transports": "long_polling"})).summary.columns
                if c != "transport"]
    assert list(COMPARE_METRICS) == cmp_cols
    assert all(v is None or isinstance(v, (int, float)) for v in row.values())


def test_crash_metrics_are_the_summary_columns():
    row = run_crash(TINY, "websocket", "full_jitter")
    assert tuple(row) == CRASH_METRICS
    assert row["incident_start_s"] == 12.0


def test_every_metric_has_a_unit():
    for m in (*COMPARE_METRICS, *CRASH_METRICS, *CAPACITY_METRICS):
        if m != "deciding_constraint":
            assert metric_unit(m), m
    assert metric_unit("latency_ms_p95") == "ms"
    assert metric_unit("requests_per_s") == "requests/s"
    assert metric_unit("time_to_reconnect_all_s") == "s"
