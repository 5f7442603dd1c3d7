"""Axis 3, model affinity: how well the model fits, and whether the cache is warm here.

fit: 1.0 exact model (or "auto"/family request served by the family's smallest model that fits),
0.7 a larger model of the same family (a fallback that costs more), 0.4 a smaller one (may be worse).
Right-sized requests (RequestInfo.quality, core/right_size.py): 1.0 for the smallest model that meets the
quality target, 0.7 for a larger one (the quality filter has removed those that miss it).
warmth: where this request's prompt prefix or session was last served, the share of the cold time to first
token that the cached prefix saves there (saved prefill / (predicted TTFT + saved prefill)), else 0; 0 too
while that endpoint is past the affinity bound (crowded_owners: its slot utilisation above 1.25x the mean
of its model's endpoints, plus one request), so one hot prefix cannot pile onto one engine. A long shared
prefix near an idle engine pulls hard; a 30-token prompt, whose cached part saves a millisecond, hardly
at all (its pull only skewed the load).
score = 0.7 x fit + 0.3 x warmth.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import Context, Score
from aigrid.core.predict import in_system, prefill_ms
from aigrid.core.right_size import smallest_eligible_params
from aigrid.core.types import UNKNOWN_STATE, Endpoint, EndpointState, Prediction

FIT_WEIGHT = 0.7
AFFINITY_BOUND = 1.25
"""Affinity with bounded loads (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam
2018; HAProxy's hash-balance-factor): a warm endpoint keeps its pull while its slot utilisation is at most
this multiple of the mean over the endpoints serving its model, plus one request."""


def crowded_owners(owners: Collection[str], endpoints: Sequence[Endpoint],
                   states: Mapping[str, EndpointState]) -> frozenset[str]:
    """The owners (core.predict.warm_cache) past the affinity bound; the scheduler calls it once per
    decision, and does nothing for a request without an owner. Without the bound one hot prefix (every
    request of an app with the same system prompt and opening turn, a benchmark's one prompt) piles onto one
    engine until its headroom score outweighs the warmth, a third of its slots, and its decode slows for all
    of them; the cached part of the prompt still counts in the owner's predicted TTFT (warm_cache), so
    a long shared prefix keeps winning on time to first token where the saving is real."""
    if not owners:
        return frozenset()
    crowded = []
    for owner in owners:
        mine = next((e for e in endpoints if e.id == owner), None)
        if mine is None:
            continue
        load = {e.id: in_system(states.get(e.id, UNKNOWN_STATE)) / max(e.max_concurrency, 1)
                for e in endpoints if e.model == mine.model}
        if load[owner] > AFFINITY_BOUND * sum(load.values()) / len(load) + 1.0 / max(mine.max_concurrency, 1):
            crowded.append(owner)
    return frozenset(crowded)


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


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class AffinityScorer:
    axis: str = "affinity"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        fit = model_fit(ctx, endpoint)
        if not prediction.warm:
            return FIT_WEIGHT * fit, "fit {:.1f}", (fit,)
        if endpoint.id in ctx.crowded:  # past the affinity bound (crowded_owners): no pull
            return FIT_WEIGHT * fit, "fit {:.1f}, cache warm but crowded", (fit,)
        saved = prefill_ms(endpoint, state, ctx.request.prompt_tokens) - prediction.model_own_ms
        if 0.0 > saved:
            saved = 0.0
        warmth = saved / (saved + prediction.ttft_ms) if saved > 0.0 else 0.0
        return (FIT_WEIGHT * fit + (1 - FIT_WEIGHT) * warmth, "fit {:.1f}, cache warm (saves {:.0f} ms)",
                (fit, saved))
