"""Parameter sweeps and capacity planning (``chatlab sweep``, ``chatlab plot``, ``chatlab capacity``).

From Python::

    from chatlab.sweep import load_sweep, run_sweep, load_runs, summarize, plot_metric
    spec = load_sweep("data/sweeps/longpoll_vs_websocket.toml", overrides=["clients=200"])
    run_sweep(spec, "out/lp-vs-ws", jobs=2)
    runs = load_runs("out/lp-vs-ws")          # one tidy row per run
    table = summarize("out/lp-vs-ws")         # one row per point and transport
    fig = plot_metric("out/lp-vs-ws", x="rtt_ms", y="latency_ms_p95", hue="transport")

docs/SWEEPS.md walks through it.
"""

from .capacity import Constraint, SearchResult, parse_slo, search
from .design import Run, design_points, plan, rerun_command, run_seed
from .plot import plot_metric
from .run import SweepReport, run_sweep
from .spec import SweepSpec, load_sweep, parse_sweep
from .store import load_runs
from .summary import mean_ci, summarize, t_quantile

__all__ = [
    "Constraint", "Run", "SearchResult", "SweepReport", "SweepSpec", "design_points", "load_runs", "load_sweep",
    "mean_ci", "parse_slo", "parse_sweep", "plan", "plot_metric", "rerun_command", "run_seed", "run_sweep",
    "search", "summarize", "t_quantile",
]
