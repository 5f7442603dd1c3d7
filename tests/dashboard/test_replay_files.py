"""A real simulator run made replayable: sites.json and each request's client city, rebuilt from the scenario."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import runpy
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigrid.dashboard.replay_files import CLIENT_COLUMNS, add_client_columns, prepare_replay
from aigrid.printable import FORMULA_STARTS
from tests.dashboard.browser import chromium_page
from tests.dashboard.conftest import Served

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "examples" / "sim" / "small.yaml"
NUMBER = re.compile(r"-?\d+(\.\d+)?")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aigrid.sim.cli import run_scenario

    out = tmp_path_factory.mktemp("sim")
    run_scenario(SMALL, out, plots=False, quiet=True)
    shutil.copy(out / "requests.csv", out / "requests.sim.csv")  # as the simulator wrote it
    return out


def test_prepare_replay_adds_sites_and_client_cities(run: Path) -> None:
    written = prepare_replay(SMALL, run)
    assert {p.name for p in written} == {"sites.json", "requests.csv"}
    sites = {s["id"]: s for s in json.loads((run / "sites.json").read_text())["sites"]}
    assert set(sites) == {"us-east", "eu-west", "ap-tokyo"}
    assert sites["ap-tokyo"]["name"] == "Tokyo" and round(sites["ap-tokyo"]["lat"]) == 36
    assert all(s["slots"] > 0 for s in sites.values())
    with open(run / "requests.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(CLIENT_COLUMNS) <= set(rows[0])
    # the join is right: the EU-only tenant's clients are all in Europe (all of Russia, and the Canaries)
    eu = [r for r in rows if r["tenant"] == "eu-bank"]
    assert eu and all(27 < float(r["client_lat"]) < 72 and float(r["client_lon"]) > -25 for r in eu)  # + Canaries
    assert any(float(r["client_lat"]) < 0 for r in rows if r["tenant"] == "chat")
    assert {r["site"] for r in eu if r["status"] == "ok"} == {"eu-west"}
    assert not add_client_columns(SMALL, run / "requests.csv")  # a second time changes nothing


def test_the_rewritten_requests_csv_keeps_the_simulators_quoting(run: Path, tmp_path: Path) -> None:
    """Each record as the simulator wrote it (text quoted, numbers not), the new cells written the same way: the
    file was rewritten with minimal quoting, every text cell unquoted (a `;` in a name two cells to a `;` reader)."""
    written = (run / "requests.sim.csv").read_text()
    copy = tmp_path / "requests.csv"
    copy.write_text(written)
    assert add_client_columns(SMALL, copy)
    before, after = written.splitlines(), copy.read_text().splitlines()
    assert len(after) == len(before) > 100
    assert all(new.startswith(old + ",") for old, new in zip(before, after, strict=True))
    assert after[0].endswith(',"client_city","client_lat","client_lon"')
    rows = list(csv.reader(io.StringIO(copy.read_text()), quoting=csv.QUOTE_NONNUMERIC))  # unquoted: a number
    assert all(isinstance(r[-2], float) and isinstance(r[-1], float) and isinstance(r[-3], str) for r in rows[1:])


AGENT_SITE, AGENT_TENANT = "us;=east", "=agent;@SUM(1)"


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run with an agent tenant (3 tool steps: rows `session.step`) and names the CSV writer guards."""
    from aigrid.sim.cli import run_scenario

    where = tmp_path_factory.mktemp("agents")
    sc = yaml.safe_load(SMALL.read_text())
    sc.update(requests=150, duration_s=20, faults=[], policies=["balanced", "nearest"])
    sc["sites"][0]["id"] = AGENT_SITE
    sc["tenants"][0].update(name=AGENT_TENANT, agent={"steps": 3, "tool_ms": 20, "loop": "client",
                                                     "output_tokens": 32})
    (where / "agents.yaml").write_text(yaml.safe_dump(sc))
    run_scenario(where / "agents.yaml", where / "out", plots=False, quiet=True)
    prepare_replay(where / "agents.yaml", where / "out")
    return where / "out"


def test_an_agent_run_with_follow_up_calls_is_made_replayable(agent_run: Path) -> None:
    """A tool loop's follow-up calls are rows `session.step` (sim/report.py): int('4.1') was a ValueError, so no
    run with an agent tenant could be replayed. Each call's client is its session's; the names stay guarded."""
    text = (agent_run / "requests.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    follow_ups = [r for r in rows if "." in r["request"]]
    assert follow_ups and {r["tenant"] for r in follow_ups} == {"'=agent;'@SUM(1)"}
    assert "us;'=east" in {r["site"] for r in rows}
    client = {(r["policy"], r["request"]): (r["client_city"], r["client_lat"], r["client_lon"]) for r in rows}
    assert all(client[r["policy"], r["request"]] == client[r["policy"], r["request"].split(".")[0]]
               for r in follow_ups)
    assert len({client[k] for k in client}) > 10
    for separator in (",", ";"):
        cells = [c for row in csv.reader(io.StringIO(text), delimiter=separator) for c in row]
        assert not [c for c in cells if c.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(c)], separator


@contextmanager
def replaying(chromium: Any, run: Path, served: Served, tmp_path: Path,
              external: list[str]) -> Iterator[tuple[Any, list[str]]]:
    """The page on ?replay=1 over a copy of `run` (three sites), and the ids of the sites it drew."""
    shutil.copytree(run, tmp_path / "run")  # the served gateway's replay directory
    with chromium_page(chromium, served.base, external) as page:
        page.goto(served.base + "/dashboard?replay=1")
        page.wait_for_function("() => document.body.dataset.mode === 'replay'", timeout=15000)
        page.wait_for_function("() => document.querySelectorAll('#map-sites g.site').length === 3", timeout=30000)
        yield page, page.eval_on_selector_all("#map-sites g.site", "gs => gs.map(g => g.dataset.site)")


def test_the_run_replays_on_the_map(run: Path, served: Served, tmp_path: Path, chromium: Any) -> None:
    prepare_replay(SMALL, run)
    external: list[str] = []
    with replaying(chromium, run, served, tmp_path, external) as (page, sites):
        assert sorted(sites) == ["ap-tokyo", "eu-west", "us-east"]
        assert page.eval_on_selector_all("#replay-policy option", "os => os.map(o => o.value)") == [
            "balanced", "nearest", "least-loaded"]
        page.select_option("#replay-speed", "10")
        page.wait_for_function("() => Number(document.body.dataset.replayT) > 20", timeout=20000)
        page.wait_for_function("() => document.querySelectorAll('#map-arcs path.arc').length > 20", timeout=30000)
        assert page.text_content("#replay-note") == ""
        page.screenshot(path=str(tmp_path / "dashboard-replay.png"))
    assert external == []
    if os.environ.get("AIGRID_UPDATE_DOCS") == "1":
        shutil.copy(tmp_path / "dashboard-replay.png", ROOT / "docs" / "img" / "dashboard-replay.png")


def test_a_requests_csv_it_cannot_read_is_one_line_not_a_traceback(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def prepare(requests_csv: bytes) -> str:
        """`python -m aigrid.dashboard.replay_files SCENARIO RUN` run in this process (runpy: the module's own
        __main__ code, without a new interpreter importing the simulator again): the one line it exits with.
        Any other exception, a traceback in the shell, fails here."""
        (tmp_path / "requests.csv").write_bytes(requests_csv)
        monkeypatch.setattr(sys, "argv", ["replay_files", str(SMALL), str(tmp_path)])
        monkeypatch.delitem(sys.modules, "aigrid.dashboard.replay_files", raising=False)  # as -m: not imported
        with pytest.raises(SystemExit) as done:
            runpy.run_module("aigrid.dashboard.replay_files", run_name="__main__", alter_sys=True)
        assert isinstance(done.value.code, str) and "\n" not in done.value.code  # exit status 1, one line
        return done.value.code

    said = prepare(b'"policy","request","arrival_s","site"\r\n"balanced","4.x",0.5,"a"\r\n')
    assert said.startswith("replay_files: ")
    assert "line 2: request '4.x' is neither a request's index nor an agent call's session.step" in said
    assert (tmp_path / "requests.csv").read_bytes().endswith(b'"a"\r\n')  # left as it was
    said = prepare(b'"policy","request","tenant"\r\n"b",0,"' + b"x" * 200_000 + b'"\r\n')  # past csv's limit
    assert "field larger than field limit" in said


def test_the_agent_run_replays_with_its_names_as_written(agent_run: Path, served: Served, tmp_path: Path,
                                                         chromium: Any) -> None:
    """The page showed the writer's guards and matched no site of sites.json with a guarded id ('us;'=east': the
    site drawn nowhere, 'sites without coordinates'); a tenant's follow-up calls replay as rows of their own."""
    external: list[str] = []
    with replaying(chromium, agent_run, served, tmp_path, external) as (page, sites):
        assert AGENT_SITE in sites
        page.select_option("#replay-speed", "10")
        page.wait_for_function(f"() => [...document.querySelectorAll('#decisions tbody tr')].some("
                               f"tr => tr.children[2].textContent === {json.dumps(AGENT_TENANT)} && "
                               f"tr.dataset.site === {json.dumps(AGENT_SITE)})", timeout=20000)
        page.wait_for_function("() => [...document.querySelectorAll('#decisions tbody tr')].some("
                               "tr => /^balanced#\\d+\\.\\d+$/.test(tr.dataset.id))", timeout=20000)  # a follow-up
        assert page.text_content("#replay-note") == ""
    assert external == []
