"""schedule(): one request + an immutable grid snapshot -> a Decision. Pure: no I/O, clock or global random.

Pipeline: the request's urgency adjusts the policy (core/urgency.py: class weights, SLO, deadline) -> every
filter must pass (the first failing one is recorded as the rejection) -> the TTFT prediction -> with a
deadline, a candidate predicted past it is rejected; for a class with a saturation limit (batch), a busy
endpoint is rejected as "saturated" (the gateway lets the request wait) -> the five scorers, once every
candidate is predicted (the ttft axis scores each against the fastest: Context.best_ttft_ms) -> weighted
total (weights normalised to sum 1; a total that is not finite is rejected, NOT_FINITE, and where that was
the fastest the rest are scored again) -> picker. Where the winner is not the fastest, the reason says what
outweighed the faster one (_slower_note).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import inf, isfinite

from aigrid.core.compiling import mypyc_attr
from aigrid.core.context import build_context
from aigrid.core.picker import SLO_GATE, TIE_BREAK, meets_slo, p90_ms
from aigrid.core.plugins import Context, Filter, Picker, Score, Scorer, Verdict
from aigrid.core.predict import committed_ms, in_system, predict, warm_cache
from aigrid.core.registry import FILTERS, PICKERS, SCORERS
from aigrid.core.right_size import describe, model_choice
from aigrid.core.scorers.affinity import crowded_owners
from aigrid.core.scorers.cost import cost_usd
from aigrid.core.types import (
    UNKNOWN_STATE,
    Candidate,
    Decision,
    Endpoint,
    EndpointState,
    GridView,
    Policy,
    Prediction,
    Rejection,
    RequestInfo,
    Rng,
    Urgency,
    build_decision,
    new_record,
)
from aigrid.core.urgency import effective_policy, label, saturated, too_late, urgency_of

Check = Callable[[Context, Endpoint], Verdict]
"""A filter's bound check method."""
NOT_FINITE = "not_finite"
"""The rejection of a candidate whose weighted total is not a finite number (a scorer's NaN, from a state or a
weight that is one): ranked, it made the picker's sort by total arbitrary for every candidate (a NaN compares
false both ways), and the best endpoint came last."""
SCORE_PLACES = 4
"""The decimal places a candidate's total and scores keep wherever its decision is shown (/v1/decisions, `aigrid
explain`'s table, the reason): the reason formats the same rounded value as the table, so that a total of
0.83249 is not "0.832" in the reason and "0.833" (0.8325 formatted again) in the table."""
MS_PLACES = 1
"""The same for a candidate's predicted times (milliseconds)."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class Profile:
    """The plugins one scheduling run uses, in order."""

    filters: tuple[Filter, ...]
    scorers: tuple[Scorer, ...]
    picker: Picker

    def __post_init__(self) -> None:
        axes = [s.axis for s in self.scorers]
        if len(set(axes)) != len(axes):
            raise ValueError(f"two scorers score the same axis: {axes}")


def default_profile() -> Profile:
    return Profile(
        filters=tuple(make() for make in FILTERS.values()),
        scorers=tuple(make() for make in SCORERS.values()),
        picker=PICKERS["slo-gate"](),
    )


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class Scheduler:
    """Holds a profile so that callers on the hot path build it once.

    `explain=False` leaves every Decision's `reason` empty, for a caller that never reads it: the
    simulator's runs, which keep no decisions (formatting the reason was 3% of a planet run). Every other
    field of the Decision is the same."""

    profile: Profile = field(default_factory=default_profile)
    explain: bool = True

    def __call__(self, request: RequestInfo, view: GridView, policy: Policy, rng: Rng) -> Decision:
        urgency = urgency_of(request, policy)
        policy = effective_policy(policy, urgency)
        cache = warm_cache(request, view.prefix_owner)
        # Context(...) without its generated __init__ (core/context.py's build_context: the same record)
        ctx = build_context(request, view, policy, crowded_owners(cache, view.endpoints, view.states), -1.0)
        rejected: list[Rejection] = []
        filters, scorers = self.profile.filters, self.profile.scorers
        # bound methods and weights once per decision, not once per endpoint
        checks = tuple((f.name, f.check) for f in filters if f.applies(ctx))
        weighted = tuple((s.axis, w, s.score) for s, w in zip(scorers, _normalised(policy, scorers), strict=True))
        sites, states = view.sites, view.states
        # each client-to-site distance, where the caller computed it already (the same distance_km)
        distances = view.distances_km if request.client_location is not None else None
        eligible: list[Eligible] = []
        for endpoint in view.endpoints:
            eid = endpoint.id  # read once: Endpoint is a Python record (a generic attribute lookup per read)
            site = sites[endpoint.site_id]
            failed = None
            for name, check in checks:  # the first filter that rejects it, if any (no call per candidate)
                verdict = check(ctx, endpoint)
                if not verdict.ok:
                    failed = name
                    break
            if failed is not None:
                rejected.append(Rejection(eid, site.id, failed, verdict.reason))
                continue
            state = states.get(eid, UNKNOWN_STATE)
            cached = cache.get(eid) if cache else None
            prediction = predict(request, endpoint, site, state, cached, -1.0 if distances is None else distances[eid])
            if urgency is not None:
                late = too_late(urgency, prediction)
                committed = 0.0 if late or urgency.max_queue_ms == inf else committed_ms(
                    request, endpoint, state, prediction, cached)
                busy = None if late else saturated(urgency, endpoint, in_system(state), committed)
                if late or busy:
                    rejected.append(Rejection(eid, site.id, "deadline" if late else "saturated",
                                              late or busy or ""))
                    continue
            eligible.append((endpoint, state, prediction))
        candidates = _scored(ctx, eligible, weighted, rejected)
        ranked = self.profile.picker.pick(candidates, policy, rng)
        choice = model_choice(request, ranked)
        reason = ""
        if self.explain:
            reason = _reason(ranked, rejected, weighted, policy, self.profile.picker.name) + _slower_note(
                ranked, weighted, policy) + (f"; {describe(choice)}" if choice is not None else "")
            if urgency is not None:
                reason = f"{reason}; {_urgency_note(urgency)}"
        # Decision(...) without its generated __init__ (types.record_builder: the same record)
        return build_decision(request.id, policy.name, ranked, tuple(rejected), reason, choice, urgency)


Eligible = tuple[Endpoint, EndpointState, Prediction]
"""A candidate every filter passed, before scoring: its endpoint, state and TTFT prediction."""
Weighted = tuple[tuple[str, float, Callable[[Context, Endpoint, EndpointState, Prediction], Score]], ...]
"""Each scorer's axis, normalised weight and bound score method, in axis order."""


def fastest_ttft_ms(eligible: Sequence[Eligible]) -> float:
    """The lowest predicted TTFT among the candidates (inf: none; a NaN prediction is never the lowest)."""
    best = inf
    for _, _, p in eligible:
        ttft = p.rtt_ms + p.queue_ms + p.prefill_ms  # p.ttft_ms without the property's Python frame
        if ttft < best:
            best = ttft
    return best


def _scored(ctx: Context, eligible: list[Eligible], weighted: Weighted, rejected: list[Rejection]) -> list[Candidate]:
    """Score every candidate on every axis, against the fastest predicted TTFT among them (Context.best_ttft_ms:
    the ttft axis's reference). A candidate whose total is not finite is rejected (NOT_FINITE); where that
    removes the fastest, the rest are scored again against the fastest of them, so that they rank as they
    would without it. Two passes at most in practice: the ttft axis is the only one that reads the fastest, and
    with a positive SLO (the spec's ttft_slo_ms > 0) and predictions of at least 0 it is finite for every
    prediction but a NaN one, which the first pass dropped; so the second drops nothing new (and a pass that
    loops has dropped at least one: the loop ends)."""
    request = ctx.request
    sites = ctx.view.sites
    # the cost's two counts read once per decision (RequestInfo is a Python record)
    prompt_tokens, max_output_tokens = request.prompt_tokens, request.max_output_tokens
    while True:
        best = fastest_ttft_ms(eligible)
        # Context(...) without its generated __init__ (core/context.py's build_context: the same record). The
        # second of the decision: the filters' one is built before any prediction, and Context is frozen (one
        # Context less would save at most its build, 0.34-0.38 us of a 25 us decision, 7 Dec 2026, RTX)
        scoring = build_context(request, ctx.view, ctx.policy, ctx.crowded, best if best < inf else -1.0)
        candidates: list[Candidate] = []
        dropped: list[Rejection] = []
        kept: list[Eligible] = []
        for item in eligible:
            endpoint, state, prediction = item
            eid = endpoint.id  # read once: Endpoint is a Python record (a generic attribute lookup per read)
            site = sites[endpoint.site_id]
            scores: dict[str, float] = {}
            notes: list[tuple[str, str, tuple[object, ...]]] = []
            total = 0.0  # the weighted sum in axis order
            for axis, weight, score in weighted:
                value, note, args = score(scoring, endpoint, state, prediction)
                if value < 0.0:  # clamp01, inline: five times per candidate
                    value = 0.0
                elif value > 1.0:
                    value = 1.0
                scores[axis] = value
                total += weight * value
                if note:
                    notes.append((axis, note, args))
            if not isfinite(total):
                dropped.append(Rejection(eid, site.id, NOT_FINITE, f"its total is {total}: " + ", ".join(
                    f"{axis} {value}" for axis, value in scores.items() if not isfinite(value))))
                continue
            kept.append(item)
            # Candidate(...): every field in order, without its __new__'s Python frame (keywords double the cost)
            candidates.append(new_record(Candidate, (
                eid, site.id, site.jurisdiction, endpoint.model, scores, total, prediction,
                cost_usd(prompt_tokens, max_output_tokens, endpoint), tuple(notes))))
        if not dropped or fastest_ttft_ms(kept) == best:
            rejected.extend(dropped)
            return candidates
        eligible = kept  # the fastest was dropped: score the rest against the fastest of them
        rejected.extend(dropped)


def _normalised(policy: Policy, scorers: Sequence[Scorer]) -> tuple[float, ...]:
    """Each scorer's weight, the policy's weights scaled to sum 1 (negative ones count as 0)."""
    weights = policy.weights
    raw: list[float] = []
    for s in scorers:  # max(weight, 0.0) as the builtin returns it (see core/predict.py), once per decision
        w = weights.get(s.axis, 0.0)
        raw.append(0.0 if 0.0 > w else w)
    total = sum(raw) or 1.0
    return tuple(w / total for w in raw)


def rival_of(ranked: Sequence[Candidate]) -> Candidate:
    """The best candidate the chosen one (ranked[0]) was preferred over: the highest total after it, the first in
    rank order among equal totals. Not always ranked[1]: a random pick within the tie tolerance, or the SLO gate's
    order (those that meet it first, the rest by p90), can put a lower total first or second."""
    rival = ranked[1]
    for c in ranked[2:]:
        if c.total > rival.total:
            rival = c
    return rival


def _picked(chosen: Candidate, rival: Candidate, policy: Policy, picker: str) -> str:
    """Why the picker chose a candidate whose total is below the rival's (the highest): the SLO gate's p90 ranking
    where no candidate meets the SLO, the gate where the rival misses it and the chosen one does not, else a
    random pick within the tie tolerance; a picker of another name is named."""
    total = f"{rival.endpoint_id} ({round(rival.total, SCORE_PLACES):.3f})"
    slo = policy.ttft_slo_ms
    if picker == SLO_GATE:
        if not meets_slo(chosen, policy):  # had any met it, the chosen one would be one that does
            missed = f"{slo:.0f} ms SLO" if p90_ms(chosen) > slo else f"{policy.tpot_slo_ms:.0f} ms TPOT SLO"
            mine, its = p90_ms(chosen), p90_ms(rival)
            near = f"within the tie tolerance {policy.tie_tolerance:g} of" if mine > its else "to"
            return (f"picked by p90 TTFT over {total}, no candidate meeting the {missed} (p90 {mine:.0f} ms, "
                    f"{near} its {its:.0f} ms)")
        if p90_ms(rival) > slo:
            return f"preferred over {total}, whose p90 TTFT {p90_ms(rival):.0f} ms misses the {slo:.0f} ms SLO"
        if not meets_slo(rival, policy):
            return (f"preferred over {total}, whose TPOT {rival.prediction.tpot_ms:.0f} ms misses the "
                    f"{policy.tpot_slo_ms:.0f} ms SLO")
    elif picker != TIE_BREAK:
        return f"picked by the {picker} picker over {total}"
    return f"picked within the tie tolerance {policy.tie_tolerance:g} of {total}"


def _urgency_note(u: Urgency) -> str:
    note = f"{label(u.level)}: SLO {u.slo_ms:.0f} ms"
    return note if u.deadline_ms is None else f"{note}, deadline {u.deadline_ms:.0f} ms left"


def _slower_note(ranked: Sequence[Candidate], weighted: Weighted, policy: Policy) -> str:
    """Where the chosen candidate is not the one predicted fastest: which it was, how much faster, and the
    weighted points by which each axis put the chosen one ahead or behind it ("cost +0.12, ttft -0.06"),
    so that `aigrid explain` says plainly what the wait bought. Where the faster one had the higher total, the
    weights did not choose: the picker's SLO gate (none meets it, or the faster one's TPOT misses it) or a tie within
    the policy's tolerance picked at random. Where the faster one had the higher total and is the candidate the
    headline compares with (rival_of), the headline already says that and why: only how much faster is added."""
    slo_ms = policy.ttft_slo_ms
    if len(ranked) < 2:
        return ""
    chosen = ranked[0]
    fast = min(ranked, key=lambda c: c.prediction.ttft_ms)
    gap = chosen.prediction.ttft_ms - fast.prediction.ttft_ms
    if fast is chosen or not gap > 0.0:
        return ""
    faster = f"; {fast.endpoint_id} at {fast.site_id} was predicted {round(gap, MS_PLACES):.0f} ms faster"
    if fast.total > chosen.total and fast is rival_of(ranked):  # the headline said why the picker chose otherwise
        return faster
    points = sorted(((axis, weight * (chosen.scores[axis] - fast.scores[axis])) for axis, weight, _ in weighted),
                    key=lambda ap: -abs(ap[1]))
    shown = ", ".join(f"{axis} {round(p, SCORE_PLACES):+.3f}" for axis, p in points if round(p, 3) != 0.0)
    if p90_ms(fast) > slo_ms >= p90_ms(chosen):  # the picker's gate decided, not the weights
        return f"{faster}, but its p90 misses the {slo_ms:.0f} ms SLO"
    why = ""
    if fast.total > chosen.total:  # the weights put the faster one ahead: the picker chose otherwise
        limit, tpot = policy.tpot_slo_ms, fast.prediction.tpot_ms
        if p90_ms(chosen) > slo_ms:
            why = f", none meets the {slo_ms:.0f} ms SLO: ranked by p90 TTFT, near-equals at random"
        elif limit is not None and tpot is not None and tpot > limit:
            why = f", its TPOT {tpot:.0f} ms misses the {limit:.0f} ms SLO"
        elif fast.total - chosen.total <= policy.tie_tolerance:
            why = ", a tie within the policy's tolerance picked at random"
    return f"{faster} (total {round(fast.total, SCORE_PLACES):.3f}{why}); points for the chosen one: {shown or 'none'}"


def _reason(ranked: Sequence[Candidate], rejected: Sequence[Rejection], weighted: Weighted, policy: Policy,
            picker: str) -> str:
    """The headline: the chosen candidate, its total and TTFT, and how it compares with the best candidate it was
    preferred over (rival_of: the highest total after it). Where the chosen one has the highest total: the axes on
    which its weighted score (the policy's normalised weight times the score) beats the rival's, by the most
    weighted points first, two at most ("ahead of iad-small on ttft +0.073, affinity +0.010"), then the axis it
    lost the most points on, where it lost any ("; behind it on cost -0.023"): that loss is what brought the rival
    close. Where the picker chose a lower total, why (_picked: "picked within the tie tolerance 0.02 of fra-big
    (0.871)", the SLO gate, its p90 ranking), then the axes it lost the most points on, two at most ("behind it on
    ttft -0.078"), and the one it won the most on ("; ahead of it on cost +0.029"). The points on every axis add
    up to the two totals' difference. An axis the policy gives no weight adds no points and is never named, nor is
    one whose margin rounds to 0 at the 3 places shown. Where no axis has such a margin: "level with X on every
    weighted axis"; where every candidate scores the same on every axis (within one unit of the 4th place
    /v1/decisions keeps): "the N candidates tie on every axis"; a lone candidate: "the only candidate"."""
    if ranked:
        best = ranked[0]
        head = (f"chose {best.endpoint_id} at {best.site_id} ({best.jurisdiction}): "
                f"total {round(best.total, SCORE_PLACES):.3f}, "
                f"predicted TTFT {round(best.prediction.ttft_ms, MS_PLACES):.0f} ms; ")
        if len(ranked) < 2:
            return head + "the only candidate"
        tie = 10.0 ** -SCORE_PLACES
        if all(abs(c.scores[axis] - value) <= tie for axis, value in best.scores.items() for c in ranked):
            return head + f"the {len(ranked)} candidates tie on every axis"
        rival = rival_of(ranked)
        # each margin rounded as /v1/decisions keeps a score (SCORE_PLACES), then shown to 3 places as the total
        margins = [(axis, round(weight * (best.scores[axis] - rival.scores[axis]), SCORE_PLACES))
                   for axis, weight, _ in weighted]
        ahead = sorted((am for am in margins if round(am[1], 3) > 0.0), key=lambda am: -am[1])
        behind = sorted((am for am in margins if round(am[1], 3) < 0.0), key=lambda am: am[1])
        if best.total < rival.total:  # the picker, not the weights, put it first
            why = _picked(best, rival, policy, picker)
            if not ahead and not behind:
                return head + f"{why}: level with it on every weighted axis"
            lost = ", ".join(f"{a} {m:+.3f}" for a, m in behind[:2]) or "no axis"
            won = "; ahead of it on " + ", ".join(f"{a} {m:+.3f}" for a, m in ahead[:2]) if ahead else ""
            return head + f"{why}: behind it on {lost}{won}"
        if not ahead and not behind:
            return head + f"level with {rival.endpoint_id} on every weighted axis"
        won = ", ".join(f"{a} {m:+.3f}" for a, m in ahead[:2]) or "no axis"
        lost = f"; behind it on {behind[0][0]} {behind[0][1]:+.3f}" if behind else ""
        return head + f"ahead of {rival.endpoint_id} on {won}{lost}"
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
