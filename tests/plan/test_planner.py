"""The planner's choice of the plan among what the simulator passed."""

from __future__ import annotations

from dataclasses import replace

from aigrid.plan.placement import Placement, PlannedSite
from aigrid.plan.planner import Naive, _cheaper_naive, _floor_problem
from aigrid.plan.verify import Verdict

MODEL = "llama-3.1-8b"
SITES = (PlannedSite("fra", "Frankfurt", 50.11, 8.68, "DE", "EU", "h100", 1, 2.5, ((MODEL, 1),)),
         PlannedSite("iad", "Ashburn", 39.04, -77.49, "US", "US", "h100", 1, 2.5, ((MODEL, 1),)))


def test_a_naive_placement_that_passed_for_less_becomes_the_plan() -> None:
    def verdict(n: int, passed: bool = True) -> Verdict:
        sites = tuple(replace(s, replicas=((MODEL, n),)) for s in SITES)
        return Verdict(Placement("x", sites), [], passed)

    plan = verdict(2)
    cheap, dear, failed = Naive("a", verdict(1), None), Naive("b", verdict(3), None), Naive("c", verdict(1, False), None)
    assert _cheaper_naive([dear, failed, Naive("d", None, "structural")], plan) is None
    assert _cheaper_naive([dear, cheap], plan) is cheap.verdict
    assert _cheaper_naive([dear], None) is dear.verdict


def test_a_naive_floor_equal_to_the_cheapest_is_not_said_to_cost_more() -> None:
    cheapest = Placement("one-region", SITES)  # 2 x $2.50/h
    assert "as much as one-region at $5.00/h" in _floor_problem("continents", 5.0, cheapest)
    assert "more than one-region at $5.00/h" in _floor_problem("continents", 7.5, cheapest)
