"""Project rules that a reviewer would otherwise check by hand."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package,forbidden", [
    ("sim", {"reference_server", "chatlab", "socket", "asyncio", "aiohttp", "websockets", "redis", "fakeredis",
             "sqlite3", "subprocess", "os", "pathlib", "io", "shutil", "tempfile", "matplotlib"}),
    ("chatcore", {"sim", "reference_server", "chatlab", "socket", "asyncio", "os", "pathlib", "io", "random",
                  "time"}),
    ("reference_server", {"sim"}),
])
def test_architecture_boundaries(package, forbidden):
    bad = {f: sorted(names & forbidden) for f, names in _imports(package).items() if names & forbidden}
    assert not bad, f"{package} must not import these: {bad}"


def test_sim_opens_no_files():
    for path in (ROOT / "sim").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        assert "open" not in calls, path


def _norm(name: str) -> str:
    return re.split(r"[<>=\[ ;]", name, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_every_pyproject_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(d) for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_norm(d) for d in extra}
    conda_names = {"redis": "redis-py", "dask": "dask"}
    env = (ROOT / "environment.yml").read_text()
    listed = {_norm(m) for m in re.findall(r"^\s+-\s+([A-Za-z0-9_.\-]+)", env, re.M)}
    missing = {w for w in wanted if conda_names.get(w, w) not in listed}
    assert not missing, f"environment.yml lacks {sorted(missing)}"


def test_parameter_doc_is_generated_from_the_code():
    from chatlab.docgen import parameters_markdown

    doc = (ROOT / "docs" / "PARAMETERS.md").read_text(encoding="utf-8")
    assert parameters_markdown() in doc, "docs/PARAMETERS.md is stale: run `python -m chatlab.docgen`"


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = text[: text.index("\n## ", text.index("make test"))]
    assert "make demo" in first and "make test" in first


def test_notebooks_are_stored_without_outputs():
    import json

    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        for c in cells:
            if c["cell_type"] == "code":
                assert not c.get("outputs") and not c.get("execution_count"), nb.name
