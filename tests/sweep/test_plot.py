"""``chatlab plot``: a metric against an axis, a line per hue, bands, units; PNG and SVG."""

import pytest

from chatlab.cli import main
from chatlab.sweep import plot_metric


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    from chatlab.sweep import load_sweep, run_sweep

    from .conftest import write_sweep

    d = tmp_path_factory.mktemp("plot")
    f = write_sweep(d / "s.toml", """
name = "plotme"
replications = 3
metrics = ["latency_ms_p95", "requests_per_s"]
[grid]
rtt_ms = [20, 100, 300]
poll_interval_s = [1, 4]
""")
    run_sweep(load_sweep(f), d / "out", jobs=2)
    return d / "out"


def test_lines_bands_and_units(swept):
    fig = plot_metric(swept, x="rtt_ms", y="latency_ms_p95", hue="transport", where={"poll_interval_s": "1"})
    ax = fig.axes[0]
    assert [l.get_label() for l in ax.get_lines()] == ["long polling", "WebSocket"]
    assert all(len(l.get_xdata()) == 3 for l in ax.get_lines())
    assert len(ax.collections) == 2, "one confidence band per line"
    assert ax.get_xlabel() == "rtt_ms (ms)" and ax.get_ylabel() == "latency_ms_p95 (ms)"
    assert "95 % CI over 3 replications" in fig._suptitle.get_text()


def test_panels_per_column(swept):
    fig = plot_metric(swept, x="rtt_ms", y="requests_per_s", col="poll_interval_s")
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "requests_per_s (requests/s)"


def test_cli_writes_png_and_svg(swept, capsys):
    assert main(["plot", str(swept), "--x", "rtt_ms", "--y", "latency_ms_p95", "--hue", "transport",
                 "--where", "poll_interval_s=4"]) == 0
    png = swept / "plots" / "latency_ms_p95-vs-rtt_ms-by-transport-poll_interval_s=4.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("args,message", [
    (["--x", "rtt_ms", "--y", "latency_ms_p95"], "poll_interval_s varies in this sweep (1.0, 4.0) but is not --x"),
    (["--x", "rtt", "--y", "latency_ms_p95"], "--x=rtt: not a column"),
    (["--x", "rtt_ms", "--y", "latency_ms_p95", "--where", "poll_interval_s=3"], "--where poll_interval_s=3: no run"),
    (["--x", "rtt_ms", "--y", "latency_ms_p95", "--col", "poll_interval_s", "--format", "gif"], "--format=gif"),
])
def test_cli_errors(swept, capsys, args, message):
    assert main(["plot", str(swept), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
