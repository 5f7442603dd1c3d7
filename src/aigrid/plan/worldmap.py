"""map.png: where the users are (demand points, sized by peak rate) and where the plan puts capacity (sites,
sized by devices, coloured by hardware), over the GeoNames cities (CC-BY) as a faint land outline."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aigrid.plan.placement import Placement  # noqa: E402
from aigrid.plan.traffic import Traffic  # noqa: E402
from aigrid.sim.geography import load_cities  # noqa: E402

COLOURS = {"h100": "#d62728", "rtx-pro-6000": "#1f77b4", "l40s": "#2ca02c", "cpu": "#7f7f7f"}


def write_map(path: Path, traffic: Traffic, placement: Placement, title: str,
              others: list[Placement] | None = None) -> Path:
    cities = load_cities()
    fig, ax = plt.subplots(figsize=(12, 6), dpi=110)
    ax.scatter(cities.lon, cities.lat, s=0.2, c="#dddddd", linewidths=0)
    peak = traffic.rate.max(axis=2).sum(axis=0)
    ax.scatter(traffic.lon, traffic.lat, s=np.sqrt(peak / max(peak.max(), 1e-12)) * 40, c="#ff9f1c", alpha=0.5,
               linewidths=0, label="users (area ~ peak requests/s)")
    for other, marker in zip(others or [], ("x", "+", "1", "2"), strict=False):
        ax.scatter([s.lon for s in other.sites], [s.lat for s in other.sites], s=45, marker=marker, c="#555555",
                   linewidths=1.2, label=f"naive: {other.label}")
    for hw in sorted({s.hardware for s in placement.sites}):
        mine = [s for s in placement.sites if s.hardware == hw]
        ax.scatter([s.lon for s in mine], [s.lat for s in mine], s=[60 + 25 * s.devices for s in mine],
                   c=COLOURS.get(hw, "#9467bd"), edgecolors="k", linewidths=0.6, zorder=3,
                   label=f"plan: {hw} (size ~ devices, the number beside each site)")
    for s in placement.sites:
        ax.annotate(f"{s.id} ({s.devices})", (s.lon, s.lat), xytext=(5, 5), textcoords="offset points",
                    fontsize=8, zorder=4, parse_math=False)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 80)
    ax.set_xlabel("longitude (degrees)")  # the unit said, as every other axis of aigrid's plots says its own
    ax.set_ylabel("latitude (degrees)")
    ax.set_title(title, parse_math=False)  # the demand's name as written: two '$' were mathtext (a traceback)
    ax.legend(loc="lower left", fontsize=8, markerscale=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
