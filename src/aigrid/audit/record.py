"""What the audit log keeps about one request (plain data), and how a decision is summarised for it.

Prompts are stored only as keyed hashes (HMAC-SHA256 with a deployment secret: equal prompts can be
correlated, but nobody without the secret can test guesses), unless the tenant opted in to storing text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from aigrid.core.types import Decision

ANSWERED = frozenset({"ok", "steered"})
"""Outcomes that are no error: an answer, and a Responses answer its client's steer cut as asked. The audit
summary's errors, a request's span status and the GenAI metrics' error_type all read it."""


def is_error(outcome: str) -> bool:
    return outcome not in ANSWERED


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
        (_finite copies the plain-data fields once; dataclasses.asdict would deep-copy them first.)

        orjson writes it when the record holds only plain JSON types and floats whose repr has no exponent
        (a record's scores, timestamps and milliseconds): for those its bytes are json.dumps's, checked by
        tests/audit/test_record.py; anything else (1e-05, an integer beyond 64 bits, a subclass) goes
        through json.dumps as before, every non-ASCII character escaped (\\uXXXX) when the record holds a
        lone surrogate (UTF-8 cannot carry one: such a body once stalled the writer for good). orjson is ~10x
        faster here (a record is ~1 KB of nested dicts). A record of exact plain types only, with string keys
        (`_plain`, a walk that copies nothing), is given to orjson as it is: orjson writes a non-finite float as
        null, as the copy would have; any other goes through the copy (`_finite`) first, as before."""
        values = {name: getattr(self, name) for name in _FIELDS}
        as_it_is = _plain(values)  # the common case: orjson reads the record as it is, no copy made first
        odd: list[Any] = []
        plain = values if as_it_is else _finite(values, odd)
        if not odd:
            try:
                return orjson.dumps(plain, option=orjson.OPT_SORT_KEYS).decode()
            except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a lone surrogate
                if as_it_is:  # json.dumps below writes non-finite floats as null only from the copy
                    plain = _finite(values, odd)
        text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which no UTF-8 carries (the chain hashes UTF-8): escaped
            return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return text


_FIELDS = tuple(f.name for f in fields(AuditRecord))


def prompt_digest(secret: bytes, messages: object) -> str:
    """Keyed hash of a prompt: messages, a prompt string, or whatever JSON a (possibly invalid) request held."""
    text = messages if isinstance(messages, str) else json.dumps(messages, sort_keys=True, ensure_ascii=False,
                                                                 default=str)
    h = _keyed(secret).copy()  # = hmac.digest(secret, text, "sha256"), without looking sha256 up by name each time
    h.update(text.encode("utf-8"))
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with `secret` and fed nothing: each digest starts from a copy of it."""
    return hmac.new(secret, digestmod=hashlib.sha256)


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


def _plain(value: Any) -> bool:
    """Does `value` hold only what orjson writes as json.dumps writes the `_finite` copy of it: the exact types str,
    int, bool, None, dict with str keys, list, tuple, and floats that are zero, non-finite (null in both) or written
    without an exponent? Walks it, copies nothing (the copy cost a record more than orjson's whole write)."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if not (tv is str or tv is int or tv is bool or v is None or _plain(v)):
                return False
        return True
    if t is list or t is tuple:
        for v in value:
            tv = type(v)
            if not (tv is str or tv is int or tv is bool or v is None or _plain(v)):
                return False
        return True
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return value == 0.0 or _PLAIN_FLOATS[0] <= abs(value) < _PLAIN_FLOATS[1] or not math.isfinite(value)
    return False


def _finite(value: Any, odd: list[Any]) -> Any:
    """A plain copy with non-finite floats as None; values whose JSON orjson would write differently from
    json.dumps go into `odd`."""
    # the exact plain types first (a record is ~50 values, mostly str and int; isinstance(.., Mapping) is an
    # ABC check), then the general checks for subclasses and other mappings, with the same results
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        if value == 0.0 or _PLAIN_FLOATS[0] <= abs(value) < _PLAIN_FLOATS[1]:
            return value
        if not math.isfinite(value):
            return None
        odd.append(value)
        return value
    if t is dict:
        return {str(k): _finite(v, odd) for k, v in value.items()}
    if t is list or t is tuple:
        return [_finite(v, odd) for v in value]
    odd.append(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v, odd) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, odd) for v in value]
    return value


_PLAIN_FLOATS = (1e-4, 1e16)
"""Floats written without an exponent by repr (and so json.dumps): orjson writes these the same way."""
