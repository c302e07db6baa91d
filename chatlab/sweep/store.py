"""The results store of a sweep: one directory, a manifest and a Parquet dataset.

Layout of ``--out DIR``::

    DIR/sweep.json          what was planned: the sweep, its runs' ids, the columns, provenance
    DIR/runs/part-*.parquet the rows: one tidy row per finished run, all parts one schema

Finished runs are written in small batches (at least every second, see
``run.FLUSH_S``), each batch its own part file: written under a hidden
temporary name, then renamed (``os.replace`` is atomic), so a sweep killed at
any instant, even by SIGKILL in the middle of a write, leaves only whole part
files; the reader ignores the hidden names. When a sweep stops (done
or interrupted) its parts are compacted into one file the same way. Readers
take the directory as one dataset and drop any duplicate ``run_id`` (a kill
between a compaction's rename and its clean-up leaves one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UsageError
from .adapter import TEXT_METRICS

MANIFEST = "sweep.json"
RUNS = "runs"

#: Columns every row has besides the parameters and the metrics.
ID_COLUMNS = ("sweep", "kind", "run_id", "point", "replication", "seed", "transport")
META_COLUMNS = ("status", "error", "wall_s", "chatlab_version", "git_commit")
#: Columns that differ between identical runs (excluded when comparing tables).
VOLATILE_COLUMNS = ("wall_s",)


def schema(spec) -> pa.Schema:
    """The one schema of every part: ids, every scenario parameter, the kept metrics, provenance."""
    from sim import Scenario

    fields = [pa.field("sweep", pa.string()), pa.field("kind", pa.string()), pa.field("run_id", pa.string()),
              pa.field("point", pa.int64()), pa.field("replication", pa.int64()), pa.field("seed", pa.int64()),
              pa.field("transport", pa.string())]
    for f in dataclasses.fields(Scenario):
        if f.name == "seed":
            continue
        t = type(f.default)
        typ = {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}.get(t, pa.string())
        fields.append(pa.field(f.name, typ))
    for m in spec.metrics:
        fields.append(pa.field(m, pa.string() if m in TEXT_METRICS else pa.float64()))
    fields += [pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("wall_s", pa.float64()),
               pa.field("chatlab_version", pa.string()), pa.field("git_commit", pa.string())]
    return pa.schema(fields)


def provenance() -> dict[str, str]:
    """The package version and the git commit of the code that runs (``+dirty`` when the
    working tree has uncommitted changes; ``unknown`` outside a git checkout)."""
    from .. import __version__

    root = Path(__file__).resolve().parents[2]
    commit = "unknown"
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode == 0:
            commit = head.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"chatlab_version": __version__, "git_commit": commit}


def make_row(run, spec, result: dict[str, Any], prov: dict[str, str]) -> dict[str, Any]:
    """One tidy row: the run's identity, every parameter, the kept metrics, status and provenance."""
    sc = run.scenario.to_dict()
    row: dict[str, Any] = {"sweep": spec.name, "kind": spec.kind, "run_id": run.run_id, "point": run.point,
                           "replication": run.replication, "seed": run.seed, "transport": run.transport}
    for k, v in sc.items():
        if k == "seed":
            continue
        if k == "transports":
            v = ",".join(v)
        elif v == "inf":
            v = float("inf")
        row[k] = v
    metrics = result.get("metrics") or {}
    for m in spec.metrics:
        v = metrics.get(m)
        row[m] = v if (v is None or m in TEXT_METRICS) else float(v)
    row["status"] = "error" if result.get("error") else "ok"
    row["error"] = result.get("error")
    row["wall_s"] = float(result.get("wall_s", 0.0))
    row.update(prov)
    return row


class Store:
    """Reads and writes one sweep directory."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.runs_dir = self.out / RUNS

    # --- writing -----------------------------------------------------------------------------
    def prepare(self, spec, runs, *, resume: bool, retry_failed: bool, given: str | None = None) -> list:
        """Check the directory, write the manifest and return the runs still to do.

        Without *resume* the directory must hold no rows. With it, the rows there must all
        belong to this sweep's runs (a sweep grown by more replications or points is fine);
        runs with a row are skipped, failed ones too unless *retry_failed*. (With *resume*
        and nothing there yet, the whole sweep runs.)"""
        given = given or str(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out={given}: exists and is not a directory")
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out={given}: cannot create ({exc.strerror or exc})") from None
        if not os.access(self.runs_dir, os.W_OK):
            raise UsageError(f"--out={given}: not writable")
        for tmp in self.runs_dir.glob(".*.tmp"):  # a write cut short by a kill
            tmp.unlink(missing_ok=True)
        existing = self.read_table(columns=["run_id", "status"]) if self.parts() else None
        planned = {r.run_id for r in runs}
        todo = list(runs)
        if existing is not None and existing.num_rows:
            status = dict(zip(existing.column("run_id").to_pylist(), existing.column("status").to_pylist()))
            if not resume:
                raise UsageError(f"--out={given}: already holds {len(status):,} finished runs; add --resume to "
                                 "finish that sweep, or choose another --out")
            foreign = set(status) - planned
            if foreign:
                raise UsageError(f"--resume: {given} holds {len(foreign):,} runs that are not part of this sweep "
                                 "(the sweep file, --set or the code's parameters changed); choose another --out")
            keep = {rid for rid, st in status.items() if st == "ok" or not retry_failed}
            todo = [r for r in runs if r.run_id not in keep]
        self.write_manifest(spec, runs)
        return todo

    def write_manifest(self, spec, runs) -> None:
        man = {"name": spec.name, "kind": spec.kind, "description": spec.description, "source": spec.source,
               "spec": spec.to_dict(), "planned_runs": len(runs), "run_ids": [r.run_id for r in runs],
               "columns": [f.name for f in schema(spec)], "metrics": list(spec.metrics),
               "axes": list(spec.axis_names), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance()}
        _atomic_write_bytes(self.out / MANIFEST, json.dumps(man, indent=1, default=str).encode())

    def append(self, rows: list[dict[str, Any]], sch: pa.Schema) -> Path:
        """Write *rows* as one new part file (atomically)."""
        table = pa.Table.from_pylist(rows, schema=sch)
        name = _part_name()
        final = self.runs_dir / name
        tmp = self.runs_dir / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        return final

    def compact(self) -> None:
        """Merge every part into one file (atomically), then delete the parts merged."""
        parts = self.parts()
        if len(parts) <= 1:
            return
        table = _dedupe(pa.concat_tables([pq.read_table(p) for p in parts]))
        name = _part_name()
        tmp = self.runs_dir / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.runs_dir / name)
        for p in parts:
            p.unlink(missing_ok=True)

    # --- reading -----------------------------------------------------------------------------
    def parts(self) -> list[Path]:
        return sorted(self.runs_dir.glob("part-*.parquet")) if self.runs_dir.is_dir() else []

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.out / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{self.out}: not a sweep directory (no {MANIFEST}; run `chatlab sweep FILE --out "
                             f"{self.out}` first)") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.out}/{MANIFEST}: unreadable ({exc})") from None

    def read_table(self, columns: Iterable[str] | None = None) -> pa.Table:
        parts = self.parts()
        if not parts:
            return pa.table({})
        tables = [pq.read_table(p, columns=list(columns) if columns else None) for p in parts]
        return _dedupe(pa.concat_tables(tables))


def load_runs(out: str | Path, ok_only: bool = False):
    """Every finished run of the sweep in *out* as a DataFrame, one row per run, sorted by
    point, transport and replication. *ok_only* drops failed runs."""
    import pandas as pd

    store = Store(out)
    man = store.manifest()
    table = store.read_table()
    if table.num_rows == 0:
        df = pd.DataFrame(columns=man["columns"])
    else:
        df = table.to_pandas()
    if ok_only:
        df = df[df["status"] == "ok"]
    return df.sort_values(["point", "transport", "replication"], kind="stable").reset_index(drop=True)


def _part_name() -> str:
    """Part names sort in the order they were written, so a later row wins a duplicate."""
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


def _dedupe(table: pa.Table) -> pa.Table:
    """One row per run_id: the last one (parts are read in the order they were written)."""
    ids = table.column("run_id").to_pylist()
    if len(set(ids)) == len(ids):
        return table
    last = {rid: i for i, rid in enumerate(ids)}
    return table.take(sorted(last.values()))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
