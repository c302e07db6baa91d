"""Points, seeds and the list of runs of a sweep.

* **Points.** The grid's axes (a zipped group counts as one axis) are crossed with
  each other and with the sampled points, if any: ``points = grid x sample``.
  Point ``i`` is the ``i``-th combination in that order (the first axis varies
  slowest), so a point's id depends only on the sweep file.
* **Runs.** Each point runs on every transport of its scenario, ``replications``
  times: a run is ``(point, transport, replication)``. Runs are listed replication
  by replication, so an interrupted sweep holds whole replications first.
* **Seeds.** Run seeds come from ``numpy.random.SeedSequence``; see :func:`run_seed`
  and docs/SWEEPS.md for why the seed depends on the replication and not the point.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import SweepSpec

#: Run seeds are 63-bit so that they fit Parquet's signed 64-bit integers.
_SEED_BITS = 63


def run_seed(sweep_seed: int, replication: int, point: int | None = None) -> int:
    """The seed of replication *replication* (and, without common random numbers, of point *point*).

    It is the first 63 bits of the state of ``SeedSequence(sweep_seed, spawn_key=(replication,))``,
    which is the *replication*-th child of ``SeedSequence(sweep_seed).spawn(...)``; with *point*
    the spawn key is ``(replication, point)``. Children of one SeedSequence are independent
    streams, so replications are independent; every point of a replication shares its seed
    (common random numbers) unless *point* is given. A run re-run alone with
    ``--set seed=<this>`` draws exactly the same numbers.
    """
    key = (int(replication),) if point is None else (int(replication), int(point))
    state = np.random.SeedSequence(int(sweep_seed), spawn_key=key).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> (64 - _SEED_BITS)


def design_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every point's axis values, in point order."""
    combos: list[dict[str, Any]] = [{}]
    for ax in spec.axes:
        combos = [{**c, **dict(zip(ax.names, vals))} for c in combos for vals in ax.values]
    if spec.sample is None:
        return combos
    sampled = sample_points(spec)
    return [{**c, **s} for c in combos for s in sampled]


def sample_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The sampled points: ``random`` draws each coordinate uniformly (on a log scale for the
    ``log`` names); ``lhs`` is a Latin hypercube (``scipy.stats.qmc.LatinHypercube``), one point in
    each of ``count`` equal slices of every coordinate. Drawn from ``SeedSequence(sweep seed)``
    itself, a stream separate from every replication's. Integer parameters are rounded."""
    from sim import Scenario

    s = spec.sample
    assert s is not None
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed))
    d = len(s.bounds)
    if s.method == "lhs":
        from scipy.stats import qmc

        u = qmc.LatinHypercube(d=d, rng=rng).random(s.count)
    else:
        u = rng.random((s.count, d))
    default = Scenario()
    out = []
    for row in u:
        point = {}
        for (name, lo, hi), x in zip(s.bounds, row):
            if name in s.log:
                v = math.exp(math.log(lo) + x * (math.log(hi) - math.log(lo)))
            else:
                v = lo + x * (hi - lo)
            point[name] = int(round(v)) if isinstance(getattr(default, name), int) else float(v)
        out.append(point)
    return out


def point_scenario(spec: SweepSpec, values: dict[str, Any]):
    """The base scenario with a point's axis values (validated; raises ParameterError)."""
    return spec.base.with_overrides(values) if values else spec.base


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its identity, its seed and its scenario (seed included)."""

    run_id: str
    point: int
    replication: int
    seed: int
    transport: str
    scenario: Any  # sim.Scenario
    values: dict[str, Any]  # the point's axis values

    def task(self, kind: str, options: dict[str, Any]) -> tuple:
        """What a worker needs: ``(run_id, kind, scenario, transport, policy, options)``."""
        policy = self.scenario.reconnect_policy if kind == "crash" else None
        return (self.run_id, kind, self.scenario, self.transport, policy, options)


def run_id(kind: str, scenario, transport: str, options: dict[str, Any], metrics: tuple[str, ...]) -> str:
    """A stable id for a run: a hash of everything that decides its row (kind, every parameter
    including the seed, transport, options and the metrics kept)."""
    blob = json.dumps({"kind": kind, "scenario": scenario.to_dict(), "transport": transport,
                       "options": options, "metrics": list(metrics)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(spec: SweepSpec) -> list[Run]:
    """Every run of the sweep, replication by replication, then point, then transport."""
    import dataclasses

    points = design_points(spec)
    scenarios = [point_scenario(spec, v) for v in points]
    options = spec.run_options()
    runs = []
    for rep, (i, sc) in itertools.product(range(spec.replications), enumerate(scenarios)):
        seed = run_seed(spec.seed, rep, None if spec.common_random_numbers else i)
        sc_r = dataclasses.replace(sc, seed=seed)
        for t in sc.transports:
            runs.append(Run(run_id(spec.kind, sc_r, t, options, spec.metrics), i, rep, seed, t, sc_r, points[i]))
    return runs


def rerun_command(kind: str, row: dict[str, Any], base=None) -> list[str]:
    """The ``chatlab`` command line that re-runs one row alone: every parameter that differs
    from the defaults (or from *base*) as ``--set``, the run's transport and its seed."""
    from sim import PARAMETER_NAMES, Scenario

    ref = (base or Scenario()).to_dict()
    cmd = ["chatlab", "crash" if kind == "crash" else "compare"]
    for name in PARAMETER_NAMES:
        if name in ("transports", "seed"):
            continue
        v = row[name]
        if hasattr(v, "item"):
            v = v.item()
        if _text(v) != _text(ref[name]):
            cmd += ["--set", f"{name}={_text(v)}"]
    cmd += ["--set", f"transports={row['transport']}", "--set", f"seed={int(row['seed'])}"]
    if kind == "crash":
        cmd += ["--policies", str(row["reconnect_policy"])]
    return cmd


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    if isinstance(v, float):
        return "inf" if math.isinf(v) else repr(v)
    return str(v)
