"""Sweep files: parsing and validation.

A sweep file is TOML (``docs/SWEEPS.md`` has the full reference)::

    name = "longpoll-vs-websocket"
    kind = "compare"                 # compare | crash | capacity | validate
    seed = 7                         # every run's seed derives from it
    replications = 5
    metrics = ["latency_ms_p95"]     # default: every summary column
    scenario = "base.toml"           # optional base scenario file (relative to this file)

    [base]                           # parameters applied to the base scenario
    clients = 200

    [grid]                           # a full grid over any parameters
    rtt_ms = [25, 50, 100, 200]
    msg_rate_per_min = {start = 0.5, stop = 8, num = 5, scale = "log"}

    [[zip]]                          # axes that move together (one axis of the grid)
    poll_interval_s = [1, 2, 4]
    long_poll_timeout_s = [15, 30, 60]

    [sample]                         # random or Latin-hypercube points, crossed with the grid
    method = "lhs"
    count = 16
    bounds = {rtt_ms = [10, 1000]}
    log = ["rtt_ms"]

``kind = "validate"`` is the grid of ``chatlab validate --grid`` (the real server against
the model at each point; its options in a ``[validate]`` table); ``chatlab sweep`` refuses it.

Everything is checked before anything runs, including every point's scenario;
a problem is one :class:`~chatlab.errors.UsageError` line naming the file, the
key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError, read_text
from .adapter import KINDS, TEXT_METRICS, canonical_metric, metric_names

_TOP_KEYS = ("name", "description", "kind", "seed", "replications", "common_random_numbers", "metrics",
             "policies", "slo", "tolerance", "window_s", "scenario", "base", "grid", "zip", "sample",
             "validate")
#: Kinds of sweep file: the model's run kinds, and ``validate`` (``chatlab validate --grid``).
SPEC_KINDS: tuple[str, ...] = (*KINDS, "validate")
_VALIDATE_KEYS = ("levels", "crash", "crash_clients", "max_clients")
_SAMPLE_KEYS = ("method", "count", "bounds", "log")
_MAX_RUNS = 1_000_000


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: one parameter, or several zipped (moving together).
    ``values[i]`` holds one value per name."""

    names: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Sample:
    """Random (``random``) or Latin-hypercube (``lhs``) points inside *bounds*."""

    method: str
    count: int
    bounds: tuple[tuple[str, float, float], ...]
    log: frozenset[str]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: what to run, over which points, how often, what to keep."""

    name: str
    kind: str
    seed: int
    replications: int
    base: Any  # sim.Scenario
    axes: tuple[Axis, ...] = ()
    sample: Sample | None = None
    metrics: tuple[str, ...] = ()
    common_random_numbers: bool = True
    slo: str = ""
    tolerance: float = 0.02
    window_s: float = 5.0
    description: str = ""
    source: str = ""
    #: kind = "validate": levels, crash, crash_clients, max_clients (:func:`_validate_options`)
    validate: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def axis_names(self) -> tuple[str, ...]:
        names = [n for a in self.axes for n in a.names]
        if self.sample:
            names += [b[0] for b in self.sample.bounds]
        return tuple(names)

    def run_options(self) -> dict[str, Any]:
        """Keyword options the run kind needs besides scenario, transport and policy."""
        if self.kind == "capacity":
            return {"slo": self.slo, "tolerance": self.tolerance, "window_s": self.window_s}
        return {}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["base"] = self.base.to_dict()
        d["axes"] = [{"names": list(a.names), "values": [list(v) for v in a.values]} for a in self.axes]
        if self.sample:
            d["sample"] = {"method": self.sample.method, "count": self.sample.count,
                           "bounds": {n: [lo, hi] for n, lo, hi in self.sample.bounds},
                           "log": sorted(self.sample.log)}
        d["metrics"] = list(self.metrics)
        return d


def load_sweep(path: str | Path, overrides: Sequence[str] = (), replications: int | None = None,
               start: Any = None) -> SweepSpec:
    """Read and validate a sweep file; *overrides* (``NAME=VALUE``, as ``--set``) change the
    base scenario and *replications* replaces the file's count. *start* (a ``sim.Scenario``)
    is what the file's scenario and ``[base]`` apply to (default ``Scenario()``)."""
    path = Path(path)
    text = read_text(path, str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    return parse_sweep(data, path, overrides, replications, start)


def parse_sweep(data: dict[str, Any], path: Path, overrides: Sequence[str] = (),
                replications: int | None = None, start: Any = None) -> SweepSpec:
    """Validate the parsed TOML *data* of the sweep file at *path*."""
    from sim import ParameterError, Scenario, parse_assignment

    where = str(path)

    def bad(key: str, value: Any, allowed: str) -> UsageError:
        return UsageError(f"{where}: {key}={_show(value)}: {allowed}")

    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise bad(unknown[0], data[unknown[0]], "unknown key; allowed: " + ", ".join(_TOP_KEYS))
    kind = data.get("kind", "compare")
    if kind not in SPEC_KINDS:
        raise bad("kind", kind, "one of " + ", ".join(SPEC_KINDS))
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise bad("name", name, "a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise bad("description", description, "a string")
    seed = data.get("seed", 1)
    if not _is_int(seed) or seed < 0:
        raise bad("seed", seed, "an integer >= 0")
    reps = data.get("replications", 1) if replications is None else replications
    if not _is_int(reps) or not 1 <= reps <= 10_000:
        raise bad("replications", reps, "an integer from 1 to 10000")
    crn = data.get("common_random_numbers", True)
    if not isinstance(crn, bool):
        raise bad("common_random_numbers", crn, "true or false")

    # --- kind-specific keys -----------------------------------------------------------------
    for key, only in (("policies", "crash"), ("slo", "capacity"), ("tolerance", "capacity"),
                      ("window_s", "capacity"), ("validate", "validate")):
        if key in data and kind != only:
            raise bad(key, data[key], f"only for kind = \"{only}\"")
    slo = data.get("slo", "")
    if kind == "capacity":
        from .capacity import parse_slo

        if not isinstance(slo, str) or not slo.strip():
            raise bad("slo", slo, 'a constraint list such as "latency_ms_p99<=250,server_cpu_utilization<=0.7"')
        try:
            parse_slo(slo)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    tolerance = data.get("tolerance", 0.02)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0.001 <= tolerance <= 0.5:
        raise bad("tolerance", tolerance, "a number from 0.001 to 0.5 (relative width of the final bracket)")
    window_s = data.get("window_s", 5.0)
    if not isinstance(window_s, (int, float)) or isinstance(window_s, bool) or not 1 <= window_s <= 3600:
        raise bad("window_s", window_s, "a number of seconds from 1 to 3600")

    validate: dict[str, Any] = {}
    if kind == "validate":
        validate = _validate_options(data.get("validate", {}), bad)
        for key, what in (("metrics", "every validation row is kept"), ("sample", "grid and zip points only")):
            if key in data:
                raise bad(key, data[key], f"not for kind = \"validate\" ({what})")
    known = metric_names(kind) if kind != "validate" else ("-",)
    metrics = data.get("metrics", list(known))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise bad("metrics", metrics, "a non-empty list of metric names")
    metrics = [canonical_metric(m) for m in metrics]
    for m in metrics:
        if m not in known:
            raise bad("metrics", m, f"unknown {kind} metric{_did_you_mean(m, known)}; known: " + ", ".join(known))
    if len(set(metrics)) != len(metrics):
        raise bad("metrics", metrics, "each metric at most once")

    # --- base scenario ----------------------------------------------------------------------
    sc = Scenario() if start is None else start
    if "scenario" in data:
        file = data["scenario"]
        if not isinstance(file, str):
            raise bad("scenario", file, "a path to a scenario file (relative to the sweep file)")
        spath = (path.parent / file) if not Path(file).is_absolute() else Path(file)
        try:
            stext = spath.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise bad("scenario", file, f"a readable UTF-8 scenario file ({getattr(exc, 'strerror', None) or exc})")
        try:
            sc = Scenario.from_toml(stext, sc)
        except ParameterError as exc:
            raise UsageError(f"{where}: scenario file {file}: {exc}") from None
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise bad("base", base, "a table of parameter = value")
    if "seed" in base:
        raise bad("base.seed", base["seed"], "not allowed: set the sweep's top-level seed (each run's seed "
                  "derives from it)")
    try:
        sc = sc.with_overrides(base)
    except ParameterError as exc:
        raise UsageError(f"{where}: base: {exc}") from None
    axes = _axes(data, sc, bad, where)
    sample = _sample(data.get("sample"), sc, bad)
    axis_names = [n for a in axes for n in a.names] + ([b[0] for b in sample.bounds] if sample else [])
    dupes = sorted({n for n in axis_names if axis_names.count(n) > 1})
    if dupes:
        raise bad("axes", dupes[0], "each parameter on one axis only (grid, zip and sample together)")
    if kind == "crash":
        policies = data.get("policies")
        if policies is not None:
            from chatcore.backoff import POLICIES

            if (not isinstance(policies, list) or not policies or len(set(policies)) != len(policies)
                    or any(p not in POLICIES for p in policies)):
                raise bad("policies", policies, "a list of distinct names from " + ", ".join(POLICIES))
            if "reconnect_policy" in axis_names:
                raise bad("policies", policies, "give the policies either here or as a reconnect_policy axis")
            axes = [*axes, Axis(("reconnect_policy",), tuple((p,) for p in policies))]
    if kind == "capacity" and ("clients" in axis_names or "clients" in dict(parse_assignment(o) for o in overrides)):
        raise bad("clients", "(axis or --set)", "not for kind = \"capacity\": the search chooses clients")

    # --- --set overrides: the base scenario only ---------------------------------------------
    pairs: dict[str, str] = {}
    try:
        for text in overrides:
            k, v = parse_assignment(text)
            if k == "seed":
                raise UsageError(f"--set {text}: the sweep's seed is the file's top-level seed; each run's seed "
                                 "derives from it")
            if k in axis_names:
                raise UsageError(f"--set {text}: {k} is an axis of this sweep; --set changes only the base scenario")
            pairs[k] = v
        sc = sc.with_overrides(pairs)
    except ParameterError as exc:
        raise UsageError(str(exc)) from None

    spec = SweepSpec(name=name.strip(), kind=kind, seed=int(seed), replications=int(reps), base=sc,
                     axes=tuple(axes), sample=sample, metrics=tuple(metrics) if kind != "validate" else (), common_random_numbers=crn,
                     slo=slo if kind == "capacity" else "", tolerance=float(tolerance), window_s=float(window_s),
                     description=description, source=where, validate=validate)
    from .design import design_points, point_scenario

    points = design_points(spec)
    n_runs = len(points) * spec.replications * len(sc.transports)
    if n_runs > _MAX_RUNS:
        raise UsageError(f"{where}: {n_runs:,} runs: at most {_MAX_RUNS:,} per sweep (fewer points or replications)")
    for i, values in enumerate(points):  # every point's scenario is valid, before any run starts
        try:
            point_scenario(spec, values)
        except ParameterError as exc:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
            raise UsageError(f"{where}: point {i} ({shown}): {exc}") from None
    return spec


def _validate_options(opts: Any, bad) -> dict[str, Any]:
    """The ``[validate]`` table: ``levels`` (light, medium, high: the simulated server CPU
    ``chatlab validate`` sizes clients for), ``crash`` (a crash run per transport at the base
    point), ``crash_clients`` and ``max_clients``."""
    from ..validation import LEVELS

    if not isinstance(opts, dict):
        raise bad("validate", opts, "a table with " + ", ".join(_VALIDATE_KEYS))
    extra = sorted(set(opts) - set(_VALIDATE_KEYS))
    if extra:
        raise bad(f"validate.{extra[0]}", opts[extra[0]], "unknown key; allowed: " + ", ".join(_VALIDATE_KEYS))
    levels = opts.get("levels", ["medium"])
    if (not isinstance(levels, list) or not levels or len(set(map(str, levels))) != len(levels)
            or any(x not in LEVELS for x in levels)):
        raise bad("validate.levels", levels, "a list of distinct names from " + ", ".join(LEVELS))
    crash = opts.get("crash", True)
    if not isinstance(crash, bool):
        raise bad("validate.crash", crash, "true or false")
    out: dict[str, Any] = {"levels": tuple(levels), "crash": crash}
    for key, default, lo, hi in (("crash_clients", 100, 2, 2000), ("max_clients", 300, 2, 2000)):
        n = opts.get(key, default)
        if not _is_int(n) or not lo <= n <= hi:
            raise bad(f"validate.{key}", n, f"an integer from {lo} to {hi}")
        out[key] = n
    return out


def _axes(data: dict[str, Any], base, bad, where: str) -> list[Axis]:
    from sim import PARAMETER_NAMES, ParameterError

    axes: list[Axis] = []

    def check_values(label: str, name: str, values: list[Any], distinct: bool = True) -> tuple[Any, ...]:
        if name not in PARAMETER_NAMES:
            raise bad(label, name, f"unknown parameter{_did_you_mean(name, PARAMETER_NAMES)}")
        if name == "seed":
            raise bad(label, name, "not an axis: replications give seeds (see docs/SWEEPS.md)")
        if not values:
            raise bad(label, values, "a non-empty list of values")
        out = []
        for i, v in enumerate(values):
            try:
                typed = base.with_overrides({name: v})
            except ParameterError as exc:
                try:  # wrong only next to the base's partner (warmup_s vs duration_s ...)? the point check decides
                    typed = _slack().with_overrides({name: v})
                except ParameterError:
                    raise UsageError(f"{where}: {label}[{i}]: {exc}") from None
            out.append(getattr(typed, name))
        if distinct and len(set(map(_key, out))) != len(out):
            raise bad(label, values, "distinct values")
        return tuple(out)

    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise bad("grid", grid, "a table of parameter = [values] or {start, stop, num, scale}")
    for name, spec in grid.items():
        values = _expand(f"grid.{name}", spec, base, name, bad)
        axes.append(Axis((name,), tuple((v,) for v in check_values(f"grid.{name}", name, values))))
    zips = data.get("zip", [])
    if isinstance(zips, dict):
        zips = [zips]
    if not isinstance(zips, list):
        raise bad("zip", zips, "tables of parameter = [values] with equal lengths ([[zip]])")
    for j, group in enumerate(zips):
        if not isinstance(group, dict) or not group:
            raise bad(f"zip[{j}]", group, "a table of parameter = [values] with equal lengths")
        # A column may repeat a value (one factor at a time: the others stay at the base);
        # the rows, the points, must differ.
        cols = {n: check_values(f"zip[{j}].{n}", n, _expand(f"zip[{j}].{n}", v, base, n, bad),
                                distinct=len(group) == 1)
                for n, v in group.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            raise bad(f"zip[{j}]", {n: len(v) for n, v in cols.items()}, "lists of equal length")
        rows = list(zip(*cols.values()))
        if len({tuple(map(_key, r)) for r in rows}) != len(rows):
            raise bad(f"zip[{j}]", group, "distinct rows (each point once)")
        axes.append(Axis(tuple(cols), tuple(zip(*cols.values()))))
    return axes


def _slack():
    """A scenario whose limits between parameters are far away, to check one value alone."""
    from sim import Scenario

    return Scenario().with_overrides({"duration_s": 1e5, "warmup_s": 0.0, "clients": 10**7, "group_size": 2,
                                      "servers": 10**6, "crashed_servers": 1})


def _expand(label: str, spec: Any, base, name: str, bad) -> list[Any]:
    """A list as given, or ``{start, stop, num, scale}`` as evenly (or log-evenly) spaced values
    including both ends; integer parameters are rounded."""
    import numpy as np

    if isinstance(spec, list):
        return spec
    if not isinstance(spec, dict):
        raise bad(label, spec, "a list of values or {start, stop, num, scale}")
    extra = sorted(set(spec) - {"start", "stop", "num", "scale"})
    if extra or not {"start", "stop", "num"} <= set(spec):
        raise bad(label, spec, "a table with start, stop, num and optional scale (linear or log)")
    start, stop, num, scale = spec["start"], spec["stop"], spec["num"], spec.get("scale", "linear")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (start, stop)):
        raise bad(label, spec, "start and stop must be finite numbers")
    if not _is_int(num) or not 1 <= num <= 10_000:
        raise bad(f"{label}.num", num, "an integer from 1 to 10000")
    if scale not in ("linear", "log"):
        raise bad(f"{label}.scale", scale, "linear or log")
    if scale == "log" and (start <= 0 or stop <= 0):
        raise bad(label, spec, "start and stop > 0 for scale = log")
    xs = np.geomspace(start, stop, num) if scale == "log" else np.linspace(start, stop, num)
    if isinstance(getattr(base, name, None), int) and not isinstance(getattr(base, name), bool):
        return [int(round(x)) for x in xs]
    return [float(f"{x:.12g}") for x in xs]  # 20, not 20.000000000000004: readable, and exact in --set


def _sample(spec: Any, base, bad) -> Sample | None:
    from sim import PARAMETER_NAMES

    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise bad("sample", spec, "a table with method, count, bounds and optional log")
    extra = sorted(set(spec) - set(_SAMPLE_KEYS))
    if extra:
        raise bad(f"sample.{extra[0]}", spec[extra[0]], "unknown key; allowed: " + ", ".join(_SAMPLE_KEYS))
    method = spec.get("method", "lhs")
    if method not in ("random", "lhs"):
        raise bad("sample.method", method, "random or lhs (Latin hypercube)")
    count = spec.get("count")
    if not isinstance(count, int) or not _is_int(count) or not 1 <= count <= 100_000:
        raise bad("sample.count", count, "an integer from 1 to 100000")
    bounds = spec.get("bounds")
    if not isinstance(bounds, dict) or not bounds:
        raise bad("sample.bounds", bounds, "a table of parameter = [low, high]")
    log = spec.get("log", [])
    if not isinstance(log, list) or any(n not in bounds for n in log):
        raise bad("sample.log", log, "a list of names from sample.bounds")
    out = []
    for name, b in bounds.items():
        if name not in PARAMETER_NAMES:
            raise bad(f"sample.bounds.{name}", b, f"unknown parameter{_did_you_mean(name, PARAMETER_NAMES)}")
        current = getattr(base, name)
        if isinstance(current, bool) or not isinstance(current, (int, float)) or name == "seed":
            raise bad(f"sample.bounds.{name}", b, "a numeric parameter (not seed)")
        if (not isinstance(b, list) or len(b) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in b)
                or not b[0] < b[1]):
            raise bad(f"sample.bounds.{name}", b, "[low, high] with finite numbers, low < high")
        if name in log and b[0] <= 0:
            raise bad(f"sample.bounds.{name}", b, "low > 0 on a log scale")
        out.append((name, float(b[0]), float(b[1])))
    return Sample(method, int(count), tuple(out), frozenset(log))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _key(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return repr(v) if isinstance(v, (list, dict, tuple)) else str(v)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


__all__ = ["SPEC_KINDS", "Axis", "Sample", "SweepSpec", "TEXT_METRICS", "load_sweep", "parse_sweep"]
