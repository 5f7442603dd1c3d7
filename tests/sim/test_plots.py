"""The simulator's figures, drawn for people to read: what one label says is not hidden by another."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

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
