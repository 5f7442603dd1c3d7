"""Axis 3, model affinity: how well the model fits, and whether the cache is warm here.

fit: 1.0 exact model (or "auto"/family request served by the family's smallest model that fits),
0.7 a larger model of the same family (a fallback that costs more), 0.4 a smaller one (may be worse).
Right-sized requests (RequestInfo.quality, core/right_size.py): 1.0 for the smallest model that meets the
quality target, 0.7 for a larger one (the quality filter has removed those that miss it).
warmth: 1.0 if this request's prompt prefix or session was last served here, else 0; 0 too while that
endpoint is past the affinity bound (core.predict.crowded_owners: its slot utilisation above 1.25x the mean
of its model's endpoints, plus one request), so one hot prefix cannot pile onto one engine.
score = 0.7 x fit + 0.3 x warmth.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.plugins import Context, Score
from aigrid.core.right_size import smallest_eligible_params
from aigrid.core.types import Endpoint, EndpointState, Prediction

FIT_WEIGHT = 0.7


def model_fit(ctx: Context, endpoint: Endpoint) -> float:
    if ctx.request.quality:
        smallest = smallest_eligible_params(ctx.request, ctx.view.models)
        return 1.0 if smallest is None or endpoint.params_b <= smallest else 0.7
    wanted = ctx.request.model
    if wanted in ("auto", endpoint.model, endpoint.family):
        return 1.0
    info = ctx.view.models.get(wanted)
    if info is None or endpoint.params_b >= info.params_b:
        return 0.7
    return 0.4


@dataclass(frozen=True, slots=True)
class AffinityScorer:
    axis: str = "affinity"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        fit = model_fit(ctx, endpoint)
        if not prediction.warm:
            return FIT_WEIGHT * fit, "fit {:.1f}", (fit,)
        if endpoint.id in ctx.crowded:  # past the affinity bound (core.predict.crowded_owners): no pull
            return FIT_WEIGHT * fit, "fit {:.1f}, cache warm but crowded", (fit,)
        return FIT_WEIGHT * fit + (1 - FIT_WEIGHT), "fit {:.1f}, cache warm", (fit,)
