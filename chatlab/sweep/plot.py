"""A metric against an axis, one line per value of another, with confidence bands.

Used by ``chatlab plot`` and importable in notebooks::

    from chatlab.sweep import plot_metric
    fig = plot_metric("out/rtt", x="rtt_ms", y="latency_ms_p95", hue="transport")
    fig.savefig("rtt.png")

Built on ``matplotlib.figure.Figure`` (no pyplot state), like ``chatlab/plots.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import UsageError
from ..plots import COLORS, LABELS
from .adapter import canonical_metric, metric_unit


def axis_label(name: str) -> str:
    """``rtt_ms (ms)``: the name and its unit (parameters: from the scenario's metadata)."""
    unit = unit_of(name)
    return f"{name} ({unit})" if unit and unit != name else name


def unit_of(name: str) -> str:
    """A parameter's unit from the scenario's metadata, else the metric's."""
    from sim import Scenario

    units = {r["name"]: r["unit"] for r in Scenario.parameter_table()}
    return units[name] if name in units else metric_unit(name)


def plot_metric(data: pd.DataFrame | str | Path, x: str, y: str, hue: str | None = None, col: str | None = None,
                where: Mapping[str, Any] | None = None, logx: bool = False, logy: bool = False,
                title: str | None = None) -> Figure:
    """Mean of *y* against *x*, one line per value of *hue*, one panel per value of *col*,
    with a band of +- the 95 % half-width (Student t over the replications).

    *data* is a sweep directory or its runs table (``load_runs``). Every other parameter
    that varies must be fixed with *where* (``{"clients": 1000}``), so that each point of
    a line is one point of the sweep."""
    from .store import Store, load_runs
    from .summary import summarize

    name = None
    if not isinstance(data, pd.DataFrame):
        name = Store(data).manifest().get("name")
        runs = load_runs(data)
    else:
        runs = data
    y = canonical_metric(y)
    for label, col_name in (("--x", x), ("--y", y), ("--hue", hue), ("--col", col)):
        if col_name is not None and col_name not in runs.columns:
            raise UsageError(f"{label}={col_name}: not a column of the runs table; columns: " + ", ".join(runs.columns))
    for k, v in (where or {}).items():
        if k not in runs.columns:
            raise UsageError(f"--where {k}={v}: not a column of the runs table")
        runs = runs[_matches(runs[k], v)]
        if runs.empty:
            raise UsageError(f"--where {k}={v}: no run has that value")
    summ = summarize(runs, metrics=[y])
    if f"{y}.mean" not in summ.columns:
        raise UsageError(f"--y={y}: not a numeric metric of this sweep")
    used = {x, hue, col, "transport"} | set(where or {})
    from .summary import parameter_columns

    keys = [c for c in (x, hue, col) if c is not None]
    # a parameter that varies is fine if x, hue and col determine it (e.g. zipped with x)
    varying = [c for c in parameter_columns(runs) if c not in used and runs[c].nunique(dropna=False) > 1
               and runs.groupby(keys, dropna=False)[c].nunique(dropna=False).max() > 1]
    if varying:
        c = varying[0]
        vals = ", ".join(map(str, sorted(runs[c].unique().tolist())[:6]))
        raise UsageError(f"{c} varies in this sweep ({vals}) but is not --x, --hue or --col; fix it with "
                         f"--where {c}=VALUE")
    if hue is None and runs["transport"].nunique() > 1 and "transport" not in (x, col):
        hue = "transport"
    summ = summ.merge(runs.drop_duplicates("point")[["point"] + [c for c in (x, hue, col) if c and c not in
                                                                  ("transport",) and c not in summ.columns]],
                      on="point", how="left")
    summ[f"{y}.low"] = summ[f"{y}.mean"] - summ[f"{y}.ci95"]
    summ[f"{y}.high"] = summ[f"{y}.mean"] + summ[f"{y}.ci95"]

    panels = [None] if col is None else sorted(summ[col].unique().tolist(), key=_sort_key)
    fig = Figure(figsize=(4.6 * len(panels) + 1.6, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    categorical = not pd.api.types.is_numeric_dtype(summ[x]) or pd.api.types.is_bool_dtype(summ[x])
    cats = sorted(summ[x].unique().tolist(), key=_sort_key) if categorical else None
    n_reps = int(summ[f"{y}.n"].max()) if len(summ) else 0
    gaps = False
    for ax, panel in zip(axes, panels):
        part = summ if panel is None else summ[summ[col] == panel]
        groups = [(None, part)] if hue is None else sorted(part.groupby(hue), key=lambda g: _sort_key(g[0]))
        for key, g in groups:
            if cats is not None:
                order = cats
                g = g.sort_values(x, key=lambda s: s.map(order.index))
                xs = np.array([order.index(v) for v in g[x]])
            else:
                g = g.sort_values(x)
                xs = g[x].to_numpy(dtype=float)
            mean = g[f"{y}.mean"].to_numpy(dtype=float)
            low, high = g[f"{y}.low"].to_numpy(dtype=float), g[f"{y}.high"].to_numpy(dtype=float)
            line_label = None if key is None else (LABELS.get(str(key), str(key)) if hue == "transport" else str(key))
            color = COLORS.get(str(key)) if hue == "transport" else None
            line, = ax.plot(xs, mean, marker="o", ms=4, lw=1.6, label=line_label, color=color)
            if np.isfinite(low).any():
                ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, lw=0)
            missing = ~np.isfinite(mean)
            if missing.any():  # e.g. "never" reconnected: mark it at the top edge rather than leave a gap
                ax.plot(xs[missing], np.ones(missing.sum()), ls="none", marker="x", ms=8, mew=2,
                        color=line.get_color(), transform=ax.get_xaxis_transform(), clip_on=False)
                gaps = True
        if cats is not None:
            ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=20)
        if logx and not categorical:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis, summ[x].to_numpy(dtype=float))
        if logy:
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis, summ[[f"{y}.low", f"{y}.high", f"{y}.mean"]].to_numpy(dtype=float))
        ax.set_xlabel(axis_label(x))
        ax.grid(True, which="both", alpha=0.3)
        if panel is not None and col is not None:
            unit = unit_of(col)
            ax.set_title(f"{col} = {panel:g}" if isinstance(panel, float) else f"{col} = {panel}", fontsize=10)
            if unit and unit != col:
                ax.set_title(ax.get_title() + f" {unit}", fontsize=10)
    axes[0].set_ylabel(axis_label(y))
    if hue is not None:
        axes[-1].legend(title=hue if hue != "transport" else None, fontsize=8)
    band = f"mean and 95 % CI over {n_reps} replications" if n_reps > 1 else "one replication (no interval)"
    if gaps:
        band += "; x at the top: no value in any replication (e.g. never)"
    fixed = ", ".join(f"{k}={v}" for k, v in (where or {}).items())
    fig.suptitle(title or f"{name or 'sweep'}: {y} vs {x}" + (f" ({fixed})" if fixed else "") + f"\n{band}",
                 fontsize=11)
    return fig


def save(fig: Figure, base: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write *fig* as ``base.<fmt>`` for each format."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = base.with_suffix("." + fmt)
        fig.savefig(p, dpi=110)
        paths.append(p)
    return paths


def _plain_log_ticks(axis, values: np.ndarray) -> None:
    """Log axes labelled 20, 50, 100 rather than 2 x 10^1 ..."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    v = values[np.isfinite(values) & (values > 0)]
    axis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}"))
    if v.size and np.log10(v.max() / v.min()) < 1.5:
        axis.set_minor_formatter(FuncFormatter(lambda t, _: f"{t:g}" if f"{t:g}"[0] in "25" else ""))
    else:
        axis.set_minor_formatter(NullFormatter())


def _matches(col: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, str) and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        try:
            return np.isclose(col.to_numpy(dtype=float), float(value), rtol=1e-9, atol=0)
        except ValueError:
            return pd.Series(False, index=col.index)
    if isinstance(value, str) and pd.api.types.is_bool_dtype(col):
        return col == (value.lower() in ("true", "1", "yes", "on"))
    return col.astype(str) == str(value) if isinstance(value, str) else col == value


def _sort_key(v: Any):
    return (0, v, "") if isinstance(v, (int, float, np.integer, np.floating)) else (1, 0, str(v))
