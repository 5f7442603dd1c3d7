"""Baseline routers: same signature and hard filters as schedule(), each with its one simple rule."""

from __future__ import annotations

import random

from aigrid.core.baselines import Centralized, RoundRobin, eligible, least_loaded, lowest_latency, nearest
from aigrid.core.types import Circuit, EndpointState, Policy, RequestInfo
from tests.core.grid import CITIES, FOUR, endpoint, view

POLICY = Policy("baseline", {})


def req(**kw: object) -> RequestInfo:
    base: dict[str, object] = {"id": "r1", "model": "small", "prompt_tokens": 100,
                               "client_location": CITIES["frankfurt"]}
    base.update(kw)
    return RequestInfo(**base)  # type: ignore[arg-type]


def test_nearest_picks_the_closest_site() -> None:
    d = nearest()(req(), view(FOUR), POLICY, random.Random(0))
    assert d.chosen is not None and d.chosen.site_id == "fra"
    d = nearest()(req(client_location=CITIES["tokyo"]), view(FOUR), POLICY, random.Random(0))
    assert d.chosen is not None and d.chosen.site_id == "nrt"


def test_every_baseline_obeys_residency_health_and_model() -> None:
    states = {"fra-small": EndpointState(healthy=False), "iad-small": EndpointState(circuit=Circuit.OPEN)}
    grid = view((*FOUR, endpoint("nrt", "big")), states)
    request = req(allowed_jurisdictions=frozenset({"EU", "US", "BR"}))
    routers = [nearest(), least_loaded(), lowest_latency(), RoundRobin(), Centralized(frozenset({"gru", "fra"}))]
    for router in routers:
        for seed in range(5):
            d = router(request, grid, POLICY, random.Random(seed))
            assert d.chosen is not None and d.chosen.site_id == "gru", router
            assert {r.filter for r in d.rejected} >= {"residency", "health"}
            assert all(c.site_id == "gru" for c in d.ranked)


def test_no_eligible_endpoint_is_a_normal_decision() -> None:
    d = nearest()(req(allowed_jurisdictions=frozenset({"CH"})), view(FOUR), POLICY, random.Random(0))
    assert d.chosen is None and len(d.rejected) == 4 and "no eligible" in d.reason


def test_round_robin_cycles_with_explicit_state() -> None:
    rr, grid = RoundRobin(), view(FOUR)
    picks = [rr(req(), grid, POLICY, random.Random(0)).chosen.site_id for _ in range(8)]  # type: ignore[union-attr]
    assert picks[:4] == sorted(picks[:4]) and picks[:4] == picks[4:] and len(set(picks)) == 4
    assert rr.counter == 8 and RoundRobin().counter == 0


def test_least_loaded_and_lowest_latency_read_telemetry_only() -> None:
    states = {e.id: EndpointState(running=3, ttft_s=0.05) for e in FOUR}
    states["gru-small"] = EndpointState(running=0, ttft_s=0.9)
    grid = view(FOUR, states)
    assert least_loaded()(req(), grid, POLICY, random.Random(0)).chosen.site_id == "gru"  # type: ignore[union-attr]
    # Lowest recent latency ignores distance: all but gru measured 50 ms, ties broken by the rng.
    chosen = {lowest_latency()(req(), grid, POLICY, random.Random(s)).chosen.site_id for s in range(20)}  # type: ignore[union-attr]
    assert chosen == {"fra", "nrt", "iad"}
    # An endpoint never measured counts as 0 and is tried first, as LiteLLM does.
    states["gru-small"] = EndpointState()
    assert lowest_latency()(req(), view(FOUR, states), POLICY, random.Random(0)).chosen.site_id == "gru"  # type: ignore[union-attr]


def test_centralized_rejects_everything_outside_its_region() -> None:
    d = Centralized(frozenset({"iad"}))(req(), view(FOUR), POLICY, random.Random(0))
    assert d.chosen is not None and d.chosen.site_id == "iad"
    assert sum(r.filter == "centralized" for r in d.rejected) == 3


def test_same_seed_same_decision_and_eligible_split() -> None:
    grid = view(FOUR)
    a = [least_loaded()(req(), grid, POLICY, random.Random(3)).chosen for _ in range(3)]
    assert a[0] == a[1] == a[2]
    strict = Policy("baseline", {}, allow_family_fallback=False)
    ok, rejected = eligible(req(model="big"), grid, strict)
    assert ok == [] and {r.filter for r in rejected} == {"model"}
