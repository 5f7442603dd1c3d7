"""Urgency: a request's priority level, its class, an optional deadline, and what they change in a decision.

Levels are integers 0-9, higher is more urgent (the Gateway API Inference Extension's convention; vLLM's own
`priority` field counts the other way and is not forwarded). Three named classes sit on that scale:
batch = 0, standard = 5 (the default), interactive = 9; any level maps to the class whose band holds it
(0-2 batch, 3-6 standard, 7-9 interactive). The gateway's admission queue serves higher levels first
(core/fair_queue.py); the scheduler uses the class:

- interactive: the TTFT axis weighs twice as much and price a quarter, so among the candidates that meet the
  SLO the fastest wins even at a higher price (a predicted miss was already never outvoted: SloPicker);
- batch: price and headroom weigh twice as much, TTFT a quarter and its SLO is relaxed BATCH_SLO_FACTOR
  times, so it prefers cheap or far capacity; and an endpoint is "saturated" for it when 40% of its
  batch slots are in use (BATCH_MAX_BUSY) or when the work queued ahead would hold it in the engine for more than
  a quarter of the SLO (BATCH_MAX_QUEUE): batch leaves that headroom to urgent work (free slots, and decode
  steps that stay fast) and waits at the gateway instead of queueing inside an engine;
- standard: the policy as written.

A deadline (first token within N ms of arrival) caps the SLO, and a candidate whose point prediction is
already later than what is left of it is rejected ("deadline"): when none is left the gateway refuses the
request before any engine works on it. Pure: no I/O, clock or random.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from math import inf

from aigrid.core.types import (
    Candidate,
    Decision,
    Endpoint,
    Policy,
    Prediction,
    RequestInfo,
    Urgency,
)

INTERACTIVE, STANDARD, BATCH = "interactive", "standard", "batch"
LEVELS: Mapping[str, int] = {BATCH: 0, STANDARD: 5, INTERACTIVE: 9}
MAX_LEVEL = 9
DEFAULT_LEVEL = LEVELS[STANDARD]
BATCH_SLO_FACTOR = 10.0
BATCH_MAX_BUSY = 0.4
"""Batch is placed only where fewer than this share of the batch slots are in use (a full batch of long
contexts slows every decode step: at half the slots the spike scenario's interactive TPOT neared its SLO)..."""
BATCH_MAX_QUEUE = 0.25
"""... and where the modelled wait behind the work queued ahead of it (core/predict.py: admission and the
prefill of pending prompts, from the gateways' ledger and the engine's counts) is below this share of the
policy's SLO. An endpoint with nothing in the system is never saturated."""
SATURATED = "saturated"
DEADLINE = "deadline"
WAITABLE_FILTERS = frozenset({SATURATED, "capacity"})
"""Rejections that mean "busy, not forbidden": the request may wait at the gateway for capacity."""


def parse_level(value: object) -> int:
    """A class name or an integer level 0-9; raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int) and 0 <= value <= MAX_LEVEL:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LEVELS:
            return LEVELS[text]
        if (text.isascii() and text.isdigit()) and 0 <= int(text) <= MAX_LEVEL:
            return int(text)
    raise ValueError(f"{value!r} is not a priority: use interactive, standard, batch or an integer 0-{MAX_LEVEL} "
                     "(higher is more urgent)")


def class_of(level: int) -> str:
    return INTERACTIVE if level >= 7 else BATCH if level <= 2 else STANDARD


def label(level: int) -> str:
    name = class_of(level)
    return name if LEVELS[name] == level else f"{name} (level {level})"


@dataclass(frozen=True, slots=True)
class ClassRule:
    weight_scale: Mapping[str, float]
    """Multipliers on the policy's axis weights (the scheduler renormalises them)."""
    slo_factor: float = 1.0
    max_busy: float = inf
    """Requests in the system per batch slot at or above which an endpoint is saturated for this class."""
    max_queue: float = inf
    """Modelled wait behind the work ahead, as a share of the policy's SLO, above which it is saturated."""


RULES: Mapping[str, ClassRule] = {
    INTERACTIVE: ClassRule({"ttft": 2.0, "cost": 0.25}),
    STANDARD: ClassRule({}),
    BATCH: ClassRule({"ttft": 0.25, "cost": 2.0, "headroom": 2.0}, BATCH_SLO_FACTOR, BATCH_MAX_BUSY,
                     BATCH_MAX_QUEUE),
}


def urgency_of(request: RequestInfo, policy: Policy) -> Urgency | None:
    """None for a standard request without a deadline: the policy applies as written."""
    klass = class_of(request.priority)
    if klass == STANDARD and request.deadline_ms is None:
        return None
    rule = RULES[klass]
    weights = {axis: w * rule.weight_scale.get(axis, 1.0) for axis, w in policy.weights.items()}
    slo = policy.ttft_slo_ms * rule.slo_factor
    if request.deadline_ms is not None:
        slo = min(slo, request.deadline_ms)
    return Urgency(request.priority, klass, slo, policy.ttft_slo_ms, weights, dict(policy.weights),
                   request.deadline_ms, rule.max_busy, rule.max_queue * policy.ttft_slo_ms)


def effective_policy(policy: Policy, urgency: Urgency | None) -> Policy:
    if urgency is None:
        return policy
    return replace(policy, weights=urgency.weights, ttft_slo_ms=urgency.slo_ms)


def past_deadline(predicted_ms: float, left_ms: float) -> str | None:
    """Why a step predicted to reach its first token in `predicted_ms` misses a deadline `left_ms` away, or None.
    The one rule (and message) of the router's deadline filter and the gateway's later steps (gateway.urgency)."""
    if predicted_ms <= left_ms:
        return None
    return f"predicted TTFT {predicted_ms:.0f} ms is past the deadline ({max(left_ms, 0.0):.0f} ms left)"


def too_late(urgency: Urgency, prediction: Prediction) -> str | None:
    """Why this candidate cannot meet the request's deadline (its point prediction is later), or None."""
    if urgency.deadline_ms is None:
        return None
    return past_deadline(prediction.ttft_ms, urgency.deadline_ms)


def saturated(urgency: Urgency, endpoint: Endpoint, in_system: int, committed_ms: float) -> str | None:
    """Why this endpoint is too busy for the request's class (it should wait at the gateway), or None.
    `committed_ms`: the modelled wait behind all the work committed to the endpoint (core.predict.committed_ms;
    the caller may pass 0 for a class without a queue limit)."""
    if in_system == 0:
        return None  # an idle endpoint is never saturated, whatever its remembered latency says
    slots = max(endpoint.max_concurrency, 1)
    if in_system >= urgency.max_busy * slots:
        return f"{in_system} in system of {slots} slots: {urgency.klass} leaves {1 - urgency.max_busy:.0%} free"
    queue = committed_ms
    if queue > urgency.max_queue_ms:
        return f"{queue:.0f} ms of work queued ahead: {urgency.klass} waits where it would exceed " \
               f"{urgency.max_queue_ms:.0f} ms"
    return None


def must_wait(decision: Decision) -> bool:
    """No candidate now, but some endpoint is only busy: the request can wait for capacity."""
    return decision.chosen is None and any(r.filter in WAITABLE_FILTERS for r in decision.rejected)


def deadline_refused(decision: Decision) -> bool:
    """No candidate, and at least one was rejected only because it would answer after the deadline."""
    return decision.chosen is None and not must_wait(decision) and any(
        r.filter == DEADLINE for r in decision.rejected)


def neutral_choice(decision: Decision) -> Candidate | None:
    """The candidate the policy as written would have ranked first (no class, no deadline): what the
    urgency changed. Deterministic (no tie-break); the candidates the urgency rejected are not included."""
    u = decision.urgency
    if u is None or not decision.ranked:
        return None
    total = sum(max(w, 0.0) for w in u.base_weights.values()) or 1.0

    def base_total(c: Candidate) -> float:
        return sum(max(u.base_weights.get(a, 0.0), 0.0) * v for a, v in c.scores.items()) / total

    meets = [c for c in decision.ranked if c.prediction.ttft_p90_ms <= u.base_slo_ms]
    pool: Sequence[Candidate] = meets or decision.ranked
    key = (lambda c: (-base_total(c), c.endpoint_id)) if meets else \
        (lambda c: (c.prediction.ttft_p90_ms, c.endpoint_id))
    return min(pool, key=key)


SEND, WAIT, LATE, REJECT = "send", "wait", "late", "reject"


ENGINE_QUEUE_SHARE = 0.5
"""A request with queue ahead whose optimistic TTFT (the prediction's p10) at its best endpoint is over half
of its SLO waits at the gateway (docs/simulator.md, "A shorter queue at the engine"). 0.4 with the ledgers
exchanged every 0.1 s; 0.45 with the 20 ms exchange (0.4 then failed 4 of the global plan's 14 checks:
requests held and shed that would have made it); 0.5 since the predictor replays the pending prompts placed
in time (core.predict.backlog_tokens), whose lower, truer queue predictions at 0.45 failed 2 of the plan's
checks and at 0.5 none."""


def budget_ms(decision: Decision, slo_ms: float, waited_ms: float = 0.0) -> float:
    """What is left of the request's TTFT SLO after `waited_ms` at the gateway: its class's SLO less the
    wait, and never more than what is left of its deadline (already counted from arrival)."""
    u = decision.urgency
    if u is None:
        return slo_ms - waited_ms
    left = u.base_slo_ms * RULES[u.klass].slo_factor - waited_ms
    return left if u.deadline_ms is None else min(left, u.deadline_ms)


def verdict(decision: Decision, slo_ms: float | None = None, waited_ms: float = 0.0,
            engine_share: float = ENGINE_QUEUE_SHARE) -> str:
    """What the gateway does with a decision: send it, let it wait for capacity, refuse it because its
    deadline cannot be met (before any engine works on it), or reject it (no endpoint may serve it).

    With `slo_ms` (the policy's TTFT SLO; the class's own when its urgency changed it), a request whose best
    candidate is predicted to miss it only because of the queue there (its round trip and prefill alone
    would meet it) waits for capacity that can meet it: sent now it would miss anyway, and lengthen the
    queue for the requests behind it. `waited_ms` is how long it has waited at the gateway: the wait is part
    of its TTFT, so a request that waited also keeps waiting while even the optimistic end of its prediction
    (`ttft_p10_ms`) is past what is left of the SLO: sent then, it would almost surely be late and take
    capacity from requests that can still be on time; it waits until it fits or its class's longest wait
    sheds it. The optimistic end, not the point prediction: where predictions run high (queues that drain
    faster than modelled) the point prediction held requests that would have made it, and shed them.
    Once nothing is left (stale: only where shedding at the SLO is off) the whole SLO is the rule, as for a
    fresh request.
    Batch is there to be delayed (it never goes stale either): its wait does not count against its SLO, so
    the head of a tenant's batch queue never blocks it for having waited longest.
    `engine_share` (AdmissionRules.engine_queue_share) bounds the queue a request joins at an engine: with
    queue ahead, it also waits at the gateway while even the optimistic end of its prediction is over that
    share of its SLO (1.0: only while the point prediction misses the whole SLO, the rule before). Below 1,
    an engine's queue is kept shorter than the SLO allows and the rest of the backlog waits here, where the
    queue serves whatever fits first, keeps tenants fair and sheds at the SLO, instead of in the engine's
    first-come-first-served prefill queue. The optimistic end, for the reason above: the point prediction
    held and shed requests that would have made it where predictions run high (docs/simulator.md, "A
    shorter queue at the engine", measures both)."""
    best = decision.chosen
    if best is not None:
        if slo_ms is None:
            return SEND
        p = best.prediction
        full = budget_ms(decision, slo_ms)
        if p.queue_ms <= 0 or p.rtt_ms + p.prefill_ms > full:
            return SEND  # nothing ahead to wait out, or it would miss the SLO on an idle engine too
        if p.ttft_ms > full or p.ttft_p10_ms > engine_share * full:
            return WAIT
        if decision.urgency is not None and decision.urgency.klass == BATCH:
            return SEND  # batch's wait never counts
        left = budget_ms(decision, slo_ms, waited_ms)
        return WAIT if 0 < left < p.ttft_p10_ms else SEND
    if must_wait(decision):
        return WAIT
    return LATE if deadline_refused(decision) else REJECT


@dataclass(frozen=True, slots=True)
class AdmissionRules:
    """How long each class may wait at the gateway for capacity, and how many may wait at once."""

    max_wait_s: Mapping[str, float] = field(default_factory=lambda: {
        INTERACTIVE: 10.0, STANDARD: 30.0, BATCH: 600.0})
    capacity: int = 1000
    max_wait_slo: Mapping[str, float | None] = field(default_factory=lambda: {STANDARD: 1.0})
    """Per class: the longest wait as a multiple of the request's TTFT SLO (the class's own: the policy's,
    times BATCH_SLO_FACTOR for batch), None or absent for none; the earlier of this and `max_wait_s` ends
    the wait. By default a standard request is shed (429) once it has waited its SLO: still waiting then, it
    can no longer count as goodput, and serving it late takes capacity from requests that still can
    (docs/simulator.md, "Shedding at the SLO", measures it against the 30 s limit). Interactive requests
    keep their 10 s and batch its 600 s: neither has a factor by default."""
    engine_queue_share: float = ENGINE_QUEUE_SHARE
    """The share of its TTFT SLO a request may spend queued at an engine before it waits at the gateway
    instead (verdict's `engine_share`)."""

    def expires(self, level: int, arrived: float, deadline_ms: float | None, slo_ms: float | None = None) -> float:
        """When a request that arrived at `arrived` stops waiting: its deadline or its class's longest wait
        (`max_wait_s`, and `max_wait_slo` times the class's SLO when both are given)."""
        klass = class_of(level)
        wait_s = self.max_wait_s.get(klass, 30.0)
        factor = self.max_wait_slo.get(klass)
        if factor is not None and slo_ms is not None:
            wait_s = min(wait_s, factor * slo_ms * RULES[klass].slo_factor / 1000.0)
        until = arrived + wait_s
        return until if deadline_ms is None else min(until, arrived + deadline_ms / 1000.0)

    def stale_at(self, level: int, arrived: float, slo_ms: float | None) -> float:
        """When a waiting interactive or standard request can no longer meet its SLO: from then on it waits
        behind the fresh requests of its level (core/fair_queue.py), so that a backlog does not make them miss
        it too. Batch stays first in, first out: it is there to be delayed, not overtaken. Never without an
        SLO."""
        return float("inf") if slo_ms is None or class_of(level) == BATCH else arrived + slo_ms / 1000.0

    def remaining_ms(self, deadline_ms: float | None, arrived: float, now: float) -> float | None:
        return None if deadline_ms is None else deadline_ms - (now - arrived) * 1000.0
