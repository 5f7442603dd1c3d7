"""The SLO-gated picker: a predicted SLO miss is never outvoted by the other axes."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from aigrid.core.picker import SloPicker, meets_slo
from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.types import Candidate, Prediction

POLICY = BUILTIN_POLICIES["balanced"]  # SLO 2,000 ms


def cand(name: str, total: float, p50_ms: float, spread: float = 1.5) -> Candidate:
    return Candidate(name, name, "EU", "m", {}, total, Prediction(10.0, p50_ms - 10.0, 0.0, spread=spread), 0.0)


def test_a_high_score_that_misses_the_slo_loses_to_a_lower_one_that_meets_it() -> None:
    near_but_late = cand("near", 0.9, 1500.0)   # p90 = 10 + 1490 x 1.5 = 2,245 ms > SLO
    far_in_time = cand("far", 0.6, 400.0)
    ranked = SloPicker().pick([near_but_late, far_in_time], POLICY, random.Random(0))
    assert [c.endpoint_id for c in ranked] == ["far", "near"]


def test_a_tpot_slo_when_the_policy_sets_one() -> None:
    from dataclasses import replace
    slow = Candidate("slow", "slow", "EU", "m", {}, 0.9, Prediction(10.0, 50.0, 0.0, tpot_ms=150.0), 0.0)
    fast = Candidate("fast", "fast", "EU", "m", {}, 0.5, Prediction(10.0, 50.0, 0.0, tpot_ms=40.0), 0.0)
    assert SloPicker().pick([slow, fast], POLICY, random.Random(0))[0].endpoint_id == "slow"
    strict = replace(POLICY, tpot_slo_ms=100.0)
    assert SloPicker().pick([slow, fast], strict, random.Random(0))[0].endpoint_id == "fast"


def test_when_none_meets_the_slo_the_smallest_shortfall_wins() -> None:
    ranked = SloPicker().pick([cand("a", 0.9, 5000.0), cand("b", 0.1, 3000.0)], POLICY, random.Random(0))
    assert ranked[0].endpoint_id == "b"


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(1, 10_000), st.floats(1, 3)), min_size=1, max_size=12),
       st.integers(0, 10))
def test_the_choice_meets_the_slo_whenever_any_candidate_does(rows: list[tuple[float, float, float]],
                                                              seed: int) -> None:
    cands = [cand(f"e{i}", t, p, s) for i, (t, p, s) in enumerate(rows)]
    ranked = SloPicker().pick(cands, POLICY, random.Random(seed))
    assert sorted(c.endpoint_id for c in ranked) == sorted(c.endpoint_id for c in cands)  # nothing lost
    meets = [c for c in cands if c.prediction.ttft_p90_ms <= POLICY.ttft_slo_ms]
    if meets:
        assert ranked[0].prediction.ttft_p90_ms <= POLICY.ttft_slo_ms
        assert ranked[0].total >= max(c.total for c in meets) - POLICY.tie_tolerance
    else:
        assert ranked[0].prediction.ttft_p90_ms <= min(c.prediction.ttft_p90_ms for c in cands) * (
            1 + POLICY.tie_tolerance)


@given(st.floats(0, 1e4), st.floats(0, 1e5), st.floats(0, 1e5), st.floats(0.5, 5))
def test_the_written_out_formulas_equal_the_predictions_properties(rtt: float, queue: float, prefill: float,
                                                                   spread: float) -> None:
    from aigrid.core.context import Context
    from aigrid.core.picker import p90_ms
    from aigrid.core.scorers.ttft import TtftScorer
    from aigrid.core.types import UNKNOWN_STATE, Endpoint, GridView, RequestInfo
    p = Prediction(rtt, queue, prefill, spread=spread)
    assert p90_ms(Candidate("e", "s", "EU", "m", {}, 0.5, p, 0.0)) == p.ttft_p90_ms
    ctx = Context(RequestInfo("r", "m"), GridView({}, (), {}), POLICY)
    assert TtftScorer().score(ctx, Endpoint("e", "s", "m", "f", 1.0), UNKNOWN_STATE, p)[2] == (p.ttft_ms,)


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(1, 4000), st.floats(1, 3), st.none() | st.floats(1, 300)),
                min_size=1, max_size=12), st.none() | st.floats(10, 200), st.integers(0, 10))
def test_the_picks_gate_is_meets_slo(rows: list[tuple[float, float, float, float | None]], tpot_slo: float | None,
                                     seed: int) -> None:
    """SloPicker ranks first exactly the candidates meets_slo passes (the one gate, which the reason's explanation
    reads too: scheduler.py), TTFT and TPOT, whenever any passes."""
    from dataclasses import replace
    policy = replace(POLICY, tpot_slo_ms=tpot_slo)
    cands = [Candidate(f"e{i}", f"e{i}", "EU", "m", {}, t, Prediction(10.0, p - 10.0, 0.0, spread=s, tpot_ms=tpot),
                       0.0) for i, (t, p, s, tpot) in enumerate(rows)]
    ranked = SloPicker().pick(cands, policy, random.Random(seed))
    passing = {c.endpoint_id for c in cands if meets_slo(c, policy)}
    if passing:
        assert {c.endpoint_id for c in ranked[:len(passing)]} == passing
