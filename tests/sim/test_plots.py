"""The simulator's figures, drawn for people to read: what one label says is not hidden by another."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from aigrid.sim.plots import cdf_figure, plt
from aigrid.sim.runner import OK


def _experiment(slo_ms: float) -> SimpleNamespace:
    rng = np.random.default_rng(3)
    runs = []
    for label, scale in (("balanced", 0.15), ("nearest", 0.4), ("least-loaded", 0.25)):
        ttft = np.exp(rng.normal(np.log(scale), 0.9, 2000))  # seconds: about 20 ms to 5 s
        runs.append(SimpleNamespace(label=label, result=SimpleNamespace(ttft_s=ttft, status=np.full(2000, OK))))
    return SimpleNamespace(runs=runs, scenario=SimpleNamespace(name="t", slo=SimpleNamespace(ttft_ms=slo_ms)))


@pytest.mark.parametrize("slo_ms", [50.0, 300.0, 1000.0, 2000.0, 4000.0])
def test_the_legend_never_covers_the_slo_line_or_its_label(slo_ms: float) -> None:
    """ttft_cdf.png's legend sat in the lower right, over the ' SLO' label (and the line) of an SLO in the
    upper latencies, the usual place of one: the legend now stands outside the axes."""
    fig = cdf_figure(_experiment(slo_ms))
    try:
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        (label,) = [t for t in ax.texts if "SLO" in t.get_text()]
        assert f"{slo_ms:,g} ms" in label.get_text()
        assert not legend.overlaps(label.get_window_extent(renderer)), (legend, label.get_window_extent(renderer))
        line_x = ax.transData.transform((slo_ms, 0.5))[0]
        axes = ax.get_window_extent(renderer)
        assert axes.x0 <= line_x <= axes.x1
        assert not legend.x0 <= line_x <= legend.x1 or not legend.overlaps(axes), "the legend covers the SLO line"
        assert fig.bbox.contains(legend.x1 - 1, legend.y0 + 1)  # the legend is drawn whole, not cut off
    finally:
        plt.close(fig)


def test_a_count_of_one_reads_in_the_singular(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scenario of one request on one site was '(1 requests)' in the table's title and '1 sites under policy'
    on the map."""
    from aigrid.sim import plots
    from aigrid.sim.experiment import run_experiment
    from aigrid.sim.report import table
    from tests.sim.test_scenarios import scenario

    small = scenario("small")
    one = scenario("small", seed=3, requests=1, duration_s=10, sites=small.sites[:1], policies=["balanced"],
                   faults=[], tenants=[small.tenants[0].model_copy(update={"share": 1.0})])
    ex = run_experiment(one, workers=1)
    assert len(ex.workload) == 1  # seed 3 draws one arrival
    assert str(table(ex).title).endswith("(1 request)"), table(ex).title
    drawn: list[Figure] = []
    monkeypatch.setattr(plots.plt, "close", drawn.append)
    plots.write_plots(ex, tmp_path)
    monkeypatch.undo()
    titles = [ax.get_title() for fig in drawn for ax in fig.axes]
    assert any(": 1 site under policy balanced" in t for t in titles), titles
    # the map's axes say their unit (they were `longitude` and `latitude`; thirty-eighth session)
    assert ("longitude (degrees)", "latitude (degrees)") in [(ax.get_xlabel(), ax.get_ylabel()) for fig in drawn
                                                             for ax in fig.axes]
    for fig in drawn:
        plt.close(fig)
