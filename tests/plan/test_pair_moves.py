"""Two-site moves of refinement (plan/moves.py pair_moves, Verifier._pair_move): once every single-site move of a
passing placement has failed, two sites change together (drop one and grow another, both on cheaper hardware, one
replica fewer at one while another moves to cheaper hardware), screened by the pooled model before the simulator.
A fake backend stands in for the simulator: its verdict on a whole placement and check is written here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aigrid.plan.demand import Demand, DemandError, parse_demand
from aigrid.plan.moves import POOL_LIMIT, pair_moves, pool_utilisation, screened
from aigrid.plan.placement import Placement, PlannedSite, from_sizing
from aigrid.plan.planner import POOLED_RHOS, plan
from aigrid.plan.pooled import PooledModel
from aigrid.plan.runs import Job, Outcome
from aigrid.plan.screen import Screen, Sizing
from aigrid.plan.supply import candidate_sites
from aigrid.plan.traffic import Traffic, build_traffic
from aigrid.plan.verify import Verifier
from aigrid.sim.geography import load_cities
from aigrid.spec.load import read_yaml

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "examples" / "plan" / "small.yaml"
MODEL = "llama-3.1-8b"


def site(sid: str, hardware: str = "h100", n: int = 1) -> PlannedSite:
    price = {"h100": 2.5, "rtx-pro-6000": 1.4, "l40s": 0.9}[hardware]
    return PlannedSite(sid, sid, 50.0, 8.0, "DE", "EU", hardware, 1, price, ((MODEL, n),))


TWO = Placement("t", (site("fra"), site("iad")))


class Fake:
    """Every tenant 100% within the SLO and each site 90% used, except where `fails(hardware, check)` says the
    placement misses that check (then 50%)."""

    name = "fake"

    def __init__(self, fails: Callable[[list[dict[str, Any]], dict[str, Any]], bool]) -> None:
        self.fails = fails
        self.scenarios: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []

    def map(self, jobs: list[Job], done: Callable[[], None] | None = None) -> list[Outcome]:
        out = []
        for j in jobs:
            sc = j["scenario"]
            self.scenarios.append(sc)
            self.checks.append(j["check"])
            share = 0.5 if self.fails(sc["sites"], j["check"]) else 1.0
            out.append({"check": j["check"], "requests": 100, "within": int(100 * share), "rejected": 0,
                        "residency_violations": 0, "ttft_p99_ms": 500.0, "tpot_p99_ms": 50.0, "tpot_max_ms": 60.0,
                        "tenants": {t["name"].split("/")[0]: {"requests": 10, "within": int(10 * share),
                                                              "attainment": share} for t in sc["tenants"]},
                        "sites": {s["id"]: {"served": 10, "bad": 0 if share == 1.0 else 10, "slow_ttft": 0,
                                            "slow_tpot": 0, "utilization": 0.9} for s in sc["sites"]}})
            if done is not None:
                done()
        return out

    def close(self) -> None:
        pass


def hw_count(sites: list[dict[str, Any]], hardware: str) -> int:
    return sum(s["replicas"] for s in sites if s["hardware"] == hardware)


def small(**verify: int) -> tuple[Demand, Traffic]:
    raw = read_yaml(SMALL, DemandError, "demand file")
    assert isinstance(raw, dict)
    raw["supply"]["hardware"]["rtx-pro-6000"] = {"usd_per_hour": 1.40}
    raw["verify"] = {**raw["verify"], **verify}
    d = parse_demand(raw, str(SMALL), base=SMALL.parent)
    return d, build_traffic(d, load_cities(), d.verify.window_s)


def one_rtx_or_any_l40s(sites: list[dict[str, Any]], check: dict[str, Any]) -> bool:
    """Every single-site move of TWO fails (one RTX PRO 6000, or an L40S); two RTX PRO 6000 pass."""
    return hw_count(sites, "l40s") > 0 or hw_count(sites, "rtx-pro-6000") == 1


def test_two_sites_move_together_when_every_single_site_move_fails() -> None:
    d, t = small()
    fake = Fake(one_rtx_or_any_l40s)
    planned: list[int] = []
    done: list[None] = []
    v = Verifier(d, t, fake, on_run=lambda: done.append(None), on_plan=planned.append)
    out = v.refine(TWO, {}, moves=True)
    assert out.passed
    assert [s.hardware for s in out.placement.sites] == ["rtx-pro-6000", "rtx-pro-6000"]
    assert out.placement.usd_per_hour == pytest.approx(2.80)  # was $5.00
    # the single-site candidates ran first (each site on each cheaper option), then the two-site ones
    first_pair = next(i for i, sc in enumerate(fake.scenarios) if hw_count(sc["sites"], "h100") == 0)
    singles = {tuple(s["hardware"] for s in sc["sites"]) for sc in fake.scenarios[:first_pair]
               if hw_count(sc["sites"], "h100") == 1}
    assert singles == {("rtx-pro-6000", "h100"), ("l40s", "h100"), ("h100", "rtx-pro-6000"), ("h100", "l40s")}
    # the kept move passed every check (one peak hour: all up, fra down, iad down) on the moved placement
    assert len(out.outcomes) == 3 and all(o["sites"].keys() == {"fra", "iad"} for o in out.outcomes)
    assert sum(planned) == len(done) == v.runs == len(fake.scenarios)  # the progress bar counts every run
    # without two-site moves (verify.pair_trials 0, or no moves at all) the placement stays as it was
    for pairs in ({"pair_trials": 0}, {"move_trials": 0}):
        d0, t0 = small(**pairs)
        assert Verifier(d0, t0, Fake(one_rtx_or_any_l40s)).refine(TWO, {}, moves=True).placement.key() == TWO.key()


def test_a_two_site_move_that_fails_a_single_site_failure_check_is_refused() -> None:
    """Two RTX PRO 6000 pass at the peak with every site up, and miss with fra down: the move is not kept."""
    d, t = small()

    def fails(sites: list[dict[str, Any]], check: dict[str, Any]) -> bool:
        if hw_count(sites, "h100") == 2:
            return False
        return hw_count(sites, "rtx-pro-6000") != 2 or check["failed"] == "fra"

    fake = Fake(fails)
    out = Verifier(d, t, fake).refine(TWO, {}, moves=True)
    assert out.passed and out.placement.key() == TWO.key()
    pair = [c for sc, c in zip(fake.scenarios, fake.checks, strict=True) if hw_count(sc["sites"], "rtx-pro-6000") == 2]
    # it ran: the peak (passed) alone, then the failure checks together (fra down failed); it was not kept
    assert [c["failed"] for c in pair] == [None, "fra", "iad"]


def test_dropping_a_site_checks_the_rest_with_each_of_its_own_sites_down() -> None:
    """fra (2 H100) cannot lose a replica, no site may go to cheaper hardware, and no placement below 3 H100
    passes: dropping fra and growing cdg is the move, and it is checked without fra."""
    d, t = small(pair_trials=20)
    three = Placement("t", (site("fra", n=2), site("cdg"), site("iad")))

    def fails(sites: list[dict[str, Any]], check: dict[str, Any]) -> bool:
        fra = [s["replicas"] for s in sites if s["id"] == "fra"]
        return hw_count(sites, "h100") < sum(s["replicas"] for s in sites) or hw_count(sites, "h100") < 3 \
            or (bool(fra) and fra[0] < 2)

    fake = Fake(fails)
    out = Verifier(d, t, fake).refine(three, {}, moves=True)
    assert out.passed
    assert {s.id: s.devices for s in out.placement.sites} == {"cdg": 2, "iad": 1}  # $7.50, was $10.00
    assert sorted(str(o["check"]["failed"]) for o in out.outcomes) == ["None", "cdg", "iad"]
    kept = [c for sc, c in zip(fake.scenarios, fake.checks, strict=True)
            if {s["id"]: s["replicas"] for s in sc["sites"]} == {"cdg": 2, "iad": 1}]
    assert {c["failed"] for c in kept} == {None, "cdg", "iad"}  # no "fra down" check: fra is gone


def test_the_moves_stay_within_pair_trials() -> None:
    d, t = small(pair_trials=2)
    fake = Fake(lambda sites, check: hw_count(sites, "h100") < 2)  # every move fails
    out = Verifier(d, t, fake).refine(TWO, {}, moves=True)
    assert out.placement.key() == TWO.key()
    pairs = {tuple(s["hardware"] for s in sc["sites"]) for sc in fake.scenarios if hw_count(sc["sites"], "h100") == 0}
    assert len(pairs) == 2  # of the four two-site candidates (both sites on RTX PRO 6000 or L40S)
    assert len(pair_moves(d, t, TWO)) == 4


def test_pair_moves_are_cheaper_and_keep_each_sites_limit() -> None:
    d, t = small(pair_trials=20)
    three = Placement("t", (site("fra", n=2), site("cdg"), site("iad")))
    moves = pair_moves(d, t, three)
    assert moves and all(p.usd_per_hour < three.usd_per_hour for _, p in moves)
    assert len({p.key() for _, p in moves}) == len(moves)
    whats = [w for w, _ in moves]
    assert "drop fra, grow cdg" in whats and "drop fra, grow cdg and iad" not in whats  # $10.00: not cheaper
    assert any(w.startswith("fra one replica fewer, cdg on ") for w in whats)
    assert any(w.startswith("cdg on 1 x rtx-pro-6000 and iad on ") for w in whats)
    # small.yaml allows 8 devices a site: a site at 8 is not grown
    full = Placement("t", (site("fra", n=8), site("cdg", n=8), site("iad", n=8)))
    assert not [w for w, _ in pair_moves(d, t, full) if "grow" in w]


def test_the_screen_lets_through_the_coolest_candidates_within_its_limit_first() -> None:
    a, b, c, e = (Placement(x, ()) for x in "abce")
    usd = {"a": 1.0, "b": 2.0, "c": 3.0, "e": 0.5}
    util = {"a": 0.55, "b": 0.45, "c": 0.45, "e": 0.7}
    rows = [("a", a), ("b", b), ("c", c), ("e", e)]
    priced = [(w, Placement(p.label, (site(p.label, "l40s", int(usd[w] / 0.5)),))) for w, p in rows]
    got = screened(priced, lambda p: util[p.label], limit=0.6)
    assert [w for w, _, _ in got] == ["b", "c", "a"]  # e is over the limit: never simulated
    got = screened(priced, lambda p: None if p.label == "a" else util[p.label], limit=0.6)
    assert [w for w, _, _ in got] == ["b", "c", "a"]  # a unjudged: after the judged ones
    assert [w for w, _, _ in screened(priced, None)] == ["e", "a", "b", "c"]  # no screen: cheapest first
    assert POOL_LIMIT == max(POOLED_RHOS)  # the hottest pool the screen proposes


def pooled_small() -> tuple[Demand, Screen, PooledModel]:
    d, t = small()
    cities = load_cities()
    s = Screen(d, t, candidate_sites(d, cities))
    return d, s, PooledModel(s)


def test_the_pooled_utilisation_is_what_the_pooled_sizing_sized_to() -> None:
    """A pooled sizing at rho meets every constraint at rho: its utilisation is at most rho, and removing a
    replica from its largest site makes it hotter; a placement that leaves the EU-only tenant one site (it
    cannot survive that site's failure) is inf, so the screen never sends such a move to the simulator."""
    d, s, pm = pooled_small()
    sites = list(range(len(s.cands)))
    for rho in (0.4, 0.5):
        z = pm(sites, rho)
        hw = [s.hw.index(h) for h in z.hardware]
        u = pm.utilisation(list(z.sites), hw, list(z.replicas))
        assert 0 < u <= rho + 1e-9
        k = int(np.argmax([sum(r.values()) for r in z.replicas]))
        if sum(z.replicas[k].values()) > 1:
            fewer = [dict(r) for r in z.replicas]
            fewer[k] = {m: n - 1 for m, n in fewer[k].items()}
            assert pm.utilisation(list(z.sites), hw, fewer) > u
    fra, iad = s.cands.index("frankfurt-am-main-de"), s.cands.index("ashburn-us")
    h100 = s.hw.index("h100")
    assert pm.utilisation([fra, iad], [h100, h100], [{MODEL: 4}, {MODEL: 4}]) == float("inf")
    # the planner's placements map onto the screen's candidates; a hand-written site does not (None)
    z = Sizing((fra, iad), ("h100", "h100"), ({MODEL: 4}, {MODEL: 4}), 0.0, 0.0, np.zeros((2, 24)), 0.0, 0.0)
    assert pool_utilisation(pm, from_sizing("t", d, s.cands, z)) == float("inf")
    assert pool_utilisation(pm, TWO) is None


def test_pair_trials_out_of_range_name_the_field() -> None:
    with pytest.raises(DemandError, match=r"verify\.pair_trials: Input should be greater than or equal to 0"):
        small(pair_trials=-1)
    with pytest.raises(DemandError, match=r"verify\.pair_trials: Input should be less than or equal to 100"):
        small(pair_trials=101)


def test_the_planner_screens_the_two_site_moves_with_its_pooled_model() -> None:
    """plan() hands the verifier the pooled model's screen: where every move of small.yaml's proposal fails,
    the two-site candidates simulated are exactly those the pooled model puts at most POOL_LIMIT utilised, and
    some are left out (here all 12 are; without the screen all would run: pair_trials 20 is more than there are)."""
    d, t = small(pair_trials=20)
    sites_at_first: list[int] = []

    def fails(sites: list[dict[str, Any]], check: dict[str, Any]) -> bool:
        """Anything off H100, or with a site dropped, misses."""
        if not sites_at_first:
            sites_at_first.append(len(sites))
        return hw_count(sites, "h100") < sum(s["replicas"] for s in sites) or len(sites) < sites_at_first[0]

    fake = Fake(fails)
    base = plan(d, backend=fake).proposals[0].placement
    pm = PooledModel(Screen(d, t, candidate_sites(d, load_cities())), mix=d.supply.mix_hardware)
    found = [p for _, p in pair_moves(d, t, base)]

    def key(sites: list[tuple[str, str, int]]) -> tuple[tuple[str, str, int], ...]:
        return tuple(sorted(sites))

    by_key = {key([(s.id, s.hardware, sum(n for _, n in s.replicas)) for s in p.sites]): p for p in found}
    ran = {key([(s["id"], s["hardware"], s["replicas"]) for s in sc["sites"]]) for sc in fake.scenarios}
    simulated = {k for k in by_key if k in ran}
    within = {k for k, p in by_key.items() if (u := pool_utilisation(pm, p)) is not None and u <= POOL_LIMIT}
    assert found and simulated == within and len(within) < len(found)
