"""Escalation: a right-sized answer that its model is unsure of is asked again of the next model up.

A tenant's `right_size.escalate` (spec) turns it on for its non-streamed chat answers (the Messages and
Responses front doors included): the gateway asks the engine for the answer's token log-probabilities
(and hides them again unless the client asked), and reads the answer's **confidence**, the geometric mean
of its tokens' probabilities (exp of the mean log-probability). Below `below_confidence`, and when the
small model answered within `within_ms`, the request is sent to the best-ranked endpoint of the smallest
larger model of the same decision (same residency and tenant rules) before the client sees anything; the
client gets that answer, and the tenant is charged both. Measured on SmolLM2-135M, where the answers can be
checked: docs/models.md, "Escalation".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import exp
from typing import Any

import orjson

from aigrid.core.types import Candidate

H_CONFIDENCE = "x-aigrid-confidence"
H_ESCALATED_FROM = "x-aigrid-escalated-from"


@dataclass(frozen=True, slots=True)
class Escalation:
    below: float
    within_s: float
    sizes: Mapping[str, float]
    """Parameters (B) per model of the grid: what "larger" means."""
    strip: bool
    """The client did not ask for log-probabilities: the gateway asked, and removes them again."""

    def larger(self, ranked: Sequence[Candidate], model: str) -> list[Candidate]:
        """The candidates of models larger than `model`: the smallest such model first, each in rank order."""
        own = self.sizes.get(model, 0.0)
        bigger = [c for c in ranked if self.sizes.get(c.model, 0.0) > own]
        return sorted(bigger, key=lambda c: self.sizes[c.model])  # stable: rank order within a model

    def unsure(self, conf: float | None) -> bool:
        return conf is not None and conf < self.below


def confidence(answer: Mapping[str, Any]) -> float | None:
    """The geometric mean of the first choice's token probabilities; None without log-probabilities (an
    engine that does not return them, a tool call, an empty answer)."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    logprobs = choices[0].get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list):
        return None
    values = [t["logprob"] for t in tokens if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)]
    return exp(sum(values) / len(values)) if values else None


def parse(answer: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def without_logprobs(doc: dict[str, Any]) -> bytes:
    """The answer as the client would have had it without the gateway's request for log-probabilities."""
    for choice in doc.get("choices") or ():
        if isinstance(choice, dict):
            choice.pop("logprobs", None)
    return orjson.dumps(doc)
