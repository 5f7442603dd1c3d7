"""The two-site moves' calibrated screen (plan/calibrate.py): each check's load (PooledModel.check_loads) against
the lowest load at which a placement simulated in this plan failed that check. A fake backend stands in for the
simulator (tests/plan/pair_fakes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from aigrid.plan.calibrate import Calibration, check_loads
from aigrid.plan.checks import Check
from aigrid.plan.moves import POOL_LIMIT, pool_utilisation, screened
from aigrid.plan.placement import Placement, from_sizing
from aigrid.plan.pooled import PooledModel
from aigrid.plan.screen import Screen, Sizing
from aigrid.plan.supply import candidate_sites
from aigrid.plan.verify import Verifier
from aigrid.sim.geography import load_cities
from tests.plan.pair_fakes import MODEL, TWO, Fake, hw_count, site, small

A, B = Check(7, None), Check(12, None)


def test_a_passing_move_is_ordered_before_a_failing_one_that_ties_on_the_pool_utilisation() -> None:
    """The global example's case (docs/planning.md, "A calibrated screen"): two candidates at the same pool
    utilisation, the cheaper lighter at 12:00 and hotter at 07:00, where a placement at 0.47 already failed. The
    old screen runs the cheaper (failing) one first; the calibrated one the other."""
    cheap = Placement("cheap", (site("fra", "rtx-pro-6000", 2),))  # $2.80
    dear = Placement("dear", (site("fra", "rtx-pro-6000", 3),))  # $4.20
    before = Placement("before", (site("fra"),))
    loads = {"cheap": [0.46, 0.44], "dear": [0.42, 0.48], "before": [0.47, 0.53]}
    truth = {"cheap": False, "dear": True}  # a check at 07:00 fails above 0.45

    def load(p: Placement, checks: Sequence[Check]) -> list[float]:
        return [loads[p.label][[A, B].index(c)] for c in checks]

    rows = screened([("cheap", cheap), ("dear", dear)], lambda p: 0.53)
    assert [w for w, _, _ in rows] == ["cheap", "dear"]  # the old order: a tie, the cheapest first
    assert not truth[rows[0][0]]
    cal = Calibration(load, POOL_LIMIT)
    cal.record(before, [A, B], [False, True])  # failed at 07:00 at 0.47, passed at 12:00 at 0.53
    assert cal.bar(A) == pytest.approx(0.47) and cal.bar(B) == POOL_LIMIT
    got = cal.order(rows, lambda p: [A, B])
    assert [w for w, *_ in got] == ["dear", "cheap"] and truth[got[0][0]]
    assert got[0][3] == pytest.approx(0.42 - 0.47) and got[1][3] == pytest.approx(0.46 - 0.47)
    # nothing recorded: every check's bar is the limit, and a tie in margin goes to the lower mean, then the cheapest
    fresh = Calibration(load, POOL_LIMIT).order(rows, lambda p: [A, B])
    assert [w for w, *_ in fresh] == ["cheap", "dear"]
    # a candidate the screen cannot judge (None) goes after the judged ones
    assert [w for w, *_ in Calibration(lambda p, cs: None if p.label == "dear" else load(p, cs),
                                       POOL_LIMIT).order(rows[::-1], lambda p: [A, B])] == ["cheap", "dear"]


CAPACITY = {"h100": 1.0, "rtx-pro-6000": 0.6, "l40s": 0.35}


def units_load(p: Placement, checks: Sequence[Check]) -> list[float]:
    """A stand-in for the pooled model's check loads: one unit of work over the capacity still up."""
    def up(c: Check) -> float:
        return sum(CAPACITY[s.hardware] * s.devices for s in p.sites if s.id != c.failed)
    return [1.0 / up(c) for c in checks]


def two_site_runs(fake: Fake) -> list[tuple[str, ...]]:
    return [tuple(s["hardware"] for s in sc["sites"]) for sc in fake.scenarios
            if all(s["hardware"] != "h100" for s in sc["sites"])]


def rtx_or_mixed(sites: list[dict[str, Any]], check: dict[str, Any]) -> bool:
    """Every single-site move of TWO fails (an RTX PRO 6000, or an H100 beside L40S), and so does every two-site
    one but both sites on L40S (2 each, $3.60), which is dearer than both on an RTX PRO 6000 ($2.80)."""
    return hw_count(sites, "rtx-pro-6000") > 0 or 0 < hw_count(sites, "l40s") < sum(s["replicas"] for s in sites)


def test_the_verifier_learns_each_checks_bar_and_tries_the_likeliest_two_site_move_first() -> None:
    """With one two-site trial the old order (no screen: the cheapest first) tries both sites on an RTX PRO 6000,
    which fails, and keeps $5.00; the calibrated screen, from the loads at which the single moves failed, tries the
    L40S pair first (the most capacity left with a site down) and keeps it ($3.60)."""
    d, t = small(pair_trials=1)
    old = Fake(rtx_or_mixed)
    out = Verifier(d, t, old).refine(TWO, {}, moves=True)
    assert out.placement.usd_per_hour == pytest.approx(5.00)
    assert two_site_runs(old)[0] == ("rtx-pro-6000", "rtx-pro-6000")
    cal = Calibration(units_load, POOL_LIMIT)
    new = Fake(rtx_or_mixed)
    out = Verifier(d, t, new, calibration=cal).refine(TWO, {}, moves=True)
    assert out.passed and [s.hardware for s in out.placement.sites] == ["l40s", "l40s"]
    assert out.placement.usd_per_hour == pytest.approx(3.60)
    assert two_site_runs(new)[0] == ("l40s", "l40s")
    # every run was recorded: the highest load that passed the peak check is the L40S pair's, the lowest that
    # failed it the lightest single move's (each failed its first check, the peak)
    peak = next(c for c in cal.passed_at if c.failed is None)
    assert cal.passed_at[peak] == pytest.approx(1 / 1.4)  # 4 L40S, every site up
    assert cal.failed_at[peak] == pytest.approx(1 / 1.7)  # the lightest failing single move: an H100 + 2 L40S


def test_check_loads_are_the_pooled_models_load_at_each_hour_and_failure() -> None:
    """Two EU sites of one H100 each: with one down the other carries everything (twice the load with both
    up); the busiest of the checks' loads is the pooled utilisation; a site left alone for the EU-only tenant
    cannot lose its partner (inf)."""
    d, t = small()
    s = Screen(d, t, candidate_sites(d, load_cities()))
    pm = PooledModel(s)
    fra, par = s.cands.index("frankfurt-am-main-de"), s.cands.index("paris-fr")
    h100 = s.hw.index("h100")
    reps: list[dict[str, int]] = [{MODEL: 1}, {MODEL: 1}]
    checks: list[tuple[int, int | None]] = [(h, k) for h in range(24) for k in (None, 0, 1)]
    loads = pm.check_loads([fra, par], [h100, h100], reps, checks)
    by = dict(zip(checks, loads, strict=True))
    busiest = max(range(24), key=lambda h: by[(h, None)])
    assert by[(busiest, None)] > 0
    assert by[(busiest, 0)] == pytest.approx(2 * by[(busiest, None)])
    assert by[(busiest, 0)] == pytest.approx(by[(busiest, 1)])
    assert max(loads) == pytest.approx(pm.utilisation([fra, par], [h100, h100], reps))
    # more replicas, less load; the check's hour matters
    assert pm.check_loads([fra, par], [h100, h100], [{MODEL: 2}, {MODEL: 1}], [(busiest, 1)])[0] < by[(busiest, 1)]
    assert min(by[(h, None)] for h in range(24)) < by[(busiest, None)]
    # one site: its failure leaves the demand nowhere to go
    assert pm.check_loads([fra], [h100], [{MODEL: 1}], [(busiest, None), (busiest, 0)])[1] == float("inf")
    # the planner's placements map onto them; a hand-written site does not (None)
    z = Sizing((fra, par), ("h100", "h100"), tuple(reps), 0.0, 0.0, pm.screen.traffic.rate[:2, 0], 0.0, 0.0)
    p = from_sizing("t", d, s.cands, z)
    got = check_loads(pm, p, [Check(busiest, None), Check(busiest, "paris-fr")])
    assert got == pytest.approx([by[(busiest, None)], by[(busiest, 1)]])
    assert check_loads(pm, TWO, [Check(busiest, None)]) is None
    assert pool_utilisation(pm, p) == pytest.approx(max(loads))

