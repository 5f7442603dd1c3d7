"""Axis 5, proximity and health: near sites with few recent errors score high.

distance part: 1 / (1 + km / 2000) (1.0 next door, 0.5 at 2,000 km, ~0.2 across an ocean); unknown client
location scores 1. health part: 1 - recent error rate, halved while the circuit breaker is half-open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import Context, Score, clamp01
from aigrid.core.types import Circuit, Endpoint, EndpointState, Prediction

HALF_DISTANCE_KM = 2000.0
CIRCUIT_HALF_OPEN: Final = Circuit.HALF_OPEN
"""Circuit.HALF_OPEN, read once: compiled, `Circuit.HALF_OPEN` is a lookup on the enum's class (its metaclass), which costs about
twenty times an attribute of a record, once per candidate of every decision."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class ProximityScorer:
    axis: str = "proximity"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        dist = prediction.distance_km
        near = 1.0 if dist is None else 1.0 / (1.0 + dist / HALF_DISTANCE_KM)
        health = clamp01(1.0 - state.error_rate)
        if state.circuit is CIRCUIT_HALF_OPEN:
            health *= 0.5
        if dist is None:
            return clamp01(near * health), "distance unknown, health {:.2f}", (health,)
        return clamp01(near * health), "{:.0f} km, health {:.2f}", (dist, health)
