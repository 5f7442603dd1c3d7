"""Axis 1, time to first token: score = slo / (slo + predicted TTFT).

1.0 for an instant answer, 0.5 at exactly the policy's TTFT SLO, falling towards 0 beyond it. The
prediction (network + queue + prefill) comes from core.predict.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import Context, Score, clamp01
from aigrid.core.types import Endpoint, EndpointState, Prediction


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class TtftScorer:
    axis: str = "ttft"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        slo = ctx.policy.ttft_slo_ms
        # prediction.ttft_ms written out: compiled, three field reads instead of the property's Python frame
        # (once per candidate of every decision); the same operations, so the same float
        ttft = prediction.rtt_ms + prediction.queue_ms + prediction.prefill_ms
        return clamp01(slo / (slo + ttft)), "ttft {:.0f} ms", (ttft,)
