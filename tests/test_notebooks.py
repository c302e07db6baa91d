"""Every notebook runs in small mode and shows what it says it shows.

``make test`` runs the notebooks here, once each, in small mode (``pytest --nbmake notebooks``
would only check that no cell raises, and would run them a second time). This file checks that
no cell raises, and also:

* every cell tagged ``figure`` displays exactly one picture (an ``image/png`` output): a
  figure that prints ``<Figure size 700x420 with 1 Axes>`` is a failure, and so is one shown twice;
* the cells tagged ``claim`` (asserts of what the text says) ran, and raised nothing;
* cells tagged ``solution`` (the workshop) ran too, and are hidden in JupyterLab;
* the notebooks are stored without outputs, so diffs stay readable and no stale number is read.

Cells tagged ``skip-execution`` are skipped and ``raises-exception`` may raise (nbclient honours
both tags, as nbmake does).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    env_small = os.environ.get("CHATLAB_SMALL")
    os.environ["CHATLAB_SMALL"] = "1"  # the kernel inherits it
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_small is None:
            del os.environ["CHATLAB_SMALL"]
        else:
            os.environ["CHATLAB_SMALL"] = env_small
    return nb


def figure_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why the figure cells show no picture (empty when each shows one)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "figure" not in tags(cell) or "skip-execution" in tags(cell):
            continue
        kinds = [set(o.get("data", {})) for o in cell.get("outputs", [])]
        images = sum("image/png" in k for k in kinds)
        if images == 0:
            text = [o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", [])]
            problems.append(f"cell {i} ({cell.source.splitlines()[0]!r}) shows no image, only {text!r}")
        elif images > 1:  # e.g. a helper that also leaves a pyplot figure open
            problems.append(f"cell {i} ({cell.source.splitlines()[0]!r}) shows {images} images, not one")
    return problems


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=IDS)
def executed(request) -> tuple[Path, nbformat.NotebookNode]:
    return request.param, execute(request.param)


def test_figures_display_as_images(executed):
    path, nb = executed
    assert any("figure" in tags(c) for c in nb.cells) or "figure" not in path.read_text(), \
        f"{path.name}: plots but tags no cell 'figure'"
    assert figure_problems(nb) == []


def test_claims_ran_and_held(executed):
    """A claim cell that raised would have stopped the run; check each one actually ran."""
    path, nb = executed
    claims = [c for c in nb.cells if "claim" in tags(c) or "solution" in tags(c)]
    for c in claims:
        if "skip-execution" in tags(c):
            continue
        assert c.execution_count is not None, f"{path.name}: a claim or solution did not run: {c.source[:80]!r}"
        assert not [o for o in c.outputs if o.output_type == "error"], c.source[:80]


def test_figure_check_fails_on_a_bare_figure_repr():
    """The check itself can fail: a figure cell whose output is only the text repr."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("plots.latency_cdf(cmp)")])
    nb.cells[0].metadata["tags"] = ["figure"]
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", data={
        "text/plain": "<Figure size 700x420 with 1 Axes>"}, execution_count=1)]
    assert len(figure_problems(nb)) == 1
    png = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})
    nb.cells[0].outputs = [png]
    assert figure_problems(nb) == []
    nb.cells[0].outputs = [png, png]   # displayed twice
    assert len(figure_problems(nb)) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert dirty == [], f"{path.name}: cells {dirty} have outputs; run `make notebooks-clean`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_solutions_hidden_and_links_resolve(path: Path):
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if "solution" in tags(c):
            assert c.metadata.get("jupyter", {}).get("source_hidden") is True, c.source[:80]
    here = path.parent
    import re

    for c in nb.cells:
        if c.cell_type == "markdown":
            for target in re.findall(r"\]\(([^)#]+\.ipynb)\)", c.source):
                assert (here / target).exists(), f"{path.name} links to missing {target}"


def test_readable_tables_name_round_and_say_never():
    """The notebooks' table helper: labels with units, rounding by format, "never" for NaN/None."""
    import doctest

    import chatlab.tables
    from chatlab.tables import readable

    t = readable([{"transport": "long_polling", "latency_ms_p99": 202.871, "time_to_reconnect_all_s": float("nan"),
                   "empty_response_ratio": 0.1214, "mystery": 0.123456}])
    assert t.to_dict("records") == [{"transport": "long polling", "latency p99 (ms)": "202.9",
                                     "all back after the fault (s)": "never", "empty poll responses": "12%",
                                     "mystery": "0.123"}]
    assert doctest.testmod(chatlab.tables).failed == 0


def test_workshop_reveal_says_how_far_off():
    import doctest

    import chatlab.workshop
    from chatlab.workshop import reveal

    assert reveal(20_000, 17_953.2, "MiB").endswith("11% high")
    assert "well done" in reveal(600, 592.4)
    assert doctest.testmod(chatlab.workshop).failed == 0
