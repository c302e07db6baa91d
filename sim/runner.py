"""Running the model: one transport (:func:`run`) or all of a scenario's (:func:`compare`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from chatcore.tables import jsonable
from chatcore.wire import TRANSPORTS

from .model import ChatModel
from .params import Scenario
from chatcore.stats import LATENCY_KEYS

from .results import RunResult, build
from .workload import draw, streams


def run(scenario: Scenario, transport: str, *, keep_cpu_samples: bool = False) -> RunResult:
    """Simulate *transport* on *scenario*'s workload. Pure: same inputs, same result."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport={transport!r}: expected one of {', '.join(TRANSPORTS)}")
    rngs = streams(scenario.seed)
    wl = draw(scenario, rngs)
    rec = ChatModel(scenario, transport, wl, rngs, keep_cpu_samples=keep_cpu_samples).run()
    return build(transport, scenario, wl, rec)


@dataclass
class Comparison:
    """The runs of one scenario, one per transport, and their tables side by side."""

    scenario: Scenario
    runs: dict[str, RunResult]

    @property
    def summary(self) -> pd.DataFrame:
        """One row per transport; nested latency dicts become ``latency_ms_p50`` etc."""
        rows = []
        for r in self.runs.values():
            row = {}
            for k, v in r.summary.items():
                if isinstance(v, dict):
                    for kk in LATENCY_KEYS:
                        row[f"{k}_{kk}"] = v.get(kk)
                else:
                    row[k] = v
            rows.append(row)
        return pd.DataFrame(rows)

    def _concat(self, attr: str) -> pd.DataFrame:
        tables: list[pd.DataFrame] = [getattr(r, attr) for r in self.runs.values()]
        return pd.concat(tables, ignore_index=True)

    @property
    def messages(self) -> pd.DataFrame:
        return self._concat("messages")

    @property
    def receipts(self) -> pd.DataFrame:
        return self._concat("receipts")

    @property
    def classes(self) -> pd.DataFrame:
        return self._concat("classes")

    @property
    def bins(self) -> pd.DataFrame:
        return self._concat("bins")

    def to_json(self) -> dict[str, Any]:
        """``{"scenario": {...}, "results": [one object per transport]}``."""
        return {"scenario": self.scenario.to_dict(),
                "results": [jsonable(r.summary) for r in self.runs.values()]}


def compare(scenario: Scenario, runs: Iterable[RunResult] | None = None) -> Comparison:
    """Run every transport in ``scenario.transports`` (or wrap *runs* already made,
    e.g. in parallel by ``chatlab``)."""
    if runs is None:
        runs = [run(scenario, t) for t in scenario.transports]
    return Comparison(scenario, {r.transport: r for r in runs})
