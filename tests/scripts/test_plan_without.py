"""scripts/plan_without.py --chunk: every site of a hardware runs the edited placement's checks with the prefill
chunk given, chunks the planner would not choose included (issue #16, the H100's chunk; docs/planning.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from aigrid.plan.checks import Check
from aigrid.plan.demand import SiteLimit, load_demand
from aigrid.plan.placement import Placement
from aigrid.plan.traffic import build_traffic
from aigrid.sim.geography import load_cities
from tests.scripts.plan_scripts import DEMAND, SITES, plan_doc, script

without = script("plan_without", "plan_without_under_test")


def chunks(args: list[str]) -> dict[str, tuple[str, int]]:
    a = without.parse_args([str(DEMAND), "unused", *args])
    p = without.edited(a, load_demand(DEMAND), plan_doc())
    return {s.id: (s.hardware, s.chunk_tokens) for s in p.sites}


def test_every_site_of_the_hardware_gets_the_chunk_moved_and_added_ones_too() -> None:
    assert set(chunks([]).values()) == {("h100", 2048)}
    got = chunks(["--hardware", "eu-north-1=rtx-pro-6000", "--add", "eu-west-1=h100", "me-central-1=rtx-pro-6000",
                  "--chunk", "h100=8192"])
    assert got["eu-north-1"] == ("rtx-pro-6000", 1024) and got["me-central-1"] == ("rtx-pro-6000", 1024)
    assert {got[s] for s in SITES if s != "eu-north-1"} | {got["eu-west-1"]} == {("h100", 8192)}
    both = chunks(["--hardware", "eu-north-1=rtx-pro-6000", "--chunk", "h100=4096", "rtx-pro-6000=2048"])
    assert both["eu-north-1"] == ("rtx-pro-6000", 2048) and both["mx-central-1"] == ("h100", 4096)


@pytest.mark.parametrize(("arg", "message"), [
    ("b200=4096", "not hardware options of the demand: b200"),
    ("h100=32", "--chunk h100=32: a chunk is a whole number of tokens from 64 to 65536"),
    ("h100=4k", "--chunk h100=4k: a chunk is a whole number"),
])
def test_a_chunk_that_cannot_be_run_is_refused_naming_it(arg: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        chunks(["--chunk", arg])


def limited(**limits):  # type: ignore[no-untyped-def]
    d = load_demand(DEMAND)
    return d.model_copy(update={"supply": d.supply.model_copy(update={"limits": {
        k: SiteLimit(**v) for k, v in limits.items()}})})


def edit(demand, args: list[str]):  # type: ignore[no-untyped-def]
    return without.edited(without.parse_args([str(DEMAND), "unused", *args]), demand, plan_doc())


def test_an_edit_past_a_sites_limits_is_refused_naming_the_site_as_the_planner_would() -> None:
    d = limited(**{"eu-north-1": {"max_gpus": 1}, "Mumbai": {"max_power_kw": 1.0}})  # by id, and by city
    assert edit(d, ["--scale", "eu-central-1=1"]).site("eu-central-1").devices == 2  # no limit there: allowed
    with pytest.raises(SystemExit, match=r"eu-north-1 \(2 x h100, its limit 1\)"):
        edit(d, ["--scale", "eu-north-1=1"])
    # 1 kW holds one H100 (700 W) or two L40S (350 W), not two H100
    assert edit(d, ["--hardware", "ap-south-1=l40s", "--scale", "ap-south-1=1"]).site("ap-south-1").devices == 2
    with pytest.raises(SystemExit, match=r"ap-south-1 \(2 x h100, its limit 1\)"):
        edit(d, ["--scale", "ap-south-1=1"])
    tight = d.model_copy(update={"supply": d.supply.model_copy(update={"max_gpus_per_site": 1})})
    with pytest.raises(SystemExit, match=r"mx-central-1 \(2 x h100, its limit 1\)"):
        edit(tight, ["--scale", "mx-central-1=1"])


def test_loads_are_the_screens_figure_for_each_check_and_none_where_it_cannot_judge() -> None:
    """--loads: each check's load by the pooled model (PooledModel.check_loads), higher with a site down than with
    every site up; a site that is not a candidate of the demand cannot be judged ("-")."""
    d = load_demand(DEMAND)
    p = without.edited(without.parse_args([str(DEMAND), "unused"]), d, plan_doc())
    traffic = build_traffic(d, load_cities(), d.verify.window_s)
    checks = [Check(7, None), Check(7, SITES[0])]
    up, down = without.check_loads(d, traffic, p, checks, str(DEMAND))
    assert up is not None and down is not None and 0 < up < down < float("inf")
    by_hand = Placement("t", (replace(p.sites[0], id="nowhere"), *p.sites[1:]))
    assert without.check_loads(d, traffic, by_hand, checks[:1], str(DEMAND)) == [None]
