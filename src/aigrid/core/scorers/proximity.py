"""Axis 5, proximity and health: sites with few recent errors score high; distance is in the TTFT axis.

score: 1 - recent error rate, halved while the circuit breaker is half-open. The client's distance to the
site is shown in the note but not scored: it is already in the predicted TTFT (the round trip, measured or
modelled from that distance by core/geo.py), so scoring it again counted distance twice. Until 7 Dec 2026
the score was also multiplied by 1 / (1 + km / 2000): at the balanced policy's weight 0.15 a site next
door got 0.12 more of the total than one across an ocean, which bought a saturated near site about half a
second of queue over an idle far one (docs/routing.md, "Near or fast").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import Context, Score, clamp01
from aigrid.core.types import Circuit, Endpoint, EndpointState, Prediction

CIRCUIT_HALF_OPEN: Final = Circuit.HALF_OPEN
"""Circuit.HALF_OPEN, read once: compiled, `Circuit.HALF_OPEN` is a lookup on the enum's class (its metaclass), which costs about
twenty times an attribute of a record, once per candidate of every decision."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class ProximityScorer:
    axis: str = "proximity"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        health = clamp01(1.0 - state.error_rate)
        if state.circuit is CIRCUIT_HALF_OPEN:
            health *= 0.5
        dist = prediction.distance_km
        if dist is None:
            return health, "distance unknown, health {:.2f}", (health,)
        return health, "{:.0f} km (in the rtt), health {:.2f}", (dist, health)
