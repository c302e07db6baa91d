"""Where runs execute: in this process, in a local process pool, or on a Dask cluster.

A run's result depends only on its task (scenario with its seed, transport,
kind), never on where or in which order it ran, so the three backends give the
same rows (tests/sweep/test_execute.py checks it).

:func:`map_tasks` keeps a bounded number of runs in flight, hands each result
to a callback as soon as it arrives (the sweep writes it to disk at once), shows
a tqdm progress bar with an ETA, and stops cleanly on Ctrl-C, SIGTERM or a
worker process that died: what finished is kept, what was queued is cancelled,
and the pool's worker processes are ended.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm import tqdm


def execute_task(task: tuple) -> dict[str, Any]:
    """Run one task ``(run_id, kind, scenario, transport, policy, options)`` in a worker.

    A run that raises is not fatal: the result carries ``error`` (type and message) and no
    metrics. ``wall_s`` is the wall time of the model call alone."""
    from .adapter import run_one

    run_id, kind, scenario, transport, policy, options = task
    t0 = time.perf_counter()
    try:
        metrics, error = run_one(kind, scenario, transport, policy, **options), None
    except Exception as exc:  # recorded in the row; the sweep goes on
        metrics, error = {}, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    return {"run_id": run_id, "metrics": metrics, "error": error, "wall_s": time.perf_counter() - t0}


def _init_worker(parent: int) -> None:
    """Pool workers leave Ctrl-C to the parent (which stops them), and exit by themselves if
    the parent dies (a SIGKILL leaves no one to stop them otherwise)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="chatlab-parent-watch").start()


class Interrupted(BaseException):
    """A stop signal (SIGINT or SIGTERM) arrived while runs were executing."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@dataclass
class Outcome:
    """How a batch of tasks ended."""

    done: int = 0
    failed: int = 0
    stopped: str | None = None          # None, "interrupted" or "worker died"
    signum: int | None = None
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)


class _Signals:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while active."""

    def __enter__(self):
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted(signum)

    def quiet(self) -> None:
        """Ignore further signals while cleaning up (the cleanup is short)."""
        for s in self.old:
            signal.signal(s, signal.SIG_IGN)

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        return False


def map_tasks(tasks: Sequence[tuple], on_result: Callable[[dict[str, Any]], None], *, jobs: int = 1,
              executor: cf.Executor | None = None, progress: bool = False, desc: str = "runs",
              fn: Callable[[tuple], dict[str, Any]] = execute_task) -> Outcome:
    """Run *fn* on every task and pass each result to *on_result* as it arrives.

    ``jobs == 1`` runs in this process; ``jobs > 1`` in a pool of that many processes; an
    *executor* (e.g. ``dask.distributed.Client.get_executor()``) is used as given and
    not shut down. Results arrive in completion order. A task's first element is its id."""
    out = Outcome()
    t0 = time.perf_counter()
    if not tasks:
        return out
    own_pool: cf.ProcessPoolExecutor | None = None
    before: set = set()
    pending: dict[cf.Future, tuple] = {}
    bar = None
    sig = _Signals()
    with sig:
        try:
            if executor is None and jobs <= 1:
                bar = _bar(len(tasks), desc, progress)
                for t in tasks:
                    try:
                        res = fn(t)
                    except Exception as exc:  # as a pool would report it
                        res = {"run_id": t[0], "metrics": {}, "error": f"{type(exc).__name__}: {exc}"[:500],
                               "wall_s": 0.0}
                    _deliver(res, on_result, out, bar)
                return out
            if executor is None:
                before = set(multiprocessing.active_children())
                own_pool = cf.ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                                  initargs=(os.getpid(),))
                pool: cf.Executor = own_pool
                width = 2 * jobs
            else:
                pool = executor
                width = max(4, 2 * _executor_width(executor))
            queue = list(reversed(tasks))

            def submit() -> None:
                t = queue.pop()
                pending[pool.submit(fn, t)] = t

            while queue and len(pending) < width:  # workers start (fork) before the bar's thread exists
                submit()
            bar = _bar(len(tasks), desc, progress)
            while pending:
                done, _ = cf.wait(list(pending), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    task = pending.pop(f)
                    try:
                        res = f.result()
                    except cf.process.BrokenProcessPool:
                        out.stopped = "worker died"
                        return out
                    except Exception as exc:  # the executor failed the task (e.g. Dask's KilledWorker)
                        res = {"run_id": task[0], "metrics": {}, "error": f"{type(exc).__name__}: {exc}"[:500],
                               "wall_s": 0.0}
                    _deliver(res, on_result, out, bar)
                    if queue:
                        submit()
            return out
        except cf.process.BrokenProcessPool:  # a worker died; submit() says so too
            out.stopped = "worker died"
            return out
        except Interrupted as exc:
            out.stopped, out.signum = "interrupted", exc.signum
            return out
        except KeyboardInterrupt:
            out.stopped, out.signum = "interrupted", signal.SIGINT
            return out
        finally:
            sig.quiet()
            if bar is not None:
                bar.close()
            if out.stopped:
                for f in pending:
                    f.cancel()
            if own_pool is not None:
                if out.stopped:
                    for p in set(multiprocessing.active_children()) - before:  # this pool's workers only
                        p.terminate()
                own_pool.shutdown(wait=not out.stopped, cancel_futures=True)
            out.elapsed_s = time.perf_counter() - t0


def _deliver(res: dict[str, Any], on_result, out: Outcome, bar) -> None:
    on_result(res)
    out.done += 1
    if res.get("error"):
        out.failed += 1
        if len(out.errors) < 5:
            out.errors.append(res["error"])
        bar.set_postfix_str(f"{out.failed} failed", refresh=False)
    bar.update()


def _bar(total: int, desc: str, progress: bool):
    return tqdm(total=total, desc=desc, unit="run", disable=not progress, smoothing=0.1)


def _executor_width(executor: cf.Executor) -> int:
    """How many tasks an executor runs at once (Dask: the cluster's threads)."""
    client = getattr(executor, "_client", None)
    if client is not None:
        try:
            return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
        except Exception:
            return 4
    return getattr(executor, "_max_workers", 4) or 4


def default_jobs() -> int:
    """Every local core."""
    return max(1, os.cpu_count() or 1)
