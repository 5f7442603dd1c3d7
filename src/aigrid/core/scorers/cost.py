"""Axis 2, cost per token: score = ref / (ref + blended price per million tokens).

The blended price weights input and output prices by this request's expected token counts. A free
endpoint (own hardware already paid for) scores 1; one at the policy's reference price scores 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import Context, Score, clamp01
from aigrid.core.types import Endpoint, EndpointState, Prediction, RequestInfo


def request_cost_usd(request: RequestInfo, endpoint: Endpoint) -> float:
    return cost_usd(request.prompt_tokens, request.max_output_tokens, endpoint)


def cost_usd(prompt_tokens: int, max_output_tokens: int, endpoint: Endpoint) -> float:
    """A request's cost at an endpoint from its two token counts: for a caller that read them once per decision
    (RequestInfo is a Python record: a generic lookup per read)."""
    return (prompt_tokens * endpoint.price_in_per_mtok + max_output_tokens * endpoint.price_out_per_mtok) / 1e6


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class CostScorer:
    axis: str = "cost"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        request = ctx.request
        prompt_tokens, max_output_tokens = request.prompt_tokens, request.max_output_tokens  # each read once
        tokens = prompt_tokens + max_output_tokens
        if 1 > tokens:  # max(tokens, 1) and max(ref, 1e-9) without the builtin: see core/predict.py
            tokens = 1
        per_mtok = cost_usd(prompt_tokens, max_output_tokens, endpoint) * 1e6 / tokens
        ref = ctx.policy.cost_reference_usd_per_mtok
        if 1e-9 > ref:
            ref = 1e-9
        return clamp01(ref / (ref + per_mtok)), "${:.2f}/Mtok", (per_mtok,)
