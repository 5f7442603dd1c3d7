"""Fit the distance model RTT = overhead + route_factor x 2 x great-circle km / 200 km/ms on measured P50
round trips (../shared/data/network-rtt: Azure's inter-region matrix, CC BY 4.0) and report its error.

The fit minimises the median absolute relative error over region pairs at least 500 km apart (closer pairs
have coordinates up to 100-200 km off, see that data's README); the report covers every band.

    python scripts/fit_rtt_model.py [--data ../shared/data/network-rtt/azure_rtt_2026-07.csv] [--stat p50]

Another provider's matrix will do in the same long form: one row per directed pair with columns src_lat,
src_lon, dst_lat, dst_lon, rtt_ms (names in any case, in any order, other columns ignored), and optionally
src and dst (a region's pair with itself is skipped) and stat (only --stat's rows are used, in any case; without
--stat, p50's, or the file's only statistic's, say p95; without the column every row is). A value that cannot be used (a round trip <= 0, NaN or empty, a latitude outside
[-90, 90]), a row with more fields than the header (an unquoted comma), a line that is not CSV (a field over
131,072 characters), an empty file or a missing column is
refused with the file, line and column, exit status 2; so is a file with fewer than 3 pairs 500 km or more
apart (nothing to fit two parameters on).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aigrid.core.geo import DEFAULT_OVERHEAD_MS, DEFAULT_ROUTE_FACTOR, FIBRE_KM_PER_MS, distance_km, rtt_ms
from aigrid.core.types import GeoPoint

BANDS = [(0, 500), (500, 1000), (1000, 3000), (3000, 6000), (6000, 10000), (10000, 21000)]


class DataError(ValueError):
    """A round-trip file that cannot be fitted; str() names the file, and the line and column."""


REQUIRED = ("src_lat", "src_lon", "dst_lat", "dst_lon", "rtt_ms")
MIN_PAIRS = 3
"""The fewest pairs >= 500 km apart to fit on: two parameters fit one or two pairs exactly, saying nothing."""


def load(path: Path, stat: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Distances (km) and round trips (ms) of the file's pairs of statistic `stat`, without a region's pair
    with itself, and the statistic read. Without `stat`: p50, or the file's only statistic (a file of p95 rows
    alone), refused when it has several others. Columns are found by name in any case (other columns are ignored): src_lat, src_lon,
    dst_lat, dst_lon, rtt_ms; src and dst (region names) and stat are optional (without stat every row is
    one statistic). DataError names the file, line and column of a value that cannot be used."""
    if path.is_dir():  # the data's folder given for its file: say which files it holds
        found = ", ".join(f.name for f in sorted(path.glob("*.csv"))) or "no CSV"
        raise DataError(f"{path}: a folder, not a CSV; pass the file of one row per directed pair (this folder has: "
                        f"{found})")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _rows(path, reader, stat)
    except csv.Error as e:  # a field over csv's limit (131,072 characters), a NUL byte
        raise DataError(f"{path}, line {reader.line_num}: not valid CSV: {e}") from None


def _rows(path: Path, reader: Any, stat: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}: the file is empty (expected a header: src,dst,{','.join(REQUIRED)},stat)")
    col = {h.strip().lower(): k for k, h in enumerate(header)}
    missing = [c for c in REQUIRED if c not in col]
    if missing:
        shown = ", ".join(header[:10]) + (f", ... ({len(header)} columns: a src x dst matrix? one row per directed "
                                          "pair is read)" if len(header) > 10 else "")
        raise DataError(f"{path}, line 1: no column {', '.join(missing)} (found: {shown})")
    d, r, kinds, stats, rows = [], [], [], set(), 0
    want = stat.lower() if stat else None
    for rec in reader:
        if not any(cell.strip() for cell in rec):
            continue
        rows += 1
        line = reader.line_num
        if any(c.strip() for c in rec[len(header):]):  # an empty last field (a trailing comma) is read
            raise DataError(f"{path}, line {line}: {len(rec)} fields, the header has {len(header)} (an unquoted "
                            "comma in a region's name shifts the fields after it; quote it)")

        def cell(name: str, rec: list[str] = rec, line: int = line) -> str:
            if col[name] >= len(rec):
                raise DataError(f"{path}, line {line}: {len(rec)} fields, no value for column {header[col[name]]}")
            return rec[col[name]].strip()

        if "stat" in col:
            stats.add(cell("stat"))
            if want is not None and cell("stat").lower() != want:  # P50 is p50
                continue
        if "src" in col and "dst" in col and cell("src") == cell("dst"):
            continue
        v = {}
        for name, lo, hi in (("src_lat", -90, 90), ("src_lon", -180, 180), ("dst_lat", -90, 90),
                             ("dst_lon", -180, 180), ("rtt_ms", 0, np.inf)):
            try:
                v[name] = float(cell(name))
            except ValueError:
                v[name] = np.nan
            if not (lo <= v[name] <= hi) or (name == "rtt_ms" and not 0 < v[name] < np.inf):
                what = "a round trip in ms (> 0)" if name == "rtt_ms" else f"a coordinate in [{lo}, {hi}]"
                raise DataError(f"{path}, line {line}, column {header[col[name]]}: {cell(name)!r} is not {what}")
        d.append(distance_km(GeoPoint(v["src_lat"], v["src_lon"]), GeoPoint(v["dst_lat"], v["dst_lon"])))
        r.append(v["rtt_ms"])
        kinds.append(cell("stat").lower() if "stat" in col else "")
    if not rows:
        raise DataError(f"{path}: no rows (only a header)")
    found = f" (its stat column has: {', '.join(sorted(stats))}; pass --stat)" if stats else ""
    if want is None and stats:  # p50, else the file's one statistic (only p95 rows)
        lowered = {x.lower() for x in stats}
        want = "p50" if "p50" in lowered else min(lowered) if len(lowered) == 1 else None
        if want is None:
            raise DataError(f"{path}: no p50 rows and several other statistics{found}")
        d, r = [x for x, k in zip(d, kinds, strict=True) if k == want], [x for x, k in zip(r, kinds, strict=True) if k == want]
    if not d:
        raise DataError(f"{path}: no pair of distinct regions with stat {want or stat or 'p50'!r}{found}")
    return np.array(d), np.array(r), want or "p50"


def report(name: str, d: np.ndarray, rtt: np.ndarray, model: np.ndarray, stat: str = "p50") -> None:
    """Errors of `model` against the measured round trips, whole and per band; a band's `measured STAT` is the
    median of the file's round trips of statistic `stat` (p95 rows alone were labelled "measured p50")."""
    rel = np.abs(model - rtt) / rtt
    print(f"{name}: median |error| {np.median(rel):.1%} (signed median {np.median((model - rtt) / rtt):+.1%}), "
          f"p90 {np.percentile(rel, 90):.1%}, pairs {len(d)}")
    for lo, hi in BANDS:
        m = (d >= lo) & (d < hi)
        if m.any():
            print(f"  {lo:>5}-{hi:<5} km: median |error| {np.median(rel[m]):6.1%}  signed {np.median((model[m] - rtt[m]) / rtt[m]):+6.1%}"
                  f"  measured {stat} {np.median(rtt[m]):5.0f} ms  pairs {m.sum()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/network-rtt/azure_rtt_2026-07.csv")
    ap.add_argument("--stat", default=None,
                    help="the rows of this statistic (the file's stat column, any case; default p50, or the file's "
                         "only statistic)")
    a = ap.parse_args()
    try:
        d, rtt, stat = load(a.data, a.stat)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    far = d >= 500
    if far.sum() < MIN_PAIRS:
        print(f"error: {a.data}: {far.sum()} pairs at least 500 km apart ({len(d)} pairs in all); the fit of two "
              f"parameters needs {MIN_PAIRS} or more", file=sys.stderr)
        raise SystemExit(2)
    best = (np.inf, 0.0, 0.0)
    for overhead in np.arange(0.0, 30.01, 0.5):
        for factor in np.arange(1.0, 2.5001, 0.01):
            model = overhead + factor * 2 * d[far] / FIBRE_KM_PER_MS
            err = float(np.median(np.abs(model - rtt[far]) / rtt[far]))
            if err < best[0]:
                best = (err, overhead, factor)
    _, overhead, factor = best
    print(f"fit on {far.sum()} {stat} pairs >= 500 km: overhead {overhead:.1f} ms, route factor {factor:.2f}")
    report(f"shipped model ({DEFAULT_OVERHEAD_MS:g} ms + {DEFAULT_ROUTE_FACTOR:g} x fibre)", d, rtt,
           np.array([rtt_ms(x) for x in d]), stat)
    report(f"fitted ({overhead:g} ms + {factor:.2f} x fibre)", d, rtt, overhead + factor * 2 * d / FIBRE_KM_PER_MS, stat)
    old = 2.0 + 1.5 * 2 * d / FIBRE_KM_PER_MS
    report("previous default (2 ms + 1.5 x fibre)", d, rtt, old, stat)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `| head` has read what it wanted: exit 1 as aigrid's CLI does, without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # else the exit's flush raises it again
        raise SystemExit(1) from None
