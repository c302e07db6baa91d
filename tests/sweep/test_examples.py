"""The example sweeps of docs/SWEEPS.md are valid, and one runs (shrunken); `make sweep-examples`
runs them all."""

from pathlib import Path

import pytest

from chatlab.cli import main
from chatlab.sweep import load_runs, load_sweep, plan

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "data" / "sweeps").glob("*.toml"))


def test_there_are_four_examples_with_figures():
    assert len(EXAMPLES) == 4
    docs = Path(__file__).resolve().parents[2] / "docs"
    text = (docs / "SWEEPS.md").read_text()
    for f in EXAMPLES:
        assert f"data/sweeps/{f.name}" in text
    for png in ("longpoll-vs-websocket", "poll-interval-latency", "poll-interval-requests",
                "backoff-time-to-reconnect", "backoff-reconnect-peak", "capacity-vs-message-rate"):
        assert (docs / "sweeps" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"sweeps/{png}.png" in text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path):
    spec = load_sweep(path)
    assert plan(spec) and spec.description


@pytest.mark.parametrize("name", ["short_poll_interval"])
def test_compare_example_runs_shrunken(tmp_path, name, capsys):
    f = next(p for p in EXAMPLES if p.stem == name)
    out = tmp_path / "o"
    assert main(["sweep", str(f), "--out", str(out), "--set", "clients=12", "--set", "duration_s=45",
                 "--replications", "1", "--jobs", "2"]) == 0
    assert (load_runs(out)["status"] == "ok").all()
