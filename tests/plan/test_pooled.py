"""The pooled model: sites within reach of the same users share capacity, so losing one of k costs 1/k."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from aigrid.plan.demand import parse_demand
from aigrid.plan.pooled import MAX_SITES, PooledModel, _cover, _group_keys, _Open
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
    """A row's group is its reach mask, nearest site and model; with up to MAX_SITES open sites the mask uses
    bit 61, so the key packs the mask's rank instead of the mask (packing the mask itself overflowed past 57
    sites in an earlier version) and the groups decode back to the rows' exact masks."""
    top = 1 << (MAX_SITES - 1)
    mask = np.array([top | 1, top | 1, 3, top | 1, 3], dtype=np.int64)
    nearest = np.array([MAX_SITES - 1, 0, 1, MAX_SITES - 1, 1], dtype=np.int64)
    model = np.array([0, 0, 0, 0, 1], dtype=np.int64)
    for n in (MAX_SITES, 2):
        m = mask if n == MAX_SITES else mask & 3
        f = nearest if n == MAX_SITES else np.minimum(nearest, 1)
        keys, masks = _group_keys(m, f, model, n, 2)
        assert (masks is None) == (n == 2)
        decoded = keys // 2 // 64 if masks is None else masks[keys // 2 // 64]
        assert decoded.tolist() == m.tolist()
        assert ((keys // 2) % 64).tolist() == f.tolist() and (keys % 2).tolist() == model.tolist()
        assert len(set(keys.tolist())) == len({(a, b, c) for a, b, c in zip(m, f, model, strict=True)})


def test_cover_counts_each_site_in_its_own_hardware() -> None:
    # two sites that back each other up: each alone must hold 2 units at rho 0.5; site 1's replicas hold half a
    # unit each (a slower GPU), so it needs 4
    reps, short = _cover({(0b11, 0): np.array([1.0])}, 2, 0.5, np.full(2, 10), np.array([1.0, 0.5]),
                         np.array([2.5, 1.0]))
    assert short == 0 and reps.tolist() == [2, 4]
    # where one site may hold only 2 of its half units, the shortfall is in units
    reps, short = _cover({(0b11, 0): np.array([1.0])}, 2, 0.5, np.array([10, 2]), np.array([1.0, 0.5]),
                         np.array([2.5, 1.0]))
    assert reps.tolist() == [2, 2] and short == 1.0


MIXED = {
    "name": "mixed", "seed": 1,
    "models": [{"name": "llama-3.1-8b", "family": "llama-3", "params_b": 8.03, "kv_bytes_per_token": 131072}],
    "tenants": [  # chat's prompts prefill in time on an RTX PRO 6000, code's 95th-percentile prompts do not
        {"name": "chat", "share": 0.8, "trace": "conv", "model": "llama-3.1-8b", "continents": ["EU"]},
        {"name": "code", "share": 0.2, "trace": "code", "model": "llama-3.1-8b", "continents": ["EU"]}],
    "traffic": {"peak_rps": 40},
    "slo": {"ttft_ms": 1000, "tpot_ms": 100, "attainment": 0.98},
    "supply": {"candidates": {"cities": ["Frankfurt am Main", "Paris", "London"]},
               "hardware": {"h100": {"usd_per_hour": 2.50}, "rtx-pro-6000": {"usd_per_hour": 2.00}},
               "max_gpus_per_site": 8},
    "verify": {"window_s": 30, "gateways": 2, "peak_windows": 1, "max_rounds": 2, "proposals": 1},
}


def mixed_screen(rtx_usd: float, hardware: tuple[str, ...] = ("h100", "rtx-pro-6000")) -> Screen:
    raw = copy.deepcopy(MIXED)
    raw["supply"]["hardware"] = {h: {"usd_per_hour": rtx_usd if h == "rtx-pro-6000" else 2.50} for h in hardware}
    d = parse_demand(raw)
    cities = load_cities()
    return Screen(d, build_traffic(d, cities, d.verify.window_s), candidate_sites(d, cities))


def test_the_pooled_model_mixes_hardware_where_that_is_cheapest() -> None:
    """At $1.00/h an RTX PRO 6000 is the cheapest capacity, but the code tenant's prompts prefill in time on
    H100s only: the cheapest pooled sizing keeps code on H100 sites (two, for N+1) and gives chat RTX ones."""
    s = mixed_screen(1.00)
    assert s.useful.all()
    code = [i for i, f in enumerate(s.traffic.flows) if f.tenant == "code"]
    assert (s.pf95[code, s.hw.index("rtx-pro-6000")] > s.slo_net).all()  # code reaches no RTX site
    sites = list(range(len(s.cands)))
    mixed = PooledModel(s, mix=True)(sites, 0.5)
    assert set(mixed.hardware) == {"h100", "rtx-pro-6000"} and mixed.hardware.count("h100") >= 2
    assert mixed.uncovered_rps == 0 and mixed.unprotected_rps == 0
    singles = [PooledModel(mixed_screen(1.00, (h,)))(sites, 0.5) for h in ("h100", "rtx-pro-6000")]
    assert singles[1].uncovered_rps > 0  # RTX PRO 6000 alone leaves the code tenant unserved
    assert all(mixed.score < z.score for z in singles)
    assert all(mixed.cost_usd_h < z.cost_usd_h for z in singles if z.uncovered_rps == 0)
    assert PooledModel(s, mix=False)(sites, 0.5).score == min(z.score for z in singles)
    z = s.search(0.5, size=PooledModel(s, mix=True))  # the site search with it finds a mixed placement too
    assert set(z.hardware) == {"h100", "rtx-pro-6000"} and z.score <= mixed.score + 1e-9


def test_where_one_hardware_is_best_nothing_changes() -> None:
    """At the demand's own prices ($2.00/h for an RTX PRO 6000, about half an H100's capacity) H100s are the
    cheapest everywhere: the search over hardware per site returns the single-hardware sizing unchanged."""
    s = mixed_screen(2.00)
    sites = list(range(len(s.cands)))
    for rho in (0.4, 0.5, 0.6):
        mixed, single = PooledModel(s, mix=True)(sites, rho), PooledModel(s, mix=False)(sites, rho)
        assert set(mixed.hardware) == {"h100"}
        assert (mixed.sites, mixed.hardware, mixed.replicas, mixed.score) == (
            single.sites, single.hardware, single.replicas, single.score)
        assert np.array_equal(mixed.load, single.load)
    a, b = s.search(0.5, size=PooledModel(s, mix=True)), s.search(0.5, size=PooledModel(s, mix=False))
    assert (a.sites, a.hardware, a.replicas, a.score) == (b.sites, b.hardware, b.replicas, b.score)


def test_merged_rows_size_as_each_flow_and_point_would() -> None:
    """The model merges (flow, point) rows that behave alike whatever hardware each site runs; sizing them one
    by one (reach with each site's own prefill, the nearest site in reach, groups of reach set and nearest)
    gives the same groups, loads and penalties."""
    raw = copy.deepcopy(MIXED)
    raw["tenants"].append({"name": "bank", "share": 0.2, "trace": "conv", "model": "llama-3.1-8b",
                           "continents": ["EU"], "jurisdictions": ["EU"]})
    raw["supply"]["candidates"]["cities"] = ["Frankfurt am Main", "Paris", "London", "Madrid", "Ashburn",
                                             "Helsinki"]
    raw["tenants"][0]["continents"] = ["EU", "NA"]
    d = parse_demand(raw)
    cities = load_cities()
    s = Screen(d, build_traffic(d, cities, d.verify.window_s), candidate_sites(d, cities))
    pm = PooledModel(s, mix=True)
    rng = np.random.default_rng(7)
    for _ in range(6):
        S = np.sort(rng.choice(len(s.cands), size=int(rng.integers(2, len(s.cands) + 1)), replace=False))
        hw = rng.choice(pm.options, size=len(S))
        jr = int(hw[0])
        z = pm._size(_Open(pm, S), hw, 0.5, jr)
        n, bits = len(S), 1 << np.arange(len(S))
        groups: dict[tuple[int, int], np.ndarray] = {}
        load = np.zeros((n, s.traffic.rate.shape[2]))
        uncovered = unprotected = 0.0
        for members, allowed in s.classes:
            for f in members:
                pts = np.flatnonzero(s.peak[f] > 0)
                r = np.where(allowed[S][None, :], s.rtt[np.ix_(pts, S)], np.inf)
                reach = r + s.pf95[f, hw][None, :] <= s.slo_net
                mask = reach.astype(np.int64) @ bits
                nearest = np.argmin(np.where(reach, r, np.inf), axis=1)
                uncovered += float(s.peak[f, pts][mask == 0].sum())
                unprotected += float(s.peak[f, pts][(mask != 0) & ((mask & (mask - 1)) == 0)].sum())
                for i in np.flatnonzero(mask):
                    key = (int(mask[i]), int(nearest[i]))
                    groups[key] = groups.get(key, 0.0) + s.traffic.rate[f, pts[i]] * s.c[f, jr]
                    load[nearest[i]] += s.traffic.rate[f, pts[i]]
        cap = s.cands.max_devices[S, hw] // s.gpus[hw]
        reps, _ = _cover(groups, n, 0.5, cap, pm._unit[jr][0, hw], s.price[hw])
        kept = np.flatnonzero(reps > 0)
        assert z.sites == tuple(int(S[k]) for k in kept)
        assert [sum(x.values()) for x in z.replicas] == reps[kept].tolist()
        assert z.uncovered_rps == pytest.approx(uncovered) and z.unprotected_rps == pytest.approx(unprotected)
        assert np.allclose(z.load, load[kept])


def test_hardware_per_site_is_off_unless_asked_for() -> None:
    """`aigrid plan` sizes one hardware per pool unless the demand sets `supply.mix_hardware`: on the global
    example the mixed proposals refined to dearer plans (docs/planning.md)."""
    s = mixed_screen(1.00)
    sites = list(range(len(s.cands)))
    assert not s.demand.supply.mix_hardware and not PooledModel(s).mix
    assert set(PooledModel(s)(sites, 0.5).hardware) == {"h100"}


def test_check_loads_are_the_pooled_load_at_each_hour_and_failure() -> None:
    """PooledModel.check_loads (scripts/plan_without.py --loads): two EU sites of one H100 each: with one down the
    other carries everything, twice the load of both up; the busiest check's load is the pooled utilisation; the
    hour matters, more replicas lower it, and a lone site's failure leaves its users nowhere (inf)."""
    s = screen()
    pm = PooledModel(s)
    fra, par = s.cands.index("frankfurt-am-main-de"), s.cands.index("paris-fr")
    h100 = s.hw.index("h100")
    model = s.models[0]
    reps = [{model: 1}, {model: 1}]
    checks: list[tuple[int, int | None]] = [(h, k) for h in range(24) for k in (None, 0, 1)]
    loads = pm.check_loads([fra, par], [h100, h100], reps, checks)
    by = dict(zip(checks, loads, strict=True))
    busiest = max(range(24), key=lambda h: by[(h, None)])
    assert by[(busiest, None)] > 0
    assert by[(busiest, 0)] == pytest.approx(2 * by[(busiest, None)]) == pytest.approx(by[(busiest, 1)])
    assert max(loads) == pytest.approx(pm.utilisation([fra, par], [h100, h100], reps))
    assert min(by[(h, None)] for h in range(24)) < by[(busiest, None)]
    assert pm.check_loads([fra, par], [h100, h100], [{model: 2}, {model: 1}], [(busiest, 1)])[0] < by[(busiest, 1)]
    assert pm.check_loads([fra], [h100], [{model: 1}], [(busiest, None), (busiest, 0)])[1] == float("inf")
    # the caller's site order is kept: the same sites listed the other way round give the same loads per site
    assert pm.check_loads([par, fra], [h100, h100], reps, [(busiest, 1)]) == pytest.approx([by[(busiest, 0)]])
