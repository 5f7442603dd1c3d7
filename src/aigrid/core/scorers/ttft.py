"""Axis 1, time to first token, scored against the fastest candidate:
score = (fastest predicted TTFT + slo / 10) / (this one's + slo / 10).

1.0 for the candidate predicted fastest; at the default 2 s SLO, with the fastest at 250 ms, 0.5 for one
predicted at 700 ms. The prediction (network + queue + prefill) comes from core.predict; the scheduler hands
the fastest candidate's in the Context (`best_ttft_ms`).

Why against the fastest and not the SLO: `slo / (slo + TTFT)` (the score until 7 Dec 2026) was nearly flat
below the SLO (at 2 s, 250 ms scored 0.89 and 800 ms 0.71), so the weighted sum let a near site with a
long queue beat an idle far one whose round trip was shorter than that queue. The tenth of the SLO added to
both sides keeps differences that are small against the SLO small (gateways acting on the same slightly
stale view would otherwise all herd onto whichever candidate is a few milliseconds faster, and a warm
prefix cache's few tens of milliseconds would outweigh any load). Where the fastest is not known (a caller
scoring one endpoint alone: best_ttft_ms negative), the SLO is the reference as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import Context, Score, clamp01
from aigrid.core.types import Endpoint, EndpointState, Prediction

SLO_SHARE: Final = 0.1
"""The share of the policy's TTFT SLO added to both predictions (100 ms at a 1 s SLO)."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class TtftScorer:
    axis: str = "ttft"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        slo = ctx.policy.ttft_slo_ms
        # prediction.ttft_ms written out: compiled, three field reads instead of the property's Python frame
        # (once per candidate of every decision); the same operations, so the same float
        ttft = prediction.rtt_ms + prediction.queue_ms + prediction.prefill_ms
        best = ctx.best_ttft_ms
        if best < 0.0:  # not known: the SLO is the reference
            return clamp01(slo / (slo + ttft)), "ttft {:.0f} ms", (ttft,)
        pad = SLO_SHARE * slo
        return clamp01((best + pad) / (ttft + pad)), "ttft {:.0f} ms, fastest {:.0f} ms", (ttft, best)
