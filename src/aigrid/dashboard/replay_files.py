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
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import TextIO

from aigrid.errors import SpecError
from aigrid.printable import printable, spreadsheet_cell, spreadsheet_writer
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


REQUEST_ID = re.compile(r"(\d+)(?:\.\d+)?")
"""A row's `request` as sim/report.py writes it: the request's index, or `session.step` for a follow-up call of an
agent session (whose client is the session's)."""


class _Records:
    """A file's lines as csv.reader takes them, the text of the record read last kept (`take`): one line, or
    several where a quoted cell holds a line break."""

    def __init__(self, f: TextIO) -> None:
        self.f = f
        self.read: list[str] = []

    def __iter__(self) -> _Records:
        return self

    def __next__(self) -> str:
        line = next(self.f)
        self.read.append(line)
        return line

    def take(self) -> str:
        """The record read last as written, without its line break."""
        text = "".join(self.read)
        self.read.clear()
        return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\n", "\r")) else text


def _cells(values: list[object]) -> str:
    """`values` as the simulator writes cells (printable.spreadsheet_writer: text quoted and never a formula)."""
    out = io.StringIO()
    spreadsheet_writer(out, lineterminator="").writerow([spreadsheet_cell(v) for v in values])
    return out.getvalue()


def add_client_columns(scenario_path: str | Path, requests_csv: Path) -> bool:
    """Append the client city of each row (by its `request`: an index, or `session.step` for a follow-up call of an
    agent session); False when the columns are there. Every record is kept as the simulator wrote it (its quotes,
    and the guard printable.spreadsheet_cell puts before formula-like text), the new cells written the same way."""
    with open(requests_csv, newline="") as f:
        lines = _Records(f)
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None or "request" not in header:
            raise ValueError(f"{requests_csv}: no `request` column (the simulator's requests.csv has one)")
        if all(c in header for c in CLIENT_COLUMNS):
            return False
        col = header.index("request")
        head = lines.take()
        records: list[tuple[str, int]] = []
        for row in reader:
            text = lines.take()
            if not row:
                continue  # a blank line (csv.DictReader skips it too)
            m = REQUEST_ID.fullmatch(row[col]) if len(row) > col else None
            if m is None:
                raise ValueError(f"{requests_csv}, line {reader.line_num}: request "
                                 f"{printable(row[col]) if len(row) > col else '(none)'!r} is neither a request's "
                                 f"index nor an agent call's session.step")
            records.append((text, int(m.group(1))))
    sc = load_scenario(scenario_path)
    cities = load_cities()
    w = build_workload(sc, cities)
    for _, i in records:
        if i >= len(w):
            raise ValueError(f"{requests_csv}: request {i} is not in the scenario's workload "
                             f"({len(w)} requests): was the run made from another scenario or seed?")
    city: dict[int, str] = {}  # a city's three cells, made once
    tmp = requests_csv.with_suffix(".csv.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            f.write(f"{head},{_cells(list(CLIENT_COLUMNS))}\r\n")
            for text, i in records:
                c = int(w.city[i])
                if c not in city:
                    city[c] = f"{_cells([cities.name[c]])},{cities.lat[c]:.4f},{cities.lon[c]:.4f}"
                f.write(f"{text},{city[c]}\r\n")
        os.replace(tmp, requests_csv)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    try:
        written = prepare_replay(sys.argv[1], sys.argv[2])
    except (OSError, ValueError, csv.Error, SpecError) as e:  # no file, not CSV, another run's, a bad scenario
        sys.exit(f"replay_files: {printable(str(e))}")
    for path in written:
        print(f"wrote {printable(str(path))}")
