"""Any row re-run alone with ``chatlab compare`` / ``chatlab crash`` gives the same numbers."""

import json

import pytest

from chatlab.cli import main
from chatlab.sweep import load_runs, load_sweep, rerun_command, run_sweep

from .conftest import write_sweep


@pytest.mark.parametrize("kind", ["compare", "crash"])
def test_a_row_reruns_alone(tmp_path, capsys, kind):
    body = f"""
kind = "{kind}"
{'policies = ["exponential", "full_jitter"]' if kind == "crash" else ""}
seed = 99
replications = 2
[sample]
method = "random"
count = 2
bounds = {{rtt_ms = [5, 300]}}
"""
    if kind == "crash":
        base = ('[base]\nclients = 30\nduration_s = 40\nwarmup_s = 5\nconnect_ramp_s = 2\ncrash_at_s = 12\n'
                'downtime_s = 4\ntransports = ["websocket"]\n')
    else:
        base = '[base]\nclients = 30\nduration_s = 25\nwarmup_s = 5\nconnect_ramp_s = 2\n'
    spec = load_sweep(write_sweep(tmp_path / "s.toml", body, base))
    run_sweep(spec, tmp_path / "o", jobs=1)
    runs = load_runs(tmp_path / "o")
    row = runs[(runs["replication"] == 1) & (runs["point"] == runs["point"].max())].iloc[-1].to_dict()
    cmd = rerun_command(kind, row)
    assert cmd[:2] == ["chatlab", kind] and f"seed={row['seed']}" in cmd
    assert main([*cmd[1:], "--json", "--jobs", "1"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    flat = {}
    for k, v in result.items():
        if isinstance(v, dict):
            flat.update({f"{k}_{kk}": vv for kk, vv in v.items()})
        elif k == "incident_window_s":
            flat["incident_start_s"], flat["incident_end_s"] = v
        else:
            flat[k] = v
    for m in spec.metrics:
        want = row[m]
        if want != want:  # NaN: the model returned None
            assert flat[m] is None, m
        else:
            assert flat[m] == want, m  # exactly: same seed, same numbers
