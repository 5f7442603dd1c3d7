"""Properties that must hold for every grid and request (hypothesis)."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aigrid.core.baselines import BASELINES, HARD_FILTERS
from aigrid.core.geo import distance_km
from aigrid.core.plugins import Context
from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.scheduler import Scheduler, schedule
from aigrid.core.types import AXES, Circuit, EndpointState, GeoPoint, Policy, RequestInfo
from tests.core.grid import SITES, endpoint, view

JURISDICTIONS = sorted({s.jurisdiction for s in SITES.values()})

states = st.fixed_dictionaries(dict(  # the other fields keep their defaults (st.builds would draw every
    healthy=st.booleans(),               # field of a NamedTuple)
    circuit=st.sampled_from(list(Circuit)),
    running=st.integers(0, 8), waiting=st.integers(0, 40),
    kv_usage=st.none() | st.floats(0, 1),
    ttft_s=st.none() | st.floats(0, 30),
    error_rate=st.floats(0, 1),
    power_w=st.none() | st.floats(0, 1000),
)).map(lambda fields: EndpointState(**fields))
requests = st.builds(
    RequestInfo,
    id=st.just("r"), model=st.sampled_from(["small", "big", "fam", "auto", "other"]),
    prompt_tokens=st.integers(0, 100_000), max_output_tokens=st.integers(1, 8000),
    client_location=st.none() | st.builds(GeoPoint, st.floats(-90, 90), st.floats(-180, 180)),
    allowed_jurisdictions=st.none() | st.frozensets(st.sampled_from(JURISDICTIONS + ["CH"]), max_size=3),
    prefix_hash=st.none() | st.sampled_from(["a", "b"]),
    allowed_sites=st.none() | st.frozensets(st.sampled_from(sorted(SITES)), max_size=3),
    exclude_endpoints=st.frozensets(st.sampled_from([f"{s}-{m}-{i}" for s in SITES for m in ("small", "big")
                                                     for i in range(8)]), max_size=4),
    quality=st.none() | st.dictionaries(st.sampled_from(["small", "big"]), st.floats(0, 1), max_size=2),
)
grids = st.lists(st.tuples(st.sampled_from(sorted(SITES)), st.sampled_from(["small", "big"]), states),
                 min_size=0, max_size=8)


def build(grid: list) -> tuple:
    eps, sts = [], {}
    for i, (site, model, state) in enumerate(grid):
        e = endpoint(site, model)
        e = type(e)(**{**{f: getattr(e, f) for f in e.__dataclass_fields__}, "id": f"{e.id}-{i}"})
        eps.append(e)
        sts[e.id] = state
    return tuple(eps), sts


@settings(max_examples=300, deadline=None)
@given(grid=grids, request=requests, policy=st.sampled_from(sorted(BUILTIN_POLICIES)), seed=st.integers(0, 2**32))
def test_invariants(grid: list, request: RequestInfo, policy: str, seed: int) -> None:
    eps, sts = build(grid)
    v = view(eps, sts, {"a": eps[0].id} if eps else {})
    d = schedule(request, v, BUILTIN_POLICIES[policy], random.Random(seed))
    # every endpoint is either ranked or rejected, never both, never lost
    assert sorted([c.endpoint_id for c in d.ranked] + [r.endpoint_id for r in d.rejected]) == sorted(e.id for e in eps)
    for c in d.ranked:
        state = sts[c.endpoint_id]
        assert state.healthy and state.circuit is not Circuit.OPEN          # unhealthy never chosen
        if request.allowed_jurisdictions is not None:                         # residency never violated
            assert c.jurisdiction in request.allowed_jurisdictions
        assert set(c.scores) == set(AXES) and all(0.0 <= s <= 1.0 for s in c.scores.values())
        assert 0.0 <= c.total <= 1.0 + 1e-9
        assert c.prediction.ttft_ms >= 0
    # a filter that says it does not apply to this request passes every endpoint (the scheduler skips it)
    ctx = Context(request, v, BUILTIN_POLICIES[policy])
    for f in HARD_FILTERS:
        assert f.applies(ctx) or all(f.check(ctx, e).ok for e in eps)
    # same inputs, same decision
    assert schedule(request, v, BUILTIN_POLICIES[policy], random.Random(seed)) == d


@settings(max_examples=200, deadline=None)
@given(grid=grids, request=requests, policy=st.sampled_from([*sorted(BUILTIN_POLICIES), *sorted(BASELINES)]),
       seed=st.integers(0, 2**32))
def test_given_distances_and_quiet_decisions_change_nothing(grid: list, request: RequestInfo, policy: str,
                                                             seed: int) -> None:
    """GridView.distances_km (the caller's own distance_km per endpoint) gives the same decision as the core
    computing each distance; Scheduler(explain=False) the same decision with an empty reason."""
    eps, sts = build(grid)
    v = view(eps, sts, {"a": eps[0].id} if eps else {})
    loc = request.client_location
    known = None if loc is None else {e.id: distance_km(loc, v.sites[e.site_id].location) for e in eps}
    given_view = dataclasses.replace(v, distances_km=known)
    if policy in BUILTIN_POLICIES:
        pol = BUILTIN_POLICIES[policy]
        before = schedule(request, v, pol, random.Random(seed))
        after = Scheduler(explain=False)(request, given_view, pol, random.Random(seed))
        assert after.reason == ""
        assert dataclasses.replace(after, reason=before.reason) == before
    else:
        router = BASELINES[policy]()
        before = router(request, v, Policy(policy, {}), random.Random(seed))
        assert BASELINES[policy]()(request, given_view, Policy(policy, {}), random.Random(seed)) == before
