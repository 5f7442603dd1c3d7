"""PNG plots (matplotlib, Agg backend): TTFT CDFs, TTFT against load per policy, a world map of sites
coloured by utilisation. Written for people to look at: log axes where latency spans decades, SLO lines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402

from aigrid.cli_error import counted  # noqa: E402
from aigrid.sim.experiment import Experiment  # noqa: E402
from aigrid.sim.geography import load_cities  # noqa: E402
from aigrid.sim.routers import is_aigrid  # noqa: E402
from aigrid.sim.runner import OK  # noqa: E402

CDF_POINTS = 20_000


def write_plots(ex: Experiment, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [_cdf(ex, out / "ttft_cdf.png"), _map(ex, out / "sites_utilization.png")]
    if ex.sweep:
        paths.append(_load_curve(ex, out / "ttft_vs_load.png"))
    return paths


def _cdf(ex: Experiment, path: Path) -> Path:
    fig = cdf_figure(ex)
    fig.savefig(path)
    plt.close(fig)
    return path


def cdf_figure(ex: Experiment) -> Figure:
    """The TTFT CDF per policy. The legend stands outside the axes, at their right, so that it covers neither
    a curve nor the SLO line and its label, wherever the SLO falls (inside, lower right, it hid the label of an
    SLO in the upper half of the latencies, where it usually is)."""
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for run in ex.runs:
        r = run.result
        x = np.sort(r.ttft_s[(r.status == OK) & ~np.isnan(r.ttft_s)] * 1000.0)
        if len(x):
            # at most about CDF_POINTS points of the curve, the last one included: a million drawn one by one
            # took most of a second per policy, for a line no wider than the figure's 880 pixels
            at = np.unique(np.append(np.arange(0, len(x), max(len(x) // CDF_POINTS, 1)), len(x) - 1))
            ax.plot(x[at], (at + 1) / len(r.status), label=run.label, lw=1.8)
    slo = ex.scenario.slo.ttft_ms
    ax.axvline(slo, color="grey", ls="--", lw=1)
    ax.text(slo, 0.02, f" SLO {slo:,g} ms", color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("time to first token seen by the user (ms, log scale)")
    ax.set_ylabel("fraction of all requests (rejected never reach 1)")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    _as_written(ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title="policy"))
    ax.set_title(f"{ex.scenario.name}: TTFT CDF per policy, identical traffic", parse_math=False)
    fig.tight_layout()
    return fig


def _as_written(legend: Legend) -> None:
    """The legend's labels (policies, named after the scenario's site sets) as written: a `$` in a name is not
    mathtext (`$\\foo$` was a traceback when the figure was saved, after the whole run)."""
    for text in legend.get_texts():
        text.set_parse_math(False)


def _load_curve(ex: Experiment, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, points in ex.sweep.items():
        util = [m.mean_utilization for _, m in points]
        p99 = [m.ttft_p99_ms for _, m in points]
        p50 = [m.ttft_p50_ms for _, m in points]
        line = ax.plot(util, p99, marker="o", lw=2, label=f"{label} p99")[0]
        ax.plot(util, p50, marker=".", ls=":", color=line.get_color(), label=f"{label} p50")
    ax.set_yscale("log")
    ax.set_xlabel("mean utilisation (served work / engine capacity)")
    ax.set_ylabel("TTFT (ms, log scale)")
    ax.axhline(ex.scenario.slo.ttft_ms, color="grey", ls="--", lw=1)
    ax.grid(True, which="both", alpha=0.3)
    _as_written(ax.legend())
    ax.set_title(f"{ex.scenario.name}: TTFT against load (the knee)", parse_math=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _map(ex: Experiment, path: Path) -> Path:
    largest = max(len(r.grid.endpoints) for r in ex.runs)
    on_largest = [r for r in ex.runs if len(r.grid.endpoints) == largest]
    run = next((r for r in on_largest if is_aigrid(r.label)), on_largest[0])
    grid = run.grid
    util = np.zeros(len(grid.site_order))
    count = np.zeros(len(grid.site_order))
    np.add.at(util, grid.site_index, run.result.utilization)
    np.add.at(count, grid.site_index, 1)
    util = util / np.maximum(count, 1)
    lat = np.array([grid.sites[s].location.lat for s in grid.site_order])
    lon = np.array([grid.sites[s].location.lon for s in grid.site_order])
    cities = load_cities()
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    ax.scatter(cities.lon, cities.lat, s=0.3, c="#cccccc", linewidths=0)
    size = 8 if len(lat) > 500 else 60
    sc = ax.scatter(lon, lat, c=util, s=size, cmap="plasma", vmin=0, vmax=max(float(util.max()), 0.05),
                    edgecolors="k", linewidths=0.2)
    fig.colorbar(sc, ax=ax, label="utilisation (served work / capacity)")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 80)
    ax.set_xlabel("longitude (degrees)")  # the unit said, as every other axis of aigrid's plots says its own
    ax.set_ylabel("latitude (degrees)")
    ax.set_title(f"{ex.scenario.name}: {counted(len(lat), 'site', grouped=True)} under policy {run.label} "
                 "(grey: GeoNames cities, CC-BY)", parse_math=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
