"""Summaries: mean, standard deviation, Student-t 95 % half-width and count per point."""

import math

import numpy as np
import pandas as pd
import pytest

from chatlab.cli import main
from chatlab.sweep import mean_ci, summarize, t_quantile


def test_t_quantiles_match_the_table():
    # two-sided 95 % Student t, from any statistics table
    for dof, t in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045), (60, 2.000), (10**6, 1.960)]:
        assert t_quantile(dof) == pytest.approx(t, abs=6e-4)


def test_mean_ci_on_known_numbers():
    x = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    mean, sd, half, n = mean_ci(x)
    assert (mean, n) == (5.0, 8)
    assert sd == pytest.approx(np.std(x, ddof=1))
    assert half == pytest.approx(2.364624 * sd / math.sqrt(8), rel=1e-6)
    one = mean_ci([3.0])
    assert one[0] == 3.0 and math.isnan(one[1]) and math.isnan(one[2]) and one[3] == 1
    assert mean_ci([None, float("nan"), 1.0, 3.0])[3] == 2


@pytest.mark.parametrize("n", [3, 5, 20])
def test_intervals_cover_a_known_mean_95_percent_of_the_time(n):
    """4,000 points of n normal replications each (mean 10, sd 3): the share of intervals that
    contain 10 is Binomial(4000, 0.95)/4000, sd 0.0034, so it lies in 0.95 +- 0.014 (4 sd)
    unless the half-width is wrong; the normal 1.96 instead of t would give 0.88 at n = 3."""
    rng = np.random.default_rng(2024 + n)
    points = 4000
    runs = pd.DataFrame({
        "point": np.repeat(np.arange(points), n), "transport": "websocket", "status": "ok",
        "replication": np.tile(np.arange(n), points), "x": rng.normal(10.0, 3.0, points * n),
    })
    s = summarize(runs, metrics=["x"])
    assert len(s) == points and (s["x.n"] == n).all()
    covered = ((s["x.mean"] - s["x.ci95"] <= 10.0) & (10.0 <= s["x.mean"] + s["x.ci95"])).mean()
    assert abs(covered - 0.95) < 0.014
    # the mean of sample sds is close to sigma (c4 bias is under 12 % at n = 3)
    assert s["x.std"].mean() == pytest.approx(3.0, rel=0.12)


def test_failed_runs_are_left_out_and_counted():
    runs = pd.DataFrame({"point": [0, 0, 0], "transport": "websocket", "replication": [0, 1, 2],
                         "status": ["ok", "ok", "error"], "x": [1.0, 3.0, np.nan]})
    row = summarize(runs, metrics=["x"]).iloc[0]
    assert (row["x.mean"], row["x.n"], row["failed"], row["replications"]) == (2.0, 2, 1, 2)


def test_summarize_command(tiny_sweep, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["sweep", str(tiny_sweep), "--out", str(out), "--jobs", "1"]) == 0
    capsys.readouterr()
    assert main(["sweep", "summarize", str(out), "--csv", str(tmp_path / "s.csv")]) == 0
    text = capsys.readouterr().out
    assert "4 rows (point x transport)" in text and "+-" in text and "rtt_ms" in text
    table = pd.read_csv(tmp_path / "s.csv")
    assert len(table) == 4 and set(table["replications"]) == {3}
    assert {"latency_ms_p95.mean", "latency_ms_p95.std", "latency_ms_p95.ci95", "latency_ms_p95.n"} <= set(table)
    assert main(["sweep", "summarize", str(tmp_path / "nothing")]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    assert main(["sweep", "summarize", str(out), "--metrics", "bogus"]) == 2
