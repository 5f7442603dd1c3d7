"""The gateway's memory of recent decisions, for `aigrid explain` and the dashboard (bounded, newest last)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aigrid.core.calibration import Calibration
from aigrid.core.scheduler import MS_PLACES, SCORE_PLACES
from aigrid.core.types import Candidate, Decision, GeoPoint, ModelChoice, PrefillQueue
from aigrid.core.urgency import label, neutral_choice
from aigrid.errors import ApiError
from aigrid.first_token import first_token_ms  # (observe.py reads it here too)
from aigrid.gateway.request_info import OutputBound
from aigrid.gateway.tracing import NO_TRACE, RequestTrace
from aigrid.gateway.urgency import Deadline
from aigrid.most_held import MostHeld
from aigrid.telemetry.store import bounded_reason

ERROR_CHARS = 500
"""The most characters of an attempt's error its decision keeps (`/v1/decisions`, `aigrid explain`, the attempt's
span): an engine or a client wrote it, and each of the log's 5,000 decisions holds its attempts' errors."""


def attempt_error(text: str) -> str:
    """An attempt's error as its decision records it: at most ERROR_CHARS characters, every character that does not
    print (control, bidi, line breaks) a '?' (telemetry.store.bounded_reason, an endpoint's reason's bound)."""
    return bounded_reason(text, ERROR_CHARS)


def calibration_dict(cal: Calibration | None) -> dict[str, Any] | None:
    if cal is None or cal.n == 0:
        return None
    return {"observations": cal.n, "ready": cal.ready, "overhead_ms": round(cal.overhead_ms, 2),
            "prefill_coef": round(cal.prefill_coef, 3), "queue_coef": round(cal.queue_coef, 3),
            "p90_ratio": round(cal.ratio_q, 3)}


def prefill_queue_dict(queue: PrefillQueue | None) -> dict[str, Any] | None:
    """The pending prompts placed in time, as /v1/grid shows them: how many, their tokens, the oldest and
    the last arrival (ms from now; negative: arrived), and how long ago the latest known first token was."""
    if queue is None:
        return None
    arrivals = queue.arrivals
    return {"prompts": len(arrivals), "tokens": sum(t for _, t in arrivals),
            "first_arrival_ms": round(arrivals[0][0] * 1000.0, 1) if arrivals else None,
            "last_arrival_ms": round(arrivals[-1][0] * 1000.0, 1) if arrivals else None,
            "anchor_ms": None if queue.anchor_s is None else round(queue.anchor_s * 1000.0, 1)}


def candidate_dict(c: Candidate) -> dict[str, Any]:
    p = c.prediction
    return {
        "endpoint": c.endpoint_id, "site": c.site_id, "jurisdiction": c.jurisdiction, "model": c.model,
        "total": round(c.total, SCORE_PLACES), "scores": {k: round(v, SCORE_PLACES) for k, v in c.scores.items()},
        "predicted_ttft_ms": round(p.ttft_ms, MS_PLACES), "predicted_ttft_p90_ms": round(p.ttft_p90_ms, MS_PLACES),
        "rtt_ms": round(p.rtt_ms, 1), "rtt_source": "measured" if p.rtt_measured else "distance model",
        "measured_rtt_ms": None if p.measured_rtt_ms is None else round(p.measured_rtt_ms, 2),
        "queue_ms": round(p.queue_ms, 1), "prefill_ms": round(p.prefill_ms, 1),
        "distance_km": None if p.distance_km is None else round(p.distance_km),
        "cost_usd": c.cost_usd, "notes": list(c.notes),
    }


def model_choice_dict(c: ModelChoice | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"chosen": c.chosen, "best": c.best, "estimates": {m: round(q, 4) for m, q in c.estimates.items()},
            "max_quality_drop": round(c.max_quality_drop, 4), "eligible": list(c.eligible),
            "cost_saved_usd": c.cost_saved_usd,
            "ttft_saved_ms": None if c.ttft_saved_ms is None else round(c.ttft_saved_ms, 1)}


def urgency_dict(d: Decision) -> dict[str, Any] | None:
    """The request's class and deadline, and what they changed: weights, SLO, and the endpoint the policy as
    written would have ranked first."""
    u = d.urgency
    if u is None:
        return None
    neutral = neutral_choice(d)
    changed = {axis: [round(u.base_weights.get(axis, 0.0), 4), round(w, 4)] for axis, w in u.weights.items()
               if abs(w - u.base_weights.get(axis, 0.0)) > 1e-12}
    return {"class": u.klass, "level": u.level, "label": label(u.level), "slo_ms": round(u.slo_ms, 1),
            "policy_slo_ms": round(u.base_slo_ms, 1),
            "deadline_ms_left": None if u.deadline_ms is None else round(u.deadline_ms, 1),
            "weights_changed": changed, "without_urgency": None if neutral is None else neutral.endpoint_id,
            "waits_where": [r.endpoint_id for r in d.rejected if r.filter == "saturated"],
            "too_late_at": [r.endpoint_id for r in d.rejected if r.filter == "deadline"]}


def decision_dict(d: Decision) -> dict[str, Any]:
    return {
        "id": d.request_id, "policy": d.policy, "reason": d.reason,
        "chosen": None if d.chosen is None else d.chosen.endpoint_id,
        "model_choice": model_choice_dict(d.model_choice),
        "urgency": urgency_dict(d),
        "candidates": [candidate_dict(c) for c in d.ranked],
        "rejected": [{"endpoint": r.endpoint_id, "site": r.site_id, "filter": r.filter, "reason": r.reason}
                     for r in d.rejected],
    }


@dataclass
class DecisionRecord:
    decision: Decision
    at: float
    tenant: str
    model: str
    client: GeoPoint | None
    affinity_keys: tuple[str | None, ...] = ()
    prompt_tokens: int = 0
    """The request's estimated prompt tokens: what the in-flight ledger books as prefill work."""
    width: int = 1
    """The engine requests each attempt is (n choices, a list of prompts: engines/fan_out.py), in the ledger."""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    served_by: str | None = None
    ttft_ms: float | None = None
    ttft_is_first_token: bool = False
    """ttft_ms is the first token's time (a stream relayed from the engine), not a whole answer's first byte (not
    streamed) or a tool loop's (after whole model turns): only then is it a TTFT to set beside the prediction."""
    status: str = "routing"
    usage: dict[str, Any] | None = None
    """The engine's token count for the answer, when it sent one (for settling quotas and the audit)."""
    delivered_tokens: int | None = None
    """The output tokens a streamed answer that ended before its end (its client gone or its cancel, its engine
    failed) had delivered to its client (relay.StreamRelay, continuation.Delivered.tokens): charged with the prompt
    where the engine's count never came (Exchange.used_tokens); None where no stream counted them."""
    left_at: str | None = None
    """The endpoint that held the request when its client left or cancelled it (its background response), before any
    answer (proxy._CHARGED_CUTS): the engine read (part of) the prompt, which is charged (Exchange.used_tokens) at
    that endpoint's prices. The grid's own cuts (the stop's) set none: charged nothing beyond what was delivered."""
    trace: RequestTrace = NO_TRACE
    """The request's OpenTelemetry span (gateway/tracing.py); the proxy adds one span per attempt."""
    refusal: ApiError | None = None
    """An engine's refusal that is one of the gateway's own errors (engine_errors.engine_refusal: a prompt past its
    context): the exchange ends as if the gateway had raised it (Exchange.failure)."""
    deadline: Deadline | None = None
    """The request's deadline, fixed when it arrived (urgency.Deadline): a failover to the next candidate and an
    escalation go only to a candidate predicted to answer within what is left of it (proxy.py)."""
    output_bound: OutputBound | None = None
    """What bounds the engine's output where the client set no limit (request_info.OutputBound): each attempt's engine
    gets the max_tokens its own model's context leaves (Proxy._attempt); None: the body is sent as it is."""

    def to_first_byte(self) -> dict[str, Any]:
        """The first byte's two keys of to_dict: ttft_ms (rounded) and ttft_is_first_token (first_byte_fields reads
        them)."""
        return {"ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
                "ttft_is_first_token": self.ttft_is_first_token}

    def to_dict(self) -> dict[str, Any]:
        out = decision_dict(self.decision)
        out.update({
            "at": self.at, "tenant": self.tenant, "model": self.model,
            "client": None if self.client is None else {"lat": self.client.lat, "lon": self.client.lon},
            "attempts": self.attempts, "served_by": self.served_by, **self.to_first_byte(), "status": self.status,
        })
        return out


def first_byte_fields(d: Mapping[str, Any]) -> dict[str, Any]:
    """A decision's first byte where a line or a row shows it (the dashboard's decisions, the access log): `ttft_ms`
    only where it was a first token (first_token_ms), `first_byte_ms` the first byte's time whatever it was (a whole
    answer's, not streamed, is shown apart, never as a TTFT beside the prediction). `d`: a decision's dict
    (DecisionRecord.to_dict, or its to_first_byte)."""
    return {"ttft_ms": first_token_ms(d), "first_byte_ms": d.get("ttft_ms")}


def readable_by(found: dict[str, Any], servable: Mapping[str, str]) -> bool:
    """Whether a decision's record (DecisionRecord.to_dict()) is one a caller that is not an operator reads, given
    the endpoints that may serve it (`servable`: id -> model, routes._servable): one its candidates, choice and
    attempts all name such endpoints, and whose right-sizing estimates name their models only. Its own decisions
    are (the routing's hard filters kept the rest out); another key's of its tenant, routed where this key may not
    be (an unrestricted key's, served in the US, read by a key of the EU), are not: they named those endpoints, their
    sites and models. Its rejections are left to `engine_names.EngineNames.decision`."""
    endpoints = {c.get("endpoint") for c in found.get("candidates") or ()} \
        | {a.get("endpoint") for a in found.get("attempts") or ()} | {found.get("chosen"), found.get("served_by")}
    models = set((found.get("model_choice") or {}).get("estimates") or ())
    return endpoints - {None} <= servable.keys() and models <= set(servable.values())


T = TypeVar("T")


class Latest(Generic[T]):
    """The newest `capacity` items by id, each one tenant's: newest first, every tenant's or one tenant's, read
    without walking the others' (a tenant's `GET /v1/decisions?limit=1` read the newest 1,000 of every tenant, about
    2.6 MB from the workers' hub, and filtered them; a tenant whose decisions were older than those saw none)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[str, T]] = OrderedDict()
        self._of_tenant: dict[str, OrderedDict[str, None]] = {}
        self._most = MostHeld()  # which tenant holds the most items

    def add(self, key: str, tenant: str, item: T) -> None:
        """`item` as the newest (one with the same key replaced). Past the capacity the tenant holding the most
        forgets its oldest (fair_lru's rule): forgetting the oldest of all let one tenant's traffic push every other
        tenant's decisions out of `GET /v1/decisions` and `aigrid explain`; a tenant within its share keeps its own."""
        self._forget(key)
        self._items[key] = (tenant, item)
        keys = self._of_tenant.setdefault(tenant, OrderedDict())
        keys[key] = None
        self._most.moved(tenant, len(keys) - 1, len(keys))
        while len(self._items) > self._capacity:  # most_held.MostHeld: O(1), not a walk of every tenant
            most = self._most.most()
            assert most is not None  # over the capacity: some tenant holds items
            self._forget(next(iter(self._of_tenant[most])))

    def _forget(self, key: str) -> None:
        found = self._items.pop(key, None)
        if found is None:
            return
        keys = self._of_tenant[found[0]]
        del keys[key]
        self._most.moved(found[0], len(keys) + 1, len(keys))
        if not keys:
            del self._of_tenant[found[0]]

    def get(self, key: str) -> T | None:
        found = self._items.get(key)
        return None if found is None else found[1]

    def recent(self, limit: int, tenant: str | None = None) -> list[T]:
        """The newest `limit`, newest first: every tenant's (`tenant` None) or `tenant`'s."""
        return list(itertools.islice(self.newest(tenant), max(0, limit)))

    def newest(self, tenant: str | None = None) -> Iterator[T]:
        """Every item, newest first, read as it is walked (not copied): every tenant's or `tenant`'s."""
        keys = reversed(self._items) if tenant is None else reversed(self._of_tenant.get(tenant, {}))
        return (self._items[k][1] for k in keys)


class DecisionLog:
    def __init__(self, capacity: int = 5000) -> None:
        self._records: Latest[DecisionRecord] = Latest(capacity)

    def add(self, record: DecisionRecord) -> None:
        self._records.add(record.decision.request_id, record.tenant, record)

    def get(self, decision_id: str) -> DecisionRecord | None:
        return self._records.get(decision_id)

    def recent(self, limit: int, tenant: str | None = None) -> list[DecisionRecord]:
        """The newest `limit` decisions, newest first: every tenant's (`tenant` None) or `tenant`'s."""
        return self._records.recent(limit, tenant)
