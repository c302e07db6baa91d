"""Running a whole sweep into a directory: plan, skip what is done, run the rest, store each row."""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass
from pathlib import Path

from .design import plan
from .execute import Outcome, map_tasks
from .spec import SweepSpec
from .store import Store, make_row, provenance, schema

#: Finished rows are written at least this often (seconds), each batch its own part file: a
#: SIGKILL of the sweep loses at most this much finished work; a Parquet file per run would cost
#: about 3 ms each, 1-2 % of a small run.
FLUSH_S = 1.0


@dataclass
class SweepReport:
    """What one invocation did."""

    planned: int          # runs in the sweep
    already: int          # runs found finished in the directory (--resume)
    outcome: Outcome      # what this invocation ran
    out: Path

    @property
    def missing(self) -> int:
        return self.planned - self.already - self.outcome.done


def run_sweep(spec: SweepSpec, out: str | Path, *, jobs: int = 1, executor: cf.Executor | None = None,
              resume: bool = False, retry_failed: bool = False, progress: bool = False,
              given_out: str | None = None, flush_s: float = FLUSH_S) -> SweepReport:
    """Run every run of *spec* that *out* does not hold yet; finished runs are written to
    ``out/runs`` within *flush_s* seconds (0: each at once), and at once when the sweep stops. Returns when all
    ran or on an interruption (the report says which).

    *jobs* > 1 uses a local process pool; *executor* (e.g. a Dask client's
    ``get_executor()``) replaces it. Rows are the same whatever runs them."""
    store = Store(out)
    runs = plan(spec)
    todo = store.prepare(spec, runs, resume=resume, retry_failed=retry_failed, given=given_out)
    by_id = {r.run_id: r for r in todo}
    sch = schema(spec)
    prov = provenance()
    options = spec.run_options()

    buffer: list[dict] = []
    last = [time.monotonic()]

    def flush() -> None:
        if buffer:
            store.append(buffer, sch)
            buffer.clear()
        last[0] = time.monotonic()

    def on_result(res) -> None:
        buffer.append(make_row(by_id[res["run_id"]], spec, res, prov))
        if time.monotonic() - last[0] >= flush_s:
            flush()

    try:
        outcome = map_tasks([r.task(spec.kind, options) for r in todo], on_result, jobs=jobs, executor=executor,
                            progress=progress, desc=spec.name)
    finally:
        flush()
        store.compact()
    return SweepReport(planned=len(runs), already=len(runs) - len(todo), outcome=outcome, out=Path(out))
