"""Tables people read: readable column names with units, rounded numbers, and a word instead
of NaN. Used by every notebook (and free for any report) so the labels are the CLI's.

>>> readable([{"transport": "websocket", "latency_ms_p99": 101.93, "time_to_reconnect_all_s": None}])
   transport latency p99 (ms) all back after the fault (s)
0  WebSocket            101.9                        never
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from chatcore.tables import fmt, fmt_auto

from .crash_cmd import COLUMNS as _CRASH
from .report import ROWS as _COMPARE

__all__ = ["LABELS", "readable", "label"]

# key -> (label with its unit, format). The CLI tables' labels first, then the notebooks' own.
LABELS: dict[str, tuple[str, str]] = {key: (name, f) for name, key, f in _COMPARE}
LABELS.update({
    "transport": ("transport", "{}"),
    "reconnect_policy": ("reconnect policy", "{}"),
    "delivery_design": ("delivery design", "{}"),
    "affected_clients": ("clients affected", "{:,}"),
    "reconnect_peak_per_s": ("peak connect attempts/s", "{:,.0f}"),
    "time_to_reconnect_all_s": ("all back after the fault (s)", "{:,.1f}"),
    "clients_not_reconnected": ("clients never back", "{:,}"),
    "connects_timed_out": ("connects timed out", "{:,}"),
    "connects_rejected": ("connects refused", "{:,}"),
    "wasted_connects": ("connects served after the client gave up", "{:,}"),
    "survivor_cpu_peak": ("survivor CPU peak", "{:.0%}"),
    "messages_lost": ("messages lost", "{:,}"),
    "messages_duplicated": ("messages shown twice", "{:,}"),
    "messages_recovered": ("messages recovered by resume", "{:,}"),
    "messages_resent": ("messages resent by senders", "{:,}"),
    "resends_deduplicated": ("resends dropped as duplicates", "{:,}"),
    "p99_incident_latency_ms": ("latency p99 during the incident (ms)", "{:,.0f}"),
    "presence_flaps": ("presence flaps", "{:,}"),
    "replay_bytes": ("bytes replayed by resumes", "{:,}"),
    "empty_response_ratio": ("empty poll responses", "{:.0%}"),
    "server_cpu_utilization": ("server CPU utilisation", "{:.1%}"),
    "max_connects_per_s": ("admission limit (connects/s, 0 = none)", "{:g}"),
    "registry_ttl_s": ("registry TTL (s)", "{:g}"),
    "presence_ttl_s": ("presence TTL (s)", "{:g}"),
    "poll_interval_s": ("poll interval (s)", "{:g}"),
    "clients": ("clients", "{:,}"),
    "group_size": ("group size", "{:,}"),
    "requests_per_s": ("requests/s (client->server)", "{:,.0f}"),
})
_VALUES = {"short_polling": "short polling", "long_polling": "long polling", "websocket": "WebSocket"}


def label(key: str) -> str:
    """The readable name of a column key (the key itself when it has none)."""
    return LABELS.get(key, (key, ""))[0]


def _cell(key: str, v: Any, formats: Mapping[str, str], missing: str) -> str:
    if isinstance(v, str):
        return _VALUES.get(v, v)
    template = formats.get(key) or LABELS.get(key, ("", ""))[1]
    if not template:
        return missing if v is None or (isinstance(v, float) and v != v) else fmt_auto(v)
    return fmt(template, v, missing=missing)


def readable(rows: pd.DataFrame | Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None, *,
             formats: Mapping[str, str] | None = None, missing: str = "never", index: str | None = None,
             transpose: bool = False) -> pd.DataFrame:
    """*rows* (a DataFrame or dicts) as strings: readable column names with units, numbers
    rounded by their format, *missing* (default "never") for None or NaN, transport names in
    words. *columns* picks and orders the keys; *formats* overrides a key's format; *index*
    becomes the row labels; *transpose* puts one column per row (the compare summary)."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    keys = list(columns) if columns is not None else list(df.columns)
    formats = formats or {}
    out = pd.DataFrame({label(k): [_cell(k, v, formats, missing) for v in df[k].tolist()] for k in keys})
    if index is not None:
        out = out.set_index(label(index))
    if transpose:
        out = out.T
    return out
