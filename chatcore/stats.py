"""Statistics both halves compute the same way: latency summaries and the
time-average and peak of a count of open intervals (connections, held requests).

The simulation (``sim.results``) and the load generator
(``reference_server.loadgen``) both use these, so a simulated and a measured
"p95" or "open connections mean" are the same computation.
"""

from __future__ import annotations

import math

import numpy as np

LATENCY_KEYS = ("mean", "p50", "p95", "p99", "max")


def step_profile(starts: np.ndarray, ends: np.ndarray, t0: float, t1: float,
                 edges: np.ndarray | None = None) -> tuple[float, int, np.ndarray | None]:
    """Time-average and peak of the number of open intervals ``[start, end)`` over
    ``[t0, t1]``, and its average in each bin between consecutive *edges*."""
    starts = np.asarray(starts, dtype=float)
    ends = np.asarray(ends, dtype=float)
    times = np.concatenate([starts, ends])
    deltas = np.concatenate([np.ones(starts.size, dtype=np.int64), -np.ones(ends.size, dtype=np.int64)])
    order = np.lexsort((deltas, times))  # at a tie, a close counts before an open
    times, level = times[order], np.cumsum(deltas[order])
    # integral F(t) = area under the step function up to t
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))]) if times.size else np.zeros(0)

    def F(t: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=float))
        if times.size == 0:
            return np.zeros_like(t)
        k = np.searchsorted(times, t, side="right") - 1
        before = k < 0
        kk = np.clip(k, 0, None)
        out: np.ndarray = area[kk] + level[kk] * (t - times[kk])
        out[before] = 0.0
        return out

    span = t1 - t0
    mean = float((F(np.array([t1])) - F(np.array([t0])))[0] / span) if span > 0 else 0.0
    if times.size:
        in_win = (times >= t0) & (times <= t1)
        k0 = np.searchsorted(times, t0, side="right") - 1
        at_start = int(level[k0]) if k0 >= 0 else 0
        peak = max(at_start, int(level[in_win].max()) if in_win.any() else 0)
    else:
        peak = 0
    per_bin = None
    if edges is not None:
        fe = F(edges)
        per_bin = np.diff(fe) / np.diff(edges)
    return mean, peak, per_bin


def latency_stats(ms: np.ndarray) -> dict[str, float | None]:
    """Mean, median, p95, p99 and max of *ms* (None for each when empty)."""
    if ms.size == 0:
        return {k: None for k in LATENCY_KEYS}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(ms.max())}


def quantile_ci(values: np.ndarray, q: float, conf: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval for the *q* quantile of the population
    *values* were drawn from: the order statistics ``x(j) <= x(k)`` with
    ``P(j <= B < k) >= conf`` for ``B ~ Binomial(n, q)`` (Conover, *Practical
    Nonparametric Statistics*, 3rd ed., sec. 3.2). None when *values* are too few for
    that coverage. Assumes independent draws: latencies of one run are mildly dependent,
    so read the interval as a lower bound on the sampling uncertainty."""
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0 or not 0.0 < q < 1.0:
        return None
    i = np.arange(n + 1)
    lg = np.vectorize(math.lgamma, otypes=[float])
    log_pmf = lg(n + 1.0) - lg(i + 1.0) - lg(n - i + 1.0) + i * math.log(q) + (n - i) * math.log1p(-q)
    cdf = np.cumsum(np.exp(log_pmf))  # cdf[m] = P(B <= m)
    alpha = 1.0 - conf
    # x(j) (1-based) with P(B <= j-1) <= alpha/2, as high as possible; x(k) with P(B <= k-1) >= 1 - alpha/2
    below = np.flatnonzero(cdf <= alpha / 2)
    above = np.flatnonzero(cdf >= 1.0 - alpha / 2)
    if below.size == 0 or above.size == 0:
        return None
    j = int(below[-1]) + 1
    k = int(above[0]) + 1
    if k > n:
        return None
    return float(x[j - 1]), float(x[k - 1])


def traffic_summary(*, requests_up: float, overhead_up: float, payload_up: float, overhead_down: float,
                    payload_down: float, window_s: float, messages_sent: int, poll_responses: int,
                    empty_responses: int) -> dict[str, float | None]:
    """The traffic part of a run's summary, under the names the simulation's ``--json`` and the
    load generator share: rates per second of the window, empty poll ratio, bytes per message."""
    total = overhead_up + payload_up + overhead_down + payload_down
    return {
        "requests_per_s": requests_up / window_s,
        "empty_response_ratio": (empty_responses / poll_responses) if poll_responses else 0.0,
        "overhead_bytes_up_per_s": overhead_up / window_s,
        "overhead_bytes_down_per_s": overhead_down / window_s,
        "payload_bytes_up_per_s": payload_up / window_s,
        "payload_bytes_down_per_s": payload_down / window_s,
        "bytes_per_message": total / messages_sent if messages_sent else None,
    }
