"""`aigrid plan` end to end on a demand whose users live in named cities (examples/plan/cities.yaml): the plan
meets the SLO in every check when the emitted scenarios are simulated again, and the retail tenant's
requests come only from its listed cities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.plan.demand import load_demand
from aigrid.sim.experiment import run_experiment
from aigrid.sim.geography import load_cities
from aigrid.sim.scenario import load_scenario
from aigrid.sim.user_cities import locate

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
        sc = load_scenario(path)
        ex = run_experiment(sc)
        r, w = ex.runs[0].result, ex.workload
        ok = (r.status == 1) & (np.nan_to_num(r.ttft_s, nan=np.inf) <= sc.slo.ttft_ms / 1000) & (
            np.nan_to_num(r.tpot_s, nan=0.0) <= sc.slo.tpot_ms / 1000)
        tenant = np.array([w.tenant_names[k].split("/")[0] for k in w.tenant])
        got = {t: float(ok[tenant == t].mean()) for t in ("retail", "chat")}
        assert min(got.values()) >= demand.slo.attainment, (path.name, got)
        assert int(r.violation.sum()) == 0
        retail_cities = set(w.city[tenant == "retail"].tolist())
        assert retail_cities == listed, path.name  # its users, and only they, in every check
        assert len(set(w.city[tenant == "chat"].tolist())) > 100  # the global tenant's users are everywhere
