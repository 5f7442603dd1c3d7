"""Make a simulator run replayable on the map: sites.json, and each request's client city in requests.csv.

The simulator's requests.csv names the serving site and the request's index, but not where either is on
Earth. Both are deterministic functions of the scenario (same seed, same workload and grid), so they are
rebuilt here from the scenario file:

    sites.json     {"scenario": name, "sites": [{id, name, lat, lon, jurisdiction, hardware, slots}]}
    requests.csv   gains client_city, client_lat, client_lon (left as is when it already has them)

    python -m aigrid.dashboard.replay_files SCENARIO.yaml RUN_DIR

When the simulator writes these itself, this step has nothing to do.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from aigrid.sim.geography import load_cities
from aigrid.sim.grid import build_grid
from aigrid.sim.scenario import load_scenario
from aigrid.sim.workload import build_workload

CLIENT_COLUMNS = ("client_city", "client_lat", "client_lon")


def sites_of(scenario_path: str | Path) -> list[dict[str, object]]:
    """Every site of every site set the scenario's policies use, with its slots (sum over its endpoints)."""
    sc = load_scenario(scenario_path)
    cities = load_cities()
    out: dict[str, dict[str, object]] = {}
    for key in sorted({None, *(p.split("@", 1)[1] for p in sc.policies if "@" in p)}, key=str):
        grid = build_grid(sc, cities, key)
        slots: dict[str, int] = {}
        for e in grid.endpoints:
            slots[e.site_id] = slots.get(e.site_id, 0) + max(e.max_concurrency, 1)
        for s in grid.sites.values():
            out.setdefault(s.id, {"id": s.id, "name": s.name, "lat": round(s.location.lat, 4),
                                  "lon": round(s.location.lon, 4), "jurisdiction": s.jurisdiction,
                                  "hardware": s.hardware, "slots": slots.get(s.id, 0)})
    return list(out.values())


def add_client_columns(scenario_path: str | Path, requests_csv: Path) -> bool:
    """Append the client city of each row (by its `request` index); False when the columns are there."""
    with open(requests_csv, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if all(c in header for c in CLIENT_COLUMNS):
            return False
        rows = list(reader)
    sc = load_scenario(scenario_path)
    cities = load_cities()
    w = build_workload(sc, cities)
    col = header.index("request")
    tmp = requests_csv.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*header, *CLIENT_COLUMNS])
        for row in rows:
            i = int(row[col])
            if i >= len(w):
                tmp.unlink()
                raise ValueError(f"{requests_csv}: request {i} is not in the scenario's workload "
                                 f"({len(w)} requests): was the run made from another scenario or seed?")
            c = int(w.city[i])
            out.writerow([*row, cities.name[c], f"{cities.lat[c]:.4f}", f"{cities.lon[c]:.4f}"])
    os.replace(tmp, requests_csv)
    return True


def prepare_replay(scenario_path: str | Path, run_dir: str | Path) -> list[Path]:
    """Write sites.json and add the client columns; returns the files written."""
    run = Path(run_dir)
    sc = load_scenario(scenario_path)
    sites = run / "sites.json"
    sites.write_text(json.dumps({"scenario": sc.name, "sites": sites_of(scenario_path)}, indent=1) + "\n")
    written = [sites]
    if add_client_columns(scenario_path, run / "requests.csv"):
        written.append(run / "requests.csv")
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m aigrid.dashboard.replay_files SCENARIO.yaml RUN_DIR")
    for path in prepare_replay(sys.argv[1], sys.argv[2]):
        print(f"wrote {path}")
