"""Pickers turn scored candidates into a ranking.

TieBreakPicker: rank by weighted total; among near-equals (within the policy's tie tolerance of the best),
pick at random with the injected rng, so that gateways acting on the same stale telemetry do not all herd
onto one site.

SloPicker (the default): a predicted SLO miss is never outvoted by proximity, price or headroom. The
candidates whose calibrated p90 TTFT meets the policy's SLO come first, ranked by weighted total as above;
when none meets it, the smallest predicted shortfall (lowest p90) wins. The rest follow by p90 (they are the
failover order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.types import Candidate, Policy, Rng


def _tie_break(ranked: list[Candidate], near: Callable[[Candidate], bool], rng: Rng) -> list[Candidate]:
    """Move a random one of the leading near-equals to the front."""
    close = [c for c in ranked if near(c)]
    if len(close) < 2:
        return ranked
    chosen = close[min(int(rng.random() * len(close)), len(close) - 1)]
    return [chosen, *[c for c in ranked if c is not chosen]]


def p90_ms(c: Candidate) -> float:
    """`c.prediction.ttft_p90_ms` written out: compiled, four field reads instead of the property's Python
    frame (once or twice per candidate of every decision); the same operations, so the same float."""
    p = c.prediction
    return p.rtt_ms + (p.queue_ms + p.prefill_ms) * p.spread


def by_total(candidates: Sequence[Candidate], tolerance: float, rng: Rng) -> list[Candidate]:
    ranked = sorted(candidates, key=lambda c: (-c.total, c.endpoint_id))
    if len(ranked) < 2:
        return ranked
    best = ranked[0].total
    return _tie_break(ranked, lambda c: best - c.total <= tolerance, rng)


def by_p90(candidates: Sequence[Candidate], tolerance: float, rng: Rng) -> list[Candidate]:
    ranked = sorted(candidates, key=lambda c: (p90_ms(c), c.endpoint_id))
    if len(ranked) < 2:
        return ranked
    best = p90_ms(ranked[0])
    return _tie_break(ranked, lambda c: p90_ms(c) <= best * (1.0 + tolerance), rng)


def _tpot_ok(c: Candidate, policy: Policy) -> bool:
    limit, tpot = policy.tpot_slo_ms, c.prediction.tpot_ms
    return limit is None or tpot is None or tpot <= limit


def meets_slo(c: Candidate, policy: Policy) -> bool:
    """SloPicker's gate: the candidate's p90 TTFT meets the policy's SLO and its TPOT meets the TPOT SLO where the
    policy sets one (SloPicker.pick's test, and the reason's explanation's: scheduler.py)."""
    return p90_ms(c) <= policy.ttft_slo_ms and _tpot_ok(c, policy)


TIE_BREAK = "weighted-random-tiebreak"
"""TieBreakPicker's name (the registry's key): the reason names the tie tolerance for a choice it made."""
SLO_GATE = "slo-gate"
"""SloPicker's name (the registry's key): the reason names its gate or its p90 ranking where they chose."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class TieBreakPicker:
    name: str = TIE_BREAK

    def pick(self, candidates: Sequence[Candidate], policy: Policy, rng: Rng) -> tuple[Candidate, ...]:
        return tuple(by_total(candidates, policy.tie_tolerance, rng))


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class SloPicker:
    name: str = SLO_GATE

    def pick(self, candidates: Sequence[Candidate], policy: Policy, rng: Rng) -> tuple[Candidate, ...]:
        meets: list[Candidate] = []
        misses: list[Candidate] = []
        for c in candidates:  # one pass (`c not in meets` compared whole dataclasses, n^2 times)
            (meets if meets_slo(c, policy) else misses).append(c)
        if not meets:
            return tuple(by_p90(candidates, policy.tie_tolerance, rng))
        misses.sort(key=lambda c: (p90_ms(c), c.endpoint_id))
        return (*by_total(meets, policy.tie_tolerance, rng), *misses)
