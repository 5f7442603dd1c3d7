"""A real simulator run made replayable: sites.json and each request's client city, rebuilt from the scenario."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from aigrid.dashboard.replay_files import CLIENT_COLUMNS, add_client_columns, prepare_replay
from tests.dashboard.browser import chromium_page
from tests.dashboard.conftest import Served

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "examples" / "sim" / "small.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aigrid.sim.cli import run_scenario

    out = tmp_path_factory.mktemp("sim")
    run_scenario(SMALL, out, plots=False, quiet=True)
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


def test_the_run_replays_on_the_map(run: Path, served: Served, tmp_path: Path) -> None:
    prepare_replay(SMALL, run)
    shutil.copytree(run, tmp_path / "run")  # the served gateway's replay directory
    external: list[str] = []
    with chromium_page(served.base, external) as page:
        page.goto(served.base + "/dashboard?replay=1")
        page.wait_for_function("() => document.body.dataset.mode === 'replay'", timeout=15000)
        page.wait_for_function("() => document.querySelectorAll('#map-sites g.site').length === 3", timeout=5000)
        sites = page.eval_on_selector_all("#map-sites g.site", "gs => gs.map(g => g.dataset.site)")
        assert sorted(sites) == ["ap-tokyo", "eu-west", "us-east"]
        assert page.eval_on_selector_all("#replay-policy option", "os => os.map(o => o.value)") == [
            "balanced", "nearest", "least-loaded"]
        page.select_option("#replay-speed", "10")
        page.wait_for_function("() => Number(document.body.dataset.replayT) > 20", timeout=20000)
        page.wait_for_function("() => document.querySelectorAll('#map-arcs path.arc').length > 20", timeout=5000)
        assert page.text_content("#replay-note") == ""
        page.screenshot(path=str(tmp_path / "dashboard-replay.png"))
    assert external == []
    if os.environ.get("AIGRID_UPDATE_DOCS") == "1":
        shutil.copy(tmp_path / "dashboard-replay.png", ROOT / "docs" / "img" / "dashboard-replay.png")
