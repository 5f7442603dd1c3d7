"""The pooled model: sites within reach of the same users share capacity, so losing one of k costs 1/k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from aigrid.plan.demand import parse_demand
from aigrid.plan.pooled import MAX_SITES, PooledModel, _cover, _groups
from aigrid.plan.screen import Screen
from aigrid.plan.supply import candidate_sites
from aigrid.plan.traffic import build_traffic
from aigrid.sim.geography import load_cities

ROOT = Path(__file__).resolve().parents[2]


def screen(**edits):  # type: ignore[no-untyped-def]
    raw = yaml.safe_load((ROOT / "examples" / "plan" / "small.yaml").read_text())
    raw.update(edits)
    d = parse_demand(raw)
    cities = load_cities()
    return Screen(d, build_traffic(d, cities, d.verify.window_s), candidate_sites(d, cities))


def test_cover_is_n_plus_1_of_one_pool() -> None:
    # one group reaching all 4 sites, 2.2 replicas of work at rho 0.5: any 3 sites must hold 4.4 -> 2, 2, 2, 1
    reps, short = _cover({(0b1111, 0): np.array([1.0, 2.2])}, 4, 0.5, np.full(4, 10))
    assert short == 0 and sorted(reps.tolist()) == [1, 2, 2, 2]
    # six sites: 5 left after any failure carry 4.4 with one replica each
    reps, _ = _cover({(0b111111, 0): np.array([2.2])}, 6, 0.5, np.full(6, 10))
    assert reps.tolist() == [1] * 6
    # a group that reaches only sites 0 and 1 needs its own N+1 there, whatever the others hold
    reps, _ = _cover({(0b0011, 0): np.array([1.0]), (0b1111, 2): np.array([1.0])}, 4, 0.5, np.full(4, 10))
    assert reps[0] >= 2 and reps[1] >= 2 and reps.sum() == 6
    # users nearest site 0 who could go anywhere still land there: with site 1 down, site 0 carries both
    reps, _ = _cover({(0b0011, 0): np.array([1.0]), (0b1111, 0): np.array([1.0])}, 4, 0.5, np.full(4, 10))
    assert reps[0] == 4 and reps[1] == 2


def test_limits_leave_a_shortfall() -> None:
    reps, short = _cover({(0b11, 0): np.array([3.0])}, 2, 0.5, np.array([2, 2]))
    assert reps.tolist() == [2, 2] and short > 0


def test_pooled_is_never_dearer_than_nearest_on_the_same_sites_and_keeps_residency() -> None:
    s = screen()
    pooled = PooledModel(s)
    sites = list(range(len(s.cands)))
    for rho in (0.4, 0.5):
        p, n = pooled(sites, rho), s.size(sites, rho)
        assert p.uncovered_rps == 0 and p.unprotected_rps == 0
        assert p.cost_usd_h <= n.cost_usd_h
    z = s.search(0.5, size=pooled)
    assert [s.cands.jurisdiction[k] for k in z.sites].count("EU") >= 2  # the EU-only tenant survives a failure
    assert z.penalty_usd_h < 1.0  # only the RTT tie-break


def test_spread_with_the_pooled_model_adds_sites() -> None:
    s = screen()
    pooled = PooledModel(s)
    base = s.search(0.5, size=pooled)
    more = s.spread(0.5, base, more=2, size=pooled)
    assert [len(z.sites) for z in more] == [len(base.sites) + 1, len(base.sites) + 2]


def test_reach_masks_of_the_largest_placements_group_exactly() -> None:
    """A point's group is its reach mask and nearest site; with up to MAX_SITES open sites the mask uses bit 61
    (packing both into one int64, as an earlier version did, overflowed past 57 sites)."""
    top = 1 << (MAX_SITES - 1)
    mask = np.array([top | 1, top | 1, 3, top | 1], dtype=np.int64)
    nearest = np.array([MAX_SITES - 1, 0, 1, MAX_SITES - 1], dtype=np.int64)
    keys, inv = _groups(mask, nearest)
    assert [keys[i] for i in inv] == [(int(m), int(k)) for m, k in zip(mask, nearest, strict=True)]
    assert len(keys) == 3
