"""A check on several arrival samples (verify.samples, `aigrid plan --samples`): it passes only if every sample
passes, sample 0 is the one sample it always had, and the tables show the worst sample and which it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.plan.checks import Check, scenario_for
from aigrid.plan.demand import Demand, DemandError, load_demand, parse_demand
from aigrid.plan.placement import Placement, PlannedSite
from aigrid.plan.runs import LocalBackend, run_check
from aigrid.plan.tables import slo_markdown, slo_rows
from aigrid.plan.traffic import Traffic, build_traffic
from aigrid.plan.verify import Verifier, passes
from aigrid.sim.geography import load_cities
from aigrid.spec.load import read_yaml

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "examples" / "plan" / "small.yaml"
# Frankfurt and Ashburn, one H100 each; with Ashburn down at 16:00 UTC, 20-second windows and the demand's seed 8,
# arrival sample 0 passes (every tenant 100% within the SLO) and sample 1 fails (a tenant under 50%): found by
# trying the seeds 0-11 on this placement (7 Dec 2026); seeds 1 and 4 are such cases too.
PLACEMENT = Placement("t", (
    PlannedSite("fra", "Frankfurt", 50.11, 8.68, "DE", "EU", "h100", 1, 2.5, (("llama-3.1-8b", 1),)),
    PlannedSite("iad", "Ashburn", 39.04, -77.49, "US", "US", "h100", 1, 2.5, (("llama-3.1-8b", 1),))))
CHECK = Check(16, "iad")


def demand(samples: int) -> tuple[Demand, Traffic]:
    d = load_demand(SMALL)
    d = d.model_copy(update={"seed": 8, "verify": d.verify.model_copy(update={"window_s": 20.0, "samples": samples})})
    return d, build_traffic(d, load_cities(), d.verify.window_s)


def test_sample_zero_is_todays_seed_and_each_sample_draws_its_own() -> None:
    d, t = demand(3)
    seeds = [scenario_for(d, t, PLACEMENT, CHECK, k).seed for k in range(3)]
    assert seeds == [8 + 16, 8 + 16 + 1000, 8 + 16 + 2000]
    assert scenario_for(d, t, PLACEMENT, CHECK) == scenario_for(d, t, PLACEMENT, CHECK, 0)


def test_a_check_passing_on_sample_0_fails_when_sample_1_misses_the_slo() -> None:
    one, t = demand(1)
    two, _ = demand(2)
    alone = Verifier(one, t, LocalBackend(1)).run(PLACEMENT, [CHECK])
    assert len(alone) == 1 and passes(alone[0], one.slo.attainment)  # one sample: today's verdict, a pass
    assert "sample" not in alone[0]  # and today's outcome, as it was
    runs: list[None] = []
    v = Verifier(two, t, LocalBackend(1), on_run=lambda: runs.append(None))
    both = v.run(PLACEMENT, [CHECK])
    assert len(runs) == v.runs == 2  # the progress bar counts runs, one per sample
    assert len(both) == 1 and not passes(both[0], two.slo.attainment)
    assert (both[0]["sample"], both[0]["samples"], both[0]["samples_passed"]) == (1, 2, 1)
    each = [run_check({"scenario": scenario_for(two, t, PLACEMENT, CHECK, k).model_dump(), "check": {}})
            for k in (0, 1)]
    assert both[0]["within"] == each[1]["within"] and both[0]["tenants"] == each[1]["tenants"]  # the worst sample
    for sid in ("fra", "iad"):  # trimming reads the busiest sample's utilisation
        assert both[0]["sites"][sid]["utilization"] == max(o["sites"][sid]["utilization"] for o in each)
    row = slo_rows(both, two.slo.attainment)[0]
    assert (row["worst_sample"], row["samples_passed"], row["samples"], row["pass"]) == (1, 1, 2, False)
    table = slo_markdown(both, two.slo.attainment)
    assert "| worst sample (passed) |" in table and "| 1 (1 of 2) |" in table and "**no**" in table
    assert "worst sample" not in slo_markdown(alone, one.slo.attainment)


def test_samples_out_of_range_name_the_field_and_the_option(tmp_path: Path) -> None:
    raw = read_yaml(SMALL, DemandError, "demand file")
    assert isinstance(raw, dict)
    raw["verify"] = {**raw["verify"], "samples": 0}
    with pytest.raises(DemandError, match=r"verify\.samples: Input should be greater than or equal to 1"):
        parse_demand(raw, "x.yaml", base=SMALL.parent)
    r = CliRunner().invoke(app, ["plan", str(SMALL), "--out", str(tmp_path / "p"), "--samples", "0", "--quiet"])
    assert r.exit_code == 2 and "--samples" in r.output and "greater than or equal to 1" in r.output, r.output
