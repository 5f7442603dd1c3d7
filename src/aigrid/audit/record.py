"""What the audit log keeps about one request (plain data), and how a decision is summarised for it.

Prompts are stored only as keyed hashes (HMAC-SHA256 with a deployment secret: equal prompts can be
correlated, but nobody without the secret can test guesses), unless the tenant opted in to storing text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from aigrid.core.types import Decision


@dataclass(frozen=True, slots=True)
class AuditRecord:
    ts: float
    request_id: str
    tenant: str
    key_id: str
    model: str
    decision: Mapping[str, Any] = field(default_factory=dict)
    firewall: Sequence[Mapping[str, Any]] = ()
    outcome: str = "ok"
    """ok, error:<code>, blocked, rate_limited, client_gone..."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_hmac: str | None = None
    prompt_text: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> str:
        """Canonical JSON: sorted keys, no spaces, non-finite floats as null. This is what is hashed.
        (_finite copies the plain-data fields once; dataclasses.asdict would deep-copy them first.)"""
        return json.dumps(_finite({f.name: getattr(self, f.name) for f in fields(self)}), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def prompt_digest(secret: bytes, messages: object) -> str:
    """Keyed hash of a prompt: messages, a prompt string, or whatever JSON a (possibly invalid) request held."""
    text = messages if isinstance(messages, str) else json.dumps(messages, sort_keys=True, ensure_ascii=False,
                                                                 default=str)
    return hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()


def decision_summary(decision: Decision, served_endpoint: str | None = None, top: int = 5) -> dict[str, Any]:
    """Candidates with scores, the chosen (or, after failover, the serving) site and its jurisdiction."""
    served = next((c for c in decision.ranked if c.endpoint_id == served_endpoint), decision.chosen)
    rejected: dict[str, int] = {}
    for r in decision.rejected:
        rejected[r.filter] = rejected.get(r.filter, 0) + 1
    return {
        "policy": decision.policy,
        "reason": decision.reason,
        "chosen": None if served is None else {
            "endpoint": served.endpoint_id, "site": served.site_id, "jurisdiction": served.jurisdiction,
            "model": served.model, "total": round(served.total, 6)},
        "candidates": [{"endpoint": c.endpoint_id, "site": c.site_id, "jurisdiction": c.jurisdiction,
                        "total": round(c.total, 6), "scores": {k: round(v, 6) for k, v in c.scores.items()}}
                       for c in decision.ranked[:top]],
        "candidates_total": len(decision.ranked),
        "rejected": rejected,
    }


def _finite(value: Any) -> Any:
    # the exact plain types first (a record is ~50 values, mostly str and int; isinstance(.., Mapping) is an
    # ABC check), then the general checks for subclasses and other mappings, with the same results
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is dict:
        return {str(k): _finite(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_finite(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
