"""Summaries of a sweep: one row per point and transport, each metric's mean, standard
deviation, Student-t 95 % confidence half-width and replication count.

With ``n`` replications of a metric ``x`` at one point, the half-width is
``t(0.975, n - 1) * s / sqrt(n)`` (``s`` the sample standard deviation with
``n - 1`` in the denominator): the interval ``mean +- half-width`` covers the
true mean 95 % of the time when the replications are independent and ``x`` is
roughly normal (replications' means and quantiles of many messages are). With
one replication the spread and the interval are unknown (NaN). Failed runs are
left out and counted in ``failed``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

#: Statistics per metric, in column order: ``<metric>.mean`` etc.
STATS = ("mean", "std", "ci95", "n")


def t_quantile(dof: int, level: float = 0.95) -> float:
    """Two-sided Student-t quantile: ``t(1 - (1 - level) / 2, dof)``."""
    from scipy.stats import t

    return float(t.ppf(1.0 - (1.0 - level) / 2.0, dof))


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean, standard deviation, confidence half-width and count of the finite *values*."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, math.nan, 1
    s = float(x.std(ddof=1))
    return float(x.mean()), s, t_quantile(n - 1, level) * s / math.sqrt(n), n


def summarize(runs: pd.DataFrame | str | Path, metrics: Sequence[str] | None = None,
              level: float = 0.95) -> pd.DataFrame:
    """One row per (point, transport): the point's parameters that vary in the sweep, then
    ``<metric>.mean``, ``.std``, ``.ci95`` (half-width at *level*) and ``.n`` for each numeric
    metric, and ``failed`` (runs that raised). *runs* is a sweep directory or its runs table."""
    from .store import Store, load_runs

    axes: list[str] = []
    if isinstance(runs, pd.DataFrame):
        table = runs
    else:
        man = Store(runs).manifest()
        axes = [a for a in man.get("axes", [])]
        table = load_runs(runs)
        if metrics is None:
            metrics = man["metrics"]
    runs = table
    if metrics is None:
        metrics = numeric_metrics(table)
    metrics = [m for m in metrics if m in table.columns and _numeric(table[m])]
    keys = ["point", "transport"]
    varying = axes or [c for c in parameter_columns(table) if table[c].nunique(dropna=False) > 1]
    rows = []
    for (point, transport), g in table.groupby(keys, sort=True):
        row: dict = {"point": point, "transport": transport}
        for c in varying:
            if c in g.columns:
                row[c] = g[c].iloc[0]
        ok = g[g["status"] == "ok"] if "status" in g.columns else g
        row["replications"] = len(ok)
        row["failed"] = len(g) - len(ok)
        for m in metrics:
            mean, sd, half, n = mean_ci(ok[m].to_numpy(dtype=float).tolist(), level)
            row.update({f"{m}.mean": mean, f"{m}.std": sd, f"{m}.ci95": half, f"{m}.n": n})
        rows.append(row)
    return pd.DataFrame(rows)


def parameter_columns(runs: pd.DataFrame) -> list[str]:
    from sim import PARAMETER_NAMES

    return [c for c in PARAMETER_NAMES if c in runs.columns and c != "seed"]


def numeric_metrics(runs: pd.DataFrame) -> list[str]:
    """Columns of *runs* that are metrics (not ids, parameters or provenance) and numeric."""
    from .store import ID_COLUMNS, META_COLUMNS

    skip = set(ID_COLUMNS) | set(META_COLUMNS) | set(parameter_columns(runs))
    return [c for c in runs.columns if c not in skip and _numeric(runs[c])]


def _numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
