"""The tables both halves build from their counts, defined once so that a simulated and a
measured run are reported the same way: the per-class traffic table and its counter
indices, the "fully delivered" count, the delivery outcomes of a fault run (lost, held,
unacknowledged), JSON cleaning and number formatting.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

#: Indices into one class's counter list. The proxy measures the first six (traffic); the
#: simulation also counts CPU.
UP, DOWN, OVH_UP, PAY_UP, OVH_DOWN, PAY_DOWN, CPU_N, CPU_BUSY, CPU_WAIT = range(9)
TRAFFIC_COUNTERS = 6
ALL_COUNTERS = 9

_TRAFFIC_COLUMNS = ["transport", "class", "messages_up", "messages_down", "overhead_bytes_up", "payload_bytes_up",
                    "overhead_bytes_down", "payload_bytes_down", "up_per_s", "bytes_per_s"]
_CPU_COLUMNS = ["cpu_ops", "cpu_busy_s", "cpu_wait_ms_mean"]


def class_columns(cpu: bool) -> list[str]:
    """Columns of the ``classes`` table (with the CPU columns for a simulated run)."""
    return _TRAFFIC_COLUMNS + (_CPU_COLUMNS if cpu else [])


def class_rows(transport: str, classes: Mapping[str, Sequence[float]], window_s: float,
               cpu: bool) -> list[dict[str, Any]]:
    """One row per request/frame class (sorted by name), counts over a window of *window_s*."""
    rows = []
    for name in sorted(classes):
        c = classes[name]
        row: dict[str, Any] = {
            "transport": transport, "class": name,
            "messages_up": int(c[UP]), "messages_down": int(c[DOWN]),
            "overhead_bytes_up": int(c[OVH_UP]), "payload_bytes_up": int(c[PAY_UP]),
            "overhead_bytes_down": int(c[OVH_DOWN]), "payload_bytes_down": int(c[PAY_DOWN]),
            "up_per_s": c[UP] / window_s,
            "bytes_per_s": (c[OVH_UP] + c[PAY_UP] + c[OVH_DOWN] + c[PAY_DOWN]) / window_s,
        }
        if cpu:
            row.update({"cpu_ops": int(c[CPU_N]), "cpu_busy_s": float(c[CPU_BUSY]),
                        "cpu_wait_ms_mean": float(c[CPU_WAIT] / c[CPU_N] * 1000.0) if c[CPU_N] else 0.0})
        rows.append(row)
    return rows


def fanout(conversation: np.ndarray, members: Sequence[Sequence[int]]) -> np.ndarray:
    """Recipients of each message: its conversation's members but the sender."""
    return np.array([len(members[c]) - 1 for c in conversation], dtype=np.int64)


def fully_delivered(send_time: np.ndarray, fanouts: np.ndarray, delivered_msgs: Iterable[int], w0: float,
                    w1: float) -> int:
    """Messages sent in ``[w0, w1]`` that reached every recipient (*delivered_msgs*: the message id
    of each in-window (message, recipient) delivery)."""
    got = np.bincount(np.asarray(list(delivered_msgs) if not isinstance(delivered_msgs, np.ndarray)
                                 else delivered_msgs, dtype=np.int64), minlength=send_time.size)
    in_win = (send_time >= w0) & (send_time <= w1)
    return int((got[in_win] >= fanouts[in_win]).sum())


def delivery_outcomes(pairs: Iterable[tuple[int, int]], received: set[tuple[int, int]], acked: Callable[[int], bool],
                      kept: Callable[[int, int], bool] | None = None) -> dict[str, Any]:
    """For every expected (message, recipient) pair: received, or else ``unacked`` (the sender
    never got an acknowledgement: still its to resend), ``held`` (kept for a recipient that is
    not back yet, by *kept*), or ``lost`` (acknowledged and kept nowhere). ``missing`` lists the
    pairs not received."""
    expected = lost = held = unacked = 0
    missing: list[tuple[int, int]] = []
    for i, r in pairs:
        expected += 1
        if (i, r) in received:
            continue
        missing.append((i, r))
        if not acked(i):
            unacked += 1
        elif kept is not None and kept(i, r):
            held += 1
        else:
            lost += 1
    return {"expected": expected, "lost": lost, "held": held, "unacked": unacked, "missing": missing}


def jsonable(v: Any) -> Any:
    """*v* with numpy scalars as Python values, tuples as lists and non-finite floats as None,
    ready for ``json.dumps(..., allow_nan=False)``."""
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def fmt(template: str, v: Any, missing: str = "-") -> str:
    """*v* through a ``str.format`` *template*; *missing* for None or NaN, ``str(v)`` if it does not fit."""
    if v is None or (isinstance(v, float) and v != v):
        return missing
    try:
        return template.format(v)
    except (ValueError, TypeError):
        return str(v)


def fmt_auto(v: Any) -> str:
    """A number with as many digits as its size needs (3 decimals below 1, grouped thousands)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    v = float(v)
    if v != 0 and abs(v) < 1:
        return f"{v:.3f}"
    return f"{v:,.1f}" if abs(v) < 1e5 else f"{v:,.0f}"
