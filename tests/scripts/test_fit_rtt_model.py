"""scripts/fit_rtt_model.py on another provider's round-trip matrix: columns found by name in any case, extra
columns ignored, no stat column needed; a broken file is refused with its file, line and column (exit 2),
never a traceback and never a fit on a NaN or negative round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fit_rtt_model.py"
CITIES = [("Frankfurt", 50.11, 8.68), ("Tokyo", 35.69, 139.69), ("Virginia", 38.9, -77.0),
          ("Sao Paulo", -23.55, -46.63), ("Sydney", -33.87, 151.21), ("Mumbai", 19.08, 72.88)]


def matrix(tmp_path: Path, last: str = "", header: str = "Provider,SRC,DST,Src_Lat,Src_Lon,Dst_Lat,Dst_Lon,RTT_ms") -> Path:
    """Round trips of exactly 10 ms + 1.5 x fibre for every directed pair (the fit must find them)."""
    from aigrid.core.geo import distance_km
    from aigrid.core.types import GeoPoint
    lines = [header]
    for a, la, lo in CITIES:
        for b, lb, mo in CITIES:
            km = distance_km(GeoPoint(la, lo), GeoPoint(lb, mo))
            lines.append(f"gcp,{a},{b},{la},{lo},{lb},{mo},{10 + 1.5 * 2 * km / 200:.1f}")
    f = tmp_path / "gcp_rtt.csv"
    f.write_text("\n".join(lines) + "\n" + last)
    return f


def fit(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--data", str(path), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_another_providers_matrix_is_fitted(tmp_path: Path) -> None:
    r = fit(matrix(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "fit on 30 p50 pairs >= 500 km: overhead 10.0 ms, route factor 1.50" in r.stdout, r.stdout


@pytest.mark.parametrize(("last", "named"), [
    ("gcp,a,b,50,8,40,-3,-7\n", "line 38, column RTT_ms: '-7'"),
    ("gcp,a,b,50,8,40,-3,nan\n", "line 38, column RTT_ms: 'nan'"),
    ("gcp,a,b,50,8,40,-3,\n", "line 38, column RTT_ms: ''"),
    ("gcp,a,b,95,8,40,-3,30\n", "line 38, column Src_Lat: '95'"),
    ("gcp,a,b,50,8\n", "line 38: 5 fields"),
    # an unquoted comma in a region's name: every field after it was read one column to the right (here the
    # stat-less row's latitude 'b' would be refused, but with a stat column the row was dropped unsaid)
    ("gcp,West US, CA,b,50,8,40,-3,30\n", "line 38: 9 fields, the header has 8"),
])
def test_a_bad_row_is_named(tmp_path: Path, last: str, named: str) -> None:
    f = matrix(tmp_path, last)
    r = fit(f)
    assert r.returncode == 2 and f"{f}, {named}" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize(("body", "named"), [
    ("", "the file is empty"),
    ("src,dst,src_lat,src_lon,dst_lat,dst_lon,rtt_ms,stat\n", "no rows"),
    ("src,dst,src_lat,src_lon,dst_lat,dst_lon,stat\na,b,1,2,3,4,p50\n", "line 1: no column rtt_ms"),
    ("src,dst,src_lat,src_lon,dst_lat,dst_lon,rtt_ms,stat\na,b,1,2,30,40,90,p95\na,b,1,2,30,40,95,p99\n",
     "no p50 rows and several other statistics (its stat column has: p95, p99; pass --stat)"),
    # a field over csv's 131,072 characters: a csv.Error traceback
    ('src_lat,src_lon,dst_lat,dst_lon,rtt_ms\n1,2,3,4,5\n1,2,3,4,"' + "a" * 140_000 + '"\n',
     "line 3: not valid CSV: field larger than field limit"),
    # two far pairs (and one near): a "fit" of two parameters on them said nothing
    ("src_lat,src_lon,dst_lat,dst_lon,rtt_ms\n50.11,8.68,35.69,139.69,230\n35.69,139.69,50.11,8.68,231\n"
     "50.11,8.68,50.2,8.7,2\n", "2 pairs at least 500 km apart (3 pairs in all); the fit of two parameters needs 3"),
])
def test_a_file_that_cannot_be_fitted_is_refused(tmp_path: Path, body: str, named: str) -> None:
    f = tmp_path / "rtt.csv"
    f.write_text(body)
    r = fit(f)
    assert r.returncode == 2 and str(f) in r.stderr and named in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_stat_written_in_another_case_is_the_same_stat(tmp_path: Path) -> None:
    """A file whose stat column says P50 / P95: --stat p50 found no row and the fit was refused."""
    body = matrix(tmp_path).read_text().splitlines()
    f = tmp_path / "upper.csv"
    f.write_text("\n".join([body[0] + ",stat"] + [r + ",P50" for r in body[1:]] + [r + ",P95" for r in body[1:]]) + "\n")
    r = fit(f)
    assert r.returncode == 0, r.stderr
    assert "fit on 30 p50 pairs >= 500 km: overhead 10.0 ms, route factor 1.50" in r.stdout, r.stdout


def test_a_row_of_the_other_stat_shifted_by_a_comma_is_not_dropped_unsaid(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_text("\n".join([matrix(tmp_path).read_text().splitlines()[0] + ",stat"]
                           + [r + ",p50" for r in matrix(tmp_path).read_text().splitlines()[1:]]
                           + ["gcp,West US, CA,b,50,8,40,-3,30,p50"]) + "\n")
    r = fit(f)
    assert r.returncode == 2 and f"{f}, line 38: 10 fields, the header has 9" in r.stderr, r.stderr


def test_a_file_of_p95_rows_alone_is_fitted_on_them_without_stat(tmp_path: Path) -> None:
    """Only p95 rows: the default --stat p50 found none and the fit was refused; now the file's one statistic is
    used and named in the first line (--stat still chooses)."""
    body = matrix(tmp_path).read_text().splitlines()
    f = tmp_path / "p95.csv"
    f.write_text("\n".join([body[0] + ",stat"] + [r + ",p95" for r in body[1:]]) + "\n")
    r = fit(f)
    assert r.returncode == 0, r.stderr
    assert "fit on 30 p95 pairs >= 500 km: overhead 10.0 ms, route factor 1.50" in r.stdout, r.stdout
    bands = [line for line in r.stdout.splitlines() if " km: median |error|" in line]
    assert len(bands) == 3 * 2 and all("measured p95 " in line for line in bands), r.stdout  # it said p50
    r = fit(f, "--stat", "p50")
    assert r.returncode == 2 and "no pair of distinct regions with stat 'p50' (its stat column has: p95" in r.stderr


def test_the_datas_folder_or_its_matrix_given_for_the_long_file_is_named_as_such(tmp_path: Path) -> None:
    """network-rtt's shape is a folder with the long file, a locations table and raw/ matrices: the folder was
    'cannot read: Is a directory', and a 55-region matrix was refused listing all 55 region names as columns."""
    long = matrix(tmp_path)
    r = fit(tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == \
        f"error: {tmp_path}: a folder, not a CSV; pass the file of one row per directed pair (this folder has: " \
        f"{long.name})", r.stderr
    names = [f"Region {i}" for i in range(55)]
    square = tmp_path / "p50_matrix.csv"
    square.write_text("\n".join([",".join(["Source", *names])] + [",".join([a] + ["10"] * 55) for a in names]) + "\n")
    r = fit(square)
    assert r.returncode == 2 and "line 1: no column src_lat, src_lon, dst_lat, dst_lon, rtt_ms (found: Source, " \
        "Region 0, " in r.stderr and "Region 8, ... (56 columns: a src x dst matrix? one row per directed pair is " \
        "read))" in r.stderr and "Region 9" not in r.stderr, r.stderr


def test_a_reader_that_stops_reading_gets_no_traceback(tmp_path: Path) -> None:
    """`fit_rtt_model.py | head -1`: the report's next print raised BrokenPipeError, a traceback on stderr. The
    pipe's read end is closed before the script starts, so its first print meets a closed pipe every time."""
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(matrix(tmp_path))], stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)
    finally:
        os.close(write)
    assert r.returncode == 1 and r.stderr == "", r.stderr
