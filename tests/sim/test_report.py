"""A simulator run's reports show the scenario's names (of the scenario, its tenants, sites and site sets) as
written: requests.csv holds no spreadsheet formula whatever the reader's separator, its numbers stay numbers and
the dashboard's replay still reads it; the tables, the progress lines and the plots read no markup."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from rich.console import Console
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.dashboard.replay_files import add_client_columns
from aigrid.printable import printable
from aigrid.sim.experiment import run_experiment
from aigrid.sim.report import print_table, write_outputs
from aigrid.sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "examples" / "sim" / "small.yaml"
REPLAY_JS = ROOT / "src" / "aigrid" / "dashboard" / "static" / "replay.js"
NAME = "[link=http://evil]s[/link] [/x] cost$\\foo$"
SITE_SET = "[/s] $\\qux$"
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def hostile(tmp_path: Path, agent: bool = False) -> Path:
    sc: dict[str, Any] = yaml.safe_load(SMALL.read_text())
    sc.update(name=NAME, requests=200, duration_s=20, faults=[], policies=["balanced", f"nearest@{SITE_SET}"])
    sc["sites"][0]["id"] = "us;=east"
    sc["site_sets"] = {SITE_SET: sc["sites"][:2]}
    sc["tenants"][0]["name"] = "[/t]x;=1+1"
    sc["tenants"][1]["name"] = "-eu;@SUM(1)"
    if agent:
        sc["tenants"][0]["agent"] = {"steps": 1, "tool_ms": 20, "loop": "client", "output_tokens": 32}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(sc))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("hostile")
    scenario = hostile(where)
    write_outputs(run_experiment(load_scenario(scenario), workers=1), where / "out")
    return scenario, where / "out" / "requests.csv"


def test_requests_csv_holds_no_formula_whatever_the_separator_and_its_numbers_stay_numbers(
        run: tuple[Path, Path]) -> None:
    text = run[1].read_text()
    for separator in (",", ";", "\t"):  # a reader that takes the file's quotes, and one that splits at its own
        cells = [c for row in csv.reader(io.StringIO(text), delimiter=separator) for c in row]
        assert not [c for c in cells if c.startswith(FORMULA)], separator
        split = [c.lstrip('"') for line in text.splitlines() for c in line.split(separator)]
        assert not [c for c in split if c.startswith(FORMULA)], separator
    rows = list(csv.reader(io.StringIO(text), quoting=csv.QUOTE_NONNUMERIC))  # an unquoted cell is a number
    header, body = rows[0], rows[1:]
    assert len(body) > 100 and {r[header.index("tenant")] for r in body} == {"[/t]x;'=1+1", "'-eu;'@SUM(1)"}
    for column in ("arrival_s", "prompt_tokens", "attempts", "ttft_ms", "cost_usd"):
        assert all(isinstance(r[header.index(column)], float) for r in body), column
    # the numbers written as before: arrival_s to 0.1 ms, the cost to 8 decimals
    assert all(re.fullmatch(r"\d+\.\d{4}", line.split(",")[2]) for line in text.splitlines()[1:])
    assert all(re.fullmatch(r"\d+\.\d{8}", line.rsplit(",", 1)[1]) for line in text.splitlines()[1:])


def test_the_dashboards_replay_reads_requests_csv_as_written(run: tuple[Path, Path], tmp_path: Path) -> None:
    scenario, requests = run
    copy = tmp_path / "requests.csv"
    shutil.copy(requests, copy)
    assert add_client_columns(scenario, copy)  # replay_files.py: csv.reader, rewritten with the client columns
    with open(requests, newline="") as f:
        written = list(csv.DictReader(f))
    with open(copy, newline="") as f:
        read = list(csv.DictReader(f))
    assert [{k: r[k] for k in written[0]} for r in read] == written
    assert {r["site"] for r in written if r["status"] == "ok"} >= {"us;'=east"}
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node: the page's own parser (replay.js parseCsv) is not tried")
    module = tmp_path / "replay.mjs"
    shutil.copy(REPLAY_JS, module)
    script = (f"import {{parseCsv}} from {json.dumps(module.as_uri())}; import {{readFileSync}} from 'fs';"
              f"process.stdout.write(JSON.stringify(parseCsv(readFileSync({json.dumps(str(requests))}, 'utf8'))))")
    parsed = json.loads(subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True,
                                       check=True, timeout=60).stdout)
    assert parsed == written


def test_the_tables_show_the_names_as_written(tmp_path: Path) -> None:
    ex = run_experiment(load_scenario(hostile(tmp_path, agent=True)), workers=1)
    out = io.StringIO()
    print_table(ex, Console(file=out, width=250, force_terminal=True))
    shown = out.getvalue()
    assert "\x1b]8;" not in shown  # no terminal link
    for name in (NAME, "[/t]x;=1+1", f"nearest@{SITE_SET}"):
        assert printable(name) in shown, name  # its backslash escaped


def test_aigrid_sim_prints_and_plots_the_names_as_written(tmp_path: Path) -> None:
    """The progress lines took a site set's name as markup (a MarkupError before the table), the plots' titles
    and legends a `$..$` in a name as mathtext (a traceback when the PNG was saved, after the whole run)."""
    out = tmp_path / "out [/o]"
    r = CliRunner().invoke(app, ["sim", str(hostile(tmp_path)), "--out", str(out), "-j", "1"])
    assert r.exit_code == 0 and r.exception is None, r.output
    assert f"{printable(f'nearest@{SITE_SET}')}: 100% (" in r.output and f"wrote {out}/summary.json" in r.output
    assert (out / "ttft_cdf.png").stat().st_size > 0 and (out / "sites_utilization.png").stat().st_size > 0


def test_each_time_in_the_policies_table_says_its_unit(tmp_path: Path) -> None:
    """`p90`, `p99` and `E2E p99` were bare numbers beside `TTFT p50`'s and `TPOT p50`'s "ms"."""
    from aigrid.sim.report import table

    sc: dict[str, Any] = yaml.safe_load(SMALL.read_text())
    sc.update(requests=20, duration_s=10, faults=[], policies=["balanced"])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sc))
    t = table(run_experiment(load_scenario(path), workers=1))
    times = {str(c.header): list(c.cells) for c in t.columns if str(c.header).split()[-1] in ("p50", "p90", "p99")}
    assert set(times) == {"TTFT p50", "p90", "p99", "TPOT p50", "E2E p99"}, times
    assert all(str(v).endswith(" ms") for cells in times.values() for v in cells), times
