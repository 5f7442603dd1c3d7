"""Quality target (right-sizing): a model whose estimated quality for this prompt is too far below the best
model's may not serve it; with a model ladder, models off the ladder may not either. See core/right_size.py."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.right_size import TOLERANCE, best_model, estimate_text
from aigrid.core.types import Endpoint


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class QualityTarget:
    name: str = "quality"

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.request.quality)

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        quality = ctx.request.quality
        if not quality:
            return PASS
        mine = quality.get(endpoint.model)
        if mine is None:
            return Verdict(False, f"{endpoint.model} is not among the models estimated for this request")
        best, top = best_model(quality)
        drop = ctx.request.max_quality_drop
        if top - mine > drop + TOLERANCE:
            return Verdict(False, f"estimated quality {estimate_text(mine)} is {estimate_text(top - mine)} below "
                                  f"{best}'s {estimate_text(top)} (target: within {estimate_text(drop)})")
        return PASS
