"""`aigrid plan` end to end on a demand whose users live in named cities (examples/plan/cities.yaml): the plan
meets the SLO in every check when the emitted scenarios are simulated again, and the retail tenant's
requests come only from its listed cities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.plan.demand import load_demand
from aigrid.sim.geography import load_cities
from aigrid.sim.user_cities import locate
from tests.plan.resimulate import resimulate

ROOT = Path(__file__).resolve().parents[2]
DEMAND = ROOT / "examples" / "plan" / "cities.yaml"


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan-cities")
    r = CliRunner().invoke(app, ["plan", str(DEMAND), "--out", str(out), "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def test_the_plan_meets_the_slo_in_every_check_by_simulation(planned: Path) -> None:
    doc = json.loads((planned / "plan.json").read_text())
    assert doc["meets"] and all(c["pass"] for c in doc["checks"])
    files = sorted((planned / "checks").glob("*.yaml"))
    assert len(files) == len(doc["checks"]) >= 3  # the peak, and each of at least two sites down
    demand = load_demand(DEMAND)
    cities = load_cities()
    assert demand.tenant("retail").cities is not None
    listed = {locate(e, cities) for e in demand.tenant("retail").cities or ()}
    for path in files:
        rerun = resimulate(path)
        got = rerun.attainment()
        assert {"retail", "chat"} <= set(got) and min(got.values()) >= demand.slo.attainment, (path.name, got)
        assert rerun.violations == 0
        assert set(rerun.city[rerun.tenant == "retail"].tolist()) == listed, path.name  # its users, only they
        assert len(set(rerun.city[rerun.tenant == "chat"].tolist())) > 100  # the global tenant's users are everywhere
