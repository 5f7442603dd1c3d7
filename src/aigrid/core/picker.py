"""Picker: rank by weighted total; among near-equals (within the policy's tie tolerance of the best), pick
at random with the injected rng, so that gateways acting on the same stale telemetry do not all herd onto
one site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aigrid.core.types import Candidate, Policy, Rng


@dataclass(frozen=True, slots=True)
class TieBreakPicker:
    name: str = "weighted-random-tiebreak"

    def pick(self, candidates: Sequence[Candidate], policy: Policy, rng: Rng) -> tuple[Candidate, ...]:
        ranked = sorted(candidates, key=lambda c: (-c.total, c.endpoint_id))
        if len(ranked) < 2:
            return tuple(ranked)
        best = ranked[0].total
        near = [c for c in ranked if best - c.total <= policy.tie_tolerance]
        if len(near) < 2:
            return tuple(ranked)
        chosen = near[min(int(rng.random() * len(near)), len(near) - 1)]
        return (chosen, *(c for c in ranked if c is not chosen))
