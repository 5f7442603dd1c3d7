"""Fit the distance model RTT = overhead + route_factor x 2 x great-circle km / 200 km/ms on measured P50
round trips (../shared/data/network-rtt: Azure's inter-region matrix, CC BY 4.0) and report its error.

The fit minimises the median absolute relative error over region pairs at least 500 km apart (closer pairs
have coordinates up to 100-200 km off, see that data's README); the report covers every band.

    python scripts/fit_rtt_model.py [--data ../shared/data/network-rtt/azure_rtt_2026-07.csv]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from aigrid.core.geo import DEFAULT_OVERHEAD_MS, DEFAULT_ROUTE_FACTOR, FIBRE_KM_PER_MS, distance_km, rtt_ms
from aigrid.core.types import GeoPoint

BANDS = [(0, 500), (500, 1000), (1000, 3000), (3000, 6000), (6000, 10000), (10000, 21000)]


def load(path: Path, stat: str = "p50") -> tuple[np.ndarray, np.ndarray]:
    d, r = [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["stat"] != stat or row["src"] == row["dst"]:
                continue
            a = GeoPoint(float(row["src_lat"]), float(row["src_lon"]))
            b = GeoPoint(float(row["dst_lat"]), float(row["dst_lon"]))
            d.append(distance_km(a, b))
            r.append(float(row["rtt_ms"]))
    return np.array(d), np.array(r)


def report(name: str, d: np.ndarray, rtt: np.ndarray, model: np.ndarray) -> None:
    rel = np.abs(model - rtt) / rtt
    print(f"{name}: median |error| {np.median(rel):.1%} (signed median {np.median((model - rtt) / rtt):+.1%}), "
          f"p90 {np.percentile(rel, 90):.1%}, pairs {len(d)}")
    for lo, hi in BANDS:
        m = (d >= lo) & (d < hi)
        if m.any():
            print(f"  {lo:>5}-{hi:<5} km: median |error| {np.median(rel[m]):6.1%}  signed {np.median((model[m] - rtt[m]) / rtt[m]):+6.1%}"
                  f"  measured p50 {np.median(rtt[m]):5.0f} ms  pairs {m.sum()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/network-rtt/azure_rtt_2026-07.csv")
    a = ap.parse_args()
    d, rtt = load(a.data)
    far = d >= 500
    best = (np.inf, 0.0, 0.0)
    for overhead in np.arange(0.0, 30.01, 0.5):
        for factor in np.arange(1.0, 2.5001, 0.01):
            model = overhead + factor * 2 * d[far] / FIBRE_KM_PER_MS
            err = float(np.median(np.abs(model - rtt[far]) / rtt[far]))
            if err < best[0]:
                best = (err, overhead, factor)
    _, overhead, factor = best
    print(f"fit on {far.sum()} P50 pairs >= 500 km: overhead {overhead:.1f} ms, route factor {factor:.2f}")
    report(f"shipped model ({DEFAULT_OVERHEAD_MS:g} ms + {DEFAULT_ROUTE_FACTOR:g} x fibre)", d, rtt,
           np.array([rtt_ms(x) for x in d]))
    report(f"fitted ({overhead:g} ms + {factor:.2f} x fibre)", d, rtt, overhead + factor * 2 * d / FIBRE_KM_PER_MS)
    old = 2.0 + 1.5 * 2 * d / FIBRE_KM_PER_MS
    report("previous default (2 ms + 1.5 x fibre)", d, rtt, old)


if __name__ == "__main__":
    main()
