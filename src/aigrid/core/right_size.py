"""Right-sizing: which models a request may use given per-model quality estimates and the tenant's target.

The gateway estimates, per prompt, the probability that each candidate model answers well
(RequestInfo.quality; aigrid.rightsize computes it, the core only reads numbers). A model is eligible when
its estimate is at most `max_quality_drop` below the best model's; among the eligible ones the smallest
(by parameters) fits best. The quality filter (filters/quality.py) enforces the first rule, the affinity
axis (scorers/affinity.py) prefers the second, and `model_choice` explains the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aigrid.core.types import Candidate, ModelChoice, ModelInfo, RequestInfo

TOLERANCE = 1e-9
ESTIMATE_PLACES = 4
"""The decimal places a quality estimate and the quality target keep wherever a decision is shown (/v1/decisions'
model_choice, `aigrid explain`, the reason): see estimate_text."""


def estimate_text(q: float) -> str:
    """A quality estimate (or target) as text: two places of the value rounded to ESTIMATE_PLACES, the value
    /v1/decisions keeps, so the reason and `aigrid explain` (which formats that value again) show one number; an
    estimate of 0.64499 was "0.64" in the reason and "0.65" (0.645 formatted again) in `aigrid explain`."""
    return f"{round(q, ESTIMATE_PLACES):.2f}"


def best_model(quality: Mapping[str, float]) -> tuple[str, float]:
    """The model with the highest estimate (ties: the first by name, so the result is deterministic)."""
    name = min(quality, key=lambda m: (-quality[m], m))
    return name, quality[name]


def eligible_models(request: RequestInfo) -> tuple[str, ...]:
    """Models whose estimate is within the request's quality target of the best one (sorted by name)."""
    if not request.quality:
        return ()
    _, best = best_model(request.quality)
    floor = best - request.max_quality_drop - TOLERANCE
    return tuple(sorted(m for m, q in request.quality.items() if q >= floor))


def smallest_eligible_params(request: RequestInfo, models: Mapping[str, ModelInfo]) -> float | None:
    """Parameters (B) of the smallest eligible model in the catalogue; None when none is catalogued."""
    sizes = [models[m].params_b for m in eligible_models(request) if m in models]
    return min(sizes) if sizes else None


def model_choice(request: RequestInfo, ranked: Sequence[Candidate]) -> ModelChoice | None:
    """The explanation of a right-sized decision: chosen vs the best model's best-ranked endpoint."""
    if not request.quality or not ranked:
        return None
    best, _ = best_model(request.quality)
    chosen = ranked[0]
    top = next((c for c in ranked if c.model == best), None)
    return ModelChoice(
        chosen=chosen.model, best=best, estimates=dict(request.quality), max_quality_drop=request.max_quality_drop,
        eligible=eligible_models(request),
        cost_saved_usd=None if top is None else top.cost_usd - chosen.cost_usd,
        ttft_saved_ms=None if top is None else top.prediction.ttft_ms - chosen.prediction.ttft_ms,
    )


def describe(choice: ModelChoice) -> str:
    """One line for the decision's reason."""
    q = choice.estimates
    drop = estimate_text(choice.max_quality_drop)
    if choice.chosen == choice.best:
        below = sorted(m for m in q if m not in choice.eligible)
        return (f"model {choice.chosen}: the best estimate ({estimate_text(q[choice.best])})"
                + (f"; {', '.join(below)} more than {drop} below it" if below else ""))
    text = (f"model {choice.chosen}: estimated quality {estimate_text(q.get(choice.chosen, float('nan')))}"
            f" vs {choice.best} {estimate_text(q[choice.best])} (target: within {drop})")
    if choice.chosen != choice.best and choice.cost_saved_usd is not None and choice.ttft_saved_ms is not None:
        text += f"; saves ${choice.cost_saved_usd:.6f} and {choice.ttft_saved_ms:.0f} ms TTFT against {choice.best}"
    return text
