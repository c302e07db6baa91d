"""Run independent simulations side by side on the local cores.

``sim`` stays pure; this glue decides where runs execute. A transport's run
depends only on (scenario, transport), so serial and parallel give identical
results (a test checks it).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Sequence

from tqdm import tqdm


def default_jobs(n_tasks: int) -> int:
    return max(1, min(n_tasks, os.cpu_count() or 1))


def _run_one(task):  # top level so it pickles
    import sim

    scenario, transport = task
    return sim.run(scenario, transport)


def run_many(tasks: Sequence[tuple], jobs: int, progress: bool = False, desc: str = "simulating") -> list:
    """Run ``sim.run(scenario, transport)`` for each task, in order of *tasks*."""
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, leave=False)
    try:
        if jobs <= 1 or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(_run_one(t))
                bar.update()
            return out
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_run_one, t) for t in tasks]
            out = []
            for f in futures:
                out.append(f.result())
                bar.update()
            return out
    finally:
        bar.close()


def transports_tasks(scenario, transports: Iterable[str]) -> list[tuple]:
    return [(scenario, t) for t in transports]
