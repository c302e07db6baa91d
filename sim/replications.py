"""Independent replications and confidence intervals.

One run is one sample. :func:`replication_seeds` derives N independent seeds
from a scenario's seed (``SeedSequence(seed).generate_state``), and
:func:`confidence_table` turns the per-replication summaries into a mean and a
Student-t confidence half-width per metric and transport (Ciw's "simulation
practice": warm-up, replications, confidence intervals).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from .params import Scenario

# Two-sided Student t quantiles for 95 % confidence, by degrees of freedom (1..30), then normal.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(dof: int) -> float:
    return _T95[dof - 1] if 1 <= dof <= len(_T95) else 1.96


def replication_seeds(seed: int, n: int) -> list[int]:
    """*n* independent seeds derived from *seed* (the first replication uses *seed* itself)."""
    extra = np.random.SeedSequence(seed).generate_state(max(n - 1, 0), dtype=np.uint32).tolist()
    return [seed, *extra][:n]


def replicate_scenarios(scenario: Scenario, n: int) -> list[Scenario]:
    return [dataclasses.replace(scenario, seed=int(s)) for s in replication_seeds(scenario.seed, n)]


def confidence_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95 % half-width and n per (transport, metric) from one summary row per
    (replication, transport) (numeric columns only)."""
    numeric = summaries.select_dtypes("number").columns.drop(["seed"], errors="ignore")
    rows = []
    for transport, g in summaries.groupby("transport", sort=False):
        n = len(g)
        for col in numeric:
            x = g[col].dropna().to_numpy(dtype=float)
            if x.size == 0:
                continue
            half = t95(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else math.nan
            rows.append({"transport": transport, "metric": col, "mean": float(x.mean()), "ci95_half_width": half,
                         "n": n})
    return pd.DataFrame(rows)
