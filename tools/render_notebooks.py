"""Execute the notebooks and write readable copies: ``make notebooks``.

    python tools/render_notebooks.py [--out out/notebooks] [--small] [NOTEBOOK ...]
    python tools/render_notebooks.py --clean            # strip outputs from notebooks/*.ipynb

For each notebook: an executed HTML copy (``jupyter nbconvert --execute --to html``, done through
the same library) and, under ``img/``, the PNG of every cell tagged ``figure``, named
``<notebook>-<cell id>.png`` (docs/img/ holds the few the README shows). The stored notebooks
carry no outputs; ``--clean`` removes any that an editor saved (tests/test_notebooks.py checks).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def clean(path: Path) -> bool:
    """Remove outputs and execution counts; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for c in nb.cells:
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None):
            c.outputs, c.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, path)
    return changed


def render(path: Path, out: Path) -> list[Path]:
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    ExecutePreprocessor(timeout=1800, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(path.parent)}})
    html, _ = HTMLExporter().from_notebook_node(nb)
    written = [out / f"{path.stem}.html"]
    written[0].write_text(html, encoding="utf-8")
    (out / "img").mkdir(exist_ok=True)
    for c in nb.cells:
        if "figure" not in c.get("metadata", {}).get("tags", []):
            continue
        for o in c.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png:
                p = out / "img" / f"{path.stem}-{c.id}.png"
                p.write_bytes(base64.b64decode(png))
                written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "notebooks")
    ap.add_argument("--small", action="store_true", help="CHATLAB_SMALL=1: the quick sizes the tests use")
    ap.add_argument("--clean", action="store_true", help="strip outputs from the stored notebooks instead")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.clean:
        for p in paths:
            if clean(p):
                print(f"cleaned {p}")
        return 0
    if args.small:
        os.environ["CHATLAB_SMALL"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        print(f"{p.name} ...", end=" ", flush=True)
        written = render(p, args.out)
        print(", ".join(str(w.relative_to(args.out)) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
