"""Properties of the core under tenant rules (hypothesis): generated tenants, allowed sites, jurisdictions,
exclusions (endpoints already tried) and sessions, on generated grids. Whatever the policy:
- no ranked candidate is outside the request's allowed sites or jurisdictions, or already tried;
- every endpoint is ranked or rejected, never both, never lost; a scope rejection names its filter;
- narrowing the scope (fewer sites, one more exclusion) never adds a candidate;
- a session or prefix owned by an eligible endpoint marks exactly that endpoint warm."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.scheduler import schedule
from aigrid.core.types import GeoPoint, RequestInfo
from tests.core.grid import SITES
from tests.core.test_properties import build, grids
from tests.core.test_properties import view as _view

SITE_IDS = sorted(SITES)
JURISDICTIONS = sorted({s.jurisdiction for s in SITES.values()})

scoped = st.fixed_dictionaries({
    "tenant": st.sampled_from(["default", "eu-bank", "acme", "school"]),
    "model": st.sampled_from(["small", "big", "fam", "auto"]),
    "allowed_sites": st.none() | st.frozensets(st.sampled_from(SITE_IDS + ["zzz"]), max_size=4),
    "allowed_jurisdictions": st.none() | st.frozensets(st.sampled_from(JURISDICTIONS + ["CH"]), max_size=3),
    "session": st.none() | st.sampled_from(["s:alice", "s:bob"]),
    "prefix_hash": st.none() | st.sampled_from(["a", "b"]),
    "client_location": st.none() | st.builds(GeoPoint, st.floats(-90, 90), st.floats(-180, 180)),
    "prompt_tokens": st.integers(0, 20_000),
})


@settings(max_examples=300, deadline=None)
@given(grid=grids, asked=scoped, policy=st.sampled_from(sorted(BUILTIN_POLICIES)), seed=st.integers(0, 2**32),
       excluded_idx=st.frozensets(st.integers(0, 7), max_size=3), owners=st.dictionaries(
           st.sampled_from(["s:alice", "s:bob", "a", "b"]), st.integers(0, 7), max_size=4),
       narrower=st.frozensets(st.sampled_from(SITE_IDS), max_size=3))
def test_scopes_are_never_widened(grid: list, asked: dict, policy: str, seed: int, excluded_idx: frozenset[int],
                                  owners: dict[str, int], narrower: frozenset[str]) -> None:
    eps, sts = build(grid)
    ids = [e.id for e in eps]
    exclude = frozenset(ids[i] for i in excluded_idx if i < len(ids))
    owner_map = {k: ids[i] for k, i in owners.items() if i < len(ids)}
    v = _view(eps, sts, owner_map)
    request = RequestInfo(id="r", exclude_endpoints=exclude, **asked)
    d = schedule(request, v, BUILTIN_POLICIES[policy], random.Random(seed))

    ranked = [c.endpoint_id for c in d.ranked]
    assert sorted(ranked + [r.endpoint_id for r in d.rejected]) == sorted(ids)
    by_id = {e.id: e for e in eps}
    for c in d.ranked:
        e = by_id[c.endpoint_id]
        assert c.endpoint_id not in exclude
        assert request.allowed_sites is None or e.site_id in request.allowed_sites
        assert request.allowed_jurisdictions is None or c.jurisdiction in request.allowed_jurisdictions
        warm_keys = [k for k in (request.prefix_hash, request.session) if k is not None]
        assert c.prediction.warm == any(owner_map.get(k) == c.endpoint_id for k in warm_keys)
    for r in d.rejected:
        e = by_id[r.endpoint_id]
        if r.filter == "retry":
            assert r.endpoint_id in exclude
        if r.filter == "tenant":
            assert request.allowed_sites is not None and e.site_id not in request.allowed_sites

    # narrowing the scope never adds a candidate
    sites = narrower if request.allowed_sites is None else request.allowed_sites & narrower
    tighter = RequestInfo(id="r", exclude_endpoints=exclude | frozenset(ids[:1]),
                          **{**asked, "allowed_sites": sites})
    d2 = schedule(tighter, v, BUILTIN_POLICIES[policy], random.Random(seed))
    assert {c.endpoint_id for c in d2.ranked} <= set(ranked) - set(ids[:1])
