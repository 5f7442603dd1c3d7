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
    return (request.prompt_tokens * endpoint.price_in_per_mtok
            + request.max_output_tokens * endpoint.price_out_per_mtok) / 1e6


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
        cost = (prompt_tokens * endpoint.price_in_per_mtok  # request_cost_usd(request, endpoint), written out:
                + max_output_tokens * endpoint.price_out_per_mtok) / 1e6  # the same operations in the same order
        per_mtok = cost * 1e6 / tokens
        ref = ctx.policy.cost_reference_usd_per_mtok
        if 1e-9 > ref:
            ref = 1e-9
        return clamp01(ref / (ref + per_mtok)), "${:.2f}/Mtok", (per_mtok,)
