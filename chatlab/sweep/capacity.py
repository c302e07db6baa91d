"""Capacity planning: the most clients one connection server holds within a target (SLO).

Assumption (printed by ``chatlab capacity`` and stated in docs/SWEEPS.md): behind the
sticky load balancer every user stays on one connection server, and users on different
servers share nothing that the model gives a capacity limit, so servers are
independent and one server's share of the users is simulated alone. The servers
needed for ``U`` users online at the peak are ``ceil(U / capacity)``.

**One search** (one replication, one seed) looks for the largest client count ``n``
whose run meets every constraint:

1. a pilot at ``PILOT_CLIENTS`` clients with a ``PILOT_WINDOWS`` times longer window (if it
   fails, the count is divided by 4 until a run passes; if none does down to
   ``group_size``, the target is infeasible);
2. while no run has failed: predict where the constraints on quantities that grow in
   proportion to the clients (CPU utilisation, connections, bytes/s, ...) reach their
   limits, scaled from the largest passing run, and probe just below that (at most 64x
   further; 2x when no such constraint exists); once the prediction is within the
   tolerance, probe just above the passing count, which closes the bracket if it fails;
3. bisection of the bracket ``[largest passing, smallest failing]``, the split placed just
   below where the first proportional constraint to fail crosses its limit by linear
   interpolation (false position), just above the passing count when that crossing is
   within the tolerance, and at the midpoint after two moves of the same end (the Illinois
   safeguard) or when only other constraints (latencies) fail, so it never does worse than
   plain bisection. It stops when the bracket is narrower than ``tolerance`` times its
   lower end.

The capacity is the largest passing count. Every probe of one search uses the same seed
(common random numbers), so the metrics move smoothly with ``n``; replications are
independent searches with independent seeds, and the answer's confidence interval is the
Student-t interval over them.

**Steady state, quickly.** A probe measures a ``window_s`` window after a warm-up: clients
start over a ramp long enough that their connects take at most a quarter of the cores
(polling transports: two connections per client), and the window opens ``SETTLE_SHARE``
ramps (at least ``SETTLE_S``) after it. A WebSocket client connects once for the whole run in
this model, so a WebSocket probe sets ``cpu_handshake_ms = 0`` (the connect storm at the start
belongs to the warm-up and would only lengthen it; the steady state has no handshakes either
way) and ramps over one heartbeat period, so that pings are spread evenly. ``chatlab capacity
--verify`` re-runs the answer with a window six times longer and the real handshake cost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .adapter import COMPARE_METRICS, canonical_metric

#: Quantities that grow in proportion to the number of clients.
EXTENSIVE = frozenset({
    "requests_per_s", "overhead_bytes_up_per_s", "overhead_bytes_down_per_s", "payload_bytes_up_per_s",
    "payload_bytes_down_per_s", "open_connections_mean", "open_connections_peak", "held_requests_mean",
    "held_requests_peak", "server_cpu_utilization", "memory_thread_per_connection_mb", "memory_event_loop_mb",
    "messages_sent", "messages_delivered", "deliveries",
})
#: A probe's connects may take at most this share of the cores during the ramp.
CONNECT_SHARE = 0.25
#: After the last client starts, the window opens after SETTLE_S seconds or SETTLE_SHARE of the
#: ramp, whichever is longer: a ramp ends in a burst (each late client sends at once what its user
#: wrote before it started and is sent what arrived for it, on top of its connects), which
#: saturates a server loaded past half, and that backlog must drain first. Per-second CPU of
#: 60-second runs near capacity showed it drained 0.4-0.5 ramps after the ramp (docs/SWEEPS.md).
SETTLE_S = 5.0
SETTLE_SHARE = 0.6
#: The first probe: large enough that its proportional quantities are measured to a few per
#: cent, small enough to cost a second. Its window is PILOT_WINDOWS times the probes'.
PILOT_CLIENTS = 2000
PILOT_WINDOWS = 4
DEFAULT_SLO = "latency_ms_p99<=250,server_cpu_utilization<=0.7"

_OPS = {"<=": lambda v, x: v <= x, "<": lambda v, x: v < x, ">=": lambda v, x: v >= x, ">": lambda v, x: v > x}
_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    limit: float

    def ok(self, value: float | None) -> bool:
        return value is not None and math.isfinite(value) and _OPS[self.op](value, self.limit)

    def excess(self, value: float | None) -> float:
        """How far *value* is past the limit (> 0: violated), in the metric's unit."""
        if value is None or not math.isfinite(value):
            return math.inf
        return value - self.limit if self.op in ("<=", "<") else self.limit - value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.limit:g}"


def parse_slo(text: str, label: str = "--slo") -> tuple[Constraint, ...]:
    """``"latency_ms_p99<=250,server_cpu_utilization<=0.7"`` -> constraints. Metric names are
    ``chatlab compare``'s summary columns (docs/SWEEPS.md lists them)."""
    import difflib

    out = []
    parts = [p for p in text.split(",")] if isinstance(text, str) else []
    if not parts or not any(p.strip() for p in parts):
        raise UsageError(f"{label}={text}: a comma list of METRIC<=NUMBER (or <, >=, >), e.g. {DEFAULT_SLO}")
    for part in parts:
        m = _RE.match(part)
        if not m:
            raise UsageError(f"{label}={text}: '{part.strip()}' is not METRIC<=NUMBER (or <, >=, >)")
        name, op, num = m.groups()
        name = canonical_metric(name)
        if name not in COMPARE_METRICS:
            close = difflib.get_close_matches(name, COMPARE_METRICS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"{label}={text}: unknown metric {name}{hint}; known: " + ", ".join(COMPARE_METRICS))
        try:
            limit = float(num)
        except ValueError:
            limit = math.nan
        if not math.isfinite(limit):
            raise UsageError(f"{label}={text}: '{num}' in '{part.strip()}' is not a finite number")
        out.append(Constraint(name, op, limit))
    if len({c.metric for c in out}) != len(out):
        raise UsageError(f"{label}={text}: each metric at most once")
    return tuple(out)


def probe_scenario(base, transport: str, n: int, window_s: float):
    """The scenario of one probe: *n* clients on *transport*, timed for a steady-state window."""
    cores = base.server_cores
    if transport == "websocket":
        # one connect per client for the whole run: no handshake CPU in the steady state; a ramp of
        # one heartbeat period spreads the pings evenly
        handshake = 0.0
        ramp = max(base.connect_ramp_s, base.ws_heartbeat_s)
    else:
        handshake = base.cpu_handshake_ms
        ramp = max(base.connect_ramp_s, n * 2 * handshake / 1000.0 / (CONNECT_SHARE * cores))
    warmup = ramp + max(SETTLE_S, SETTLE_SHARE * ramp)
    return base.with_overrides({"clients": int(n), "transports": (transport,), "cpu_handshake_ms": handshake,
                                "connect_ramp_s": ramp, "warmup_s": warmup, "duration_s": warmup + window_s})


@dataclass
class Probe:
    clients: int
    values: dict[str, float | None]
    ok: bool
    wall_s: float


@dataclass
class SearchResult:
    """One replication's search."""

    transport: str
    seed: int
    constraints: tuple[Constraint, ...]
    probes: list[Probe] = field(default_factory=list)
    capacity: int = 0               # largest passing client count (0: infeasible)
    bracket_high: int | None = None  # smallest failing client count (None: none failed up to n_max)
    deciding: str = ""              # the constraint that failed first above the capacity

    def metrics(self) -> dict[str, Any]:
        return {"capacity_clients": float(self.capacity),
                "bracket_high_clients": float(self.bracket_high) if self.bracket_high else None,
                "probes": float(len(self.probes)), "deciding_constraint": self.deciding or None}


def search(base, transport: str, constraints: tuple[Constraint, ...], *, tolerance: float = 0.02,
           window_s: float = 5.0, n_start: int | None = None, n_max: int = 2_000_000,
           max_probes: int = 40) -> SearchResult:
    """One search on *base*'s seed (see the module docstring)."""
    import time

    from .adapter import run_compare

    res = SearchResult(transport, base.seed, constraints)
    n_min = max(2, base.group_size)
    cache: dict[int, Probe] = {}

    def probe(n: int) -> Probe:
        if n not in cache:
            t0 = time.perf_counter()
            w = window_s * (PILOT_WINDOWS if not cache else 1)
            m = run_compare(probe_scenario(base, transport, n, w), transport)
            vals = {c.metric: m.get(c.metric) for c in constraints}
            cache[n] = Probe(n, vals, all(c.ok(vals[c.metric]) for c in constraints), time.perf_counter() - t0)
            res.probes.append(cache[n])
        return cache[n]

    lo: Probe | None = None
    hi: Probe | None = None
    moves: list[str] = []
    n = max(n_min, min(n_start or PILOT_CLIENTS, n_max))
    while len(res.probes) < max_probes:
        p = probe(n)
        if p.ok and (lo is None or n > lo.clients):
            lo, moves = p, moves + ["lo"]
        elif not p.ok and (hi is None or n < hi.clients):
            hi, moves = p, moves + ["hi"]
        if lo is None:  # nothing passes yet: go down
            if n <= n_min:
                break
            n = max(n_min, n // 4)
            continue
        closing = int(lo.clients * (1 + tolerance))
        if hi is None:  # nothing fails yet: go up
            if lo.clients >= n_max:
                break
            pred = _predict(lo, constraints)
            n = closing if pred <= closing else int(min(pred * (1 - tolerance / 2), 64 * lo.clients))
            n = min(n_max, max(n, lo.clients + 1))
            continue
        if hi.clients - lo.clients <= max(1, int(tolerance * lo.clients)):
            break
        n = _split(lo, hi, constraints, tolerance, moves)
    if lo is not None:
        res.capacity = lo.clients
    if hi is not None:
        res.bracket_high = hi.clients
        res.deciding = str(deciding(hi, constraints))
    return res


def _predict(lo: Probe, constraints) -> float:
    """Where the first constraint on a quantity proportional to the clients reaches its
    limit, scaled from *lo*; twice *lo* when no constraint is of that kind."""
    guesses = []
    for c in constraints:
        v = lo.values[c.metric]
        if c.metric in EXTENSIVE and c.op in ("<=", "<") and v is not None and v > 0:
            guesses.append(lo.clients * c.limit / v)
    return min(guesses) if guesses else 2.0 * lo.clients


def _crossing(lo: Probe, hi: Probe, constraints) -> float:
    """Where the first constraint violated at *hi* crosses its limit, by linear interpolation
    between *lo* and *hi*, over the constraints on quantities proportional to the clients;
    the midpoint when only others are violated (latencies stay flat, then climb steeply, so
    a chord says little; and a latency that fails together with the CPU fails because of it)."""
    best = math.inf
    for c in constraints:
        v_hi = hi.values[c.metric]
        if c.ok(v_hi) or c.metric not in EXTENSIVE:
            continue
        e_hi, e_lo = c.excess(v_hi), min(c.excess(lo.values[c.metric]), 0.0)
        if math.isfinite(e_hi) and e_hi > e_lo:
            best = min(best, lo.clients + (-e_lo / (e_hi - e_lo)) * (hi.clients - lo.clients))
    return best if math.isfinite(best) else (lo.clients + hi.clients) / 2


def deciding(hi: Probe, constraints) -> Constraint:
    """The constraint violated at *hi* by the largest share of its limit."""
    def share(c: Constraint) -> float:
        e = c.excess(hi.values[c.metric])
        return math.inf if not math.isfinite(e) else e / max(abs(c.limit), 1e-12)
    return max((c for c in constraints if not c.ok(hi.values[c.metric])), key=share)


def _split(lo: Probe, hi: Probe, constraints, tolerance: float, moves: list[str]) -> int:
    """The next count inside the bracket: just above *lo* when the crossing is that close
    (a failure there ends the search), the midpoint after two moves of the same end, else
    just below the estimated crossing."""
    cross = _crossing(lo, hi, constraints)
    closing = lo.clients * (1 + tolerance)
    if cross <= closing:
        target = closing
    elif len(moves) >= 2 and moves[-1] == moves[-2]:
        target = (lo.clients + hi.clients) / 2  # Illinois safeguard: plain bisection
    else:
        target = cross * (1 - tolerance / 2)
    return min(max(int(target), lo.clients + 1), hi.clients - 1)
