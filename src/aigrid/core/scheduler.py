"""schedule(): one request + an immutable grid snapshot -> a Decision. Pure: no I/O, clock or global random.

Pipeline: the request's urgency adjusts the policy (core/urgency.py: class weights, SLO, deadline) -> every
filter must pass (the first failing one is recorded as the rejection) -> the TTFT prediction -> with a
deadline, a candidate predicted past it is rejected; for a class with a saturation limit (batch), a busy
endpoint is rejected as "saturated" (the gateway lets the request wait) -> the five scorers -> weighted
total (weights normalised to sum 1) -> picker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aigrid.core.plugins import Context, Filter, Picker, Scorer, clamp01
from aigrid.core.predict import in_system, is_warm, predict
from aigrid.core.registry import FILTERS, PICKERS, SCORERS
from aigrid.core.right_size import describe, model_choice
from aigrid.core.scorers.cost import request_cost_usd
from aigrid.core.types import (
    Candidate,
    Decision,
    Endpoint,
    GridView,
    Policy,
    Rejection,
    RequestInfo,
    Rng,
    Urgency,
)
from aigrid.core.urgency import effective_policy, label, saturated, too_late, urgency_of


@dataclass(frozen=True, slots=True)
class Profile:
    """The plugins one scheduling run uses, in order."""

    filters: tuple[Filter, ...]
    scorers: tuple[Scorer, ...]
    picker: Picker


def default_profile() -> Profile:
    return Profile(
        filters=tuple(make() for make in FILTERS.values()),
        scorers=tuple(make() for make in SCORERS.values()),
        picker=PICKERS["slo-gate"](),
    )


@dataclass(frozen=True)
class Scheduler:
    """Holds a profile so that callers on the hot path build it once."""

    profile: Profile = field(default_factory=default_profile)

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        urgency = urgency_of(request, policy)
        policy = effective_policy(policy, urgency)
        ctx = Context(request, view, policy)
        candidates: list[Candidate] = []
        rejected: list[Rejection] = []
        filters, scorers = self.profile.filters, self.profile.scorers
        weights = _normalised(policy, scorers)
        sites, prefix_owner = view.sites, view.prefix_owner
        for endpoint in view.endpoints:
            failed = _first_failure(filters, ctx, endpoint)
            site = sites[endpoint.site_id]
            if failed is not None:
                rejected.append(Rejection(endpoint.id, site.id, failed[0], failed[1]))
                continue
            state = view.state(endpoint.id)
            prediction = predict(request, endpoint, site, state, is_warm(request, endpoint, prefix_owner))
            if urgency is not None:
                late = too_late(urgency, prediction)
                busy = None if late else saturated(urgency, endpoint, in_system(state), prediction)
                if late or busy:
                    rejected.append(Rejection(endpoint.id, site.id, "deadline" if late else "saturated",
                                              late or busy or ""))
                    continue
            scores: dict[str, float] = {}
            notes: list[tuple[str, str, tuple[object, ...]]] = []
            for scorer in scorers:
                s = scorer.score(ctx, endpoint, prediction)
                scores[scorer.axis] = clamp01(s.value)
                if s.note:
                    notes.append((scorer.axis, s.note, s.args))
            total: float = 0  # the weighted sum in axis order, as sum() would add it (a loop is cheaper)
            for axis, value in scores.items():
                total += weights[axis] * value
            candidates.append(Candidate(
                endpoint_id=endpoint.id, site_id=site.id, jurisdiction=site.jurisdiction,
                model=endpoint.model, scores=scores, total=total, prediction=prediction,
                cost_usd=request_cost_usd(request, endpoint), note_parts=tuple(notes),
            ))
        ranked = self.profile.picker.pick(candidates, policy, rng)
        choice = model_choice(request, ranked)
        reason = _reason(ranked, rejected) + (f"; {describe(choice)}" if choice is not None else "")
        if urgency is not None:
            reason = f"{reason}; {_urgency_note(urgency)}"
        return Decision(request.id, policy.name, ranked, tuple(rejected), reason, choice, urgency)


def _first_failure(filters: Sequence[Filter], ctx: Context, endpoint: Endpoint) -> tuple[str, str] | None:
    for f in filters:
        verdict = f.check(ctx, endpoint)
        if not verdict.ok:
            return f.name, verdict.reason
    return None


def _normalised(policy: Policy, scorers: Sequence[Scorer]) -> dict[str, float]:
    raw = {s.axis: max(policy.weights.get(s.axis, 0.0), 0.0) for s in scorers}
    total = sum(raw.values()) or 1.0
    return {axis: w / total for axis, w in raw.items()}


def _urgency_note(u: Urgency) -> str:
    note = f"{label(u.level)}: SLO {u.slo_ms:.0f} ms"
    return note if u.deadline_ms is None else f"{note}, deadline {u.deadline_ms:.0f} ms left"


def _reason(ranked: Sequence[Candidate], rejected: Sequence[Rejection]) -> str:
    if ranked:
        best = ranked[0]
        axes = sorted(best.scores.items(), key=lambda kv: -kv[1])
        strongest = ", ".join(f"{a} {v:.2f}" for a, v in axes[:2])
        return (f"chose {best.endpoint_id} at {best.site_id} ({best.jurisdiction}): total {best.total:.3f}, "
                f"predicted TTFT {best.prediction.ttft_ms:.0f} ms; strongest axes {strongest}")
    if not rejected:
        return "no endpoints in the grid"
    by_filter: dict[str, int] = {}
    for r in rejected:
        by_filter[r.filter] = by_filter.get(r.filter, 0) + 1
    parts = ", ".join(f"{n} by {f}" for f, n in sorted(by_filter.items(), key=lambda kv: -kv[1]))
    return f"no eligible endpoint: {len(rejected)} rejected ({parts})"


_DEFAULT = Scheduler()
"""Immutable (frozen plugins, no state): a shared constant, not a singleton with state."""


def schedule(request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
    """Route one request with the default profile. See Scheduler for a custom profile."""
    return _DEFAULT(request, view, policy, rng)
