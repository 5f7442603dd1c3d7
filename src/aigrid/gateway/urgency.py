"""A request's urgency, as the caller asked and as its tenant and key allow: priority level and deadline.

The level comes from the `x-aigrid-priority` header, else the body's `priority` field, else the tenant's
default (spec `tenants.NAME.priority.default`); interactive, standard, batch or an integer 0-9, higher is
more urgent (core/urgency.py). Asking above what the tenant and the key allow (the lower of the tenant's
`priority.max` and the key's `max_priority`) is refused with 403 naming the field, never silently lowered.
The deadline, "first token within N ms or don't bother", comes from `x-aigrid-deadline-ms` or the body's
`deadline_ms`. Both body fields are the gateway's: they are removed before the body goes to an engine (vLLM
has a `priority` field of its own that counts the other way). They are read the same way on every door: the
Responses and Messages requests carry them into the chat body they become (body_urgency), where until the
twenty-ninth session those doors dropped them unread (only the headers counted there).

The deadline is one budget, fixed when the request arrived (`Deadline`): every step the request takes before its
first token gets what is left of it, never the whole again: an automatic compaction's pass, then the answer
(responses_api.py), a failover to the next candidate and an escalation to a larger model (proxy.py). Until the
thirtieth session each of them counted the whole deadline from its own start (a client asking for 2 s of a
compacted Response could wait ~4 s before its first token, and a failover or an escalation was sent whatever was
left).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from aigrid.core.urgency import label, parse_level, past_deadline
from aigrid.errors import InvalidRequest, PermissionDenied
from aigrid.security.principal import Principal

H_PRIORITY = "x-aigrid-priority"
H_DEADLINE = "x-aigrid-deadline-ms"
BODY_PRIORITY = "priority"
BODY_DEADLINE = "deadline_ms"
MAX_DEADLINE_MS = 3_600_000.0
BODY_FIELDS = (BODY_PRIORITY, BODY_DEADLINE)


def body_urgency(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """The gateway's urgency fields among a request's fields of another API (a Responses or Messages request's
    fields beyond its schema's), for the chat body it becomes: read there by request_urgency as chat's are."""
    return {k: fields[k] for k in BODY_FIELDS if k in fields} if fields else {}


@dataclass(frozen=True, slots=True)
class Asked:
    level: int
    deadline_ms: float | None
    deadline_field: str = BODY_DEADLINE
    """Where the deadline came from (the header or the body's field): what a 503 deadline_unmeetable names."""

    def budget(self, arrived: float) -> Deadline | None:
        """The deadline as one budget from `arrived` (the gateway clock's time the request arrived); None: none."""
        if self.deadline_ms is None:
            return None
        return Deadline(self.deadline_ms, arrived + self.deadline_ms / 1000.0, self.deadline_field)


@dataclass(frozen=True, slots=True)
class Deadline:
    """A request's deadline, fixed when it arrived: the first token is due by `due` (the gateway's clock)."""

    ms: float
    """The deadline asked: first token within this many ms of the arrival."""
    due: float
    field: str = BODY_DEADLINE
    """Where it was asked (the header or the body's field): what a 503 deadline_unmeetable names."""

    def left_ms(self, now: float) -> float:
        return (self.due - now) * 1000.0

    def too_late(self, predicted_ms: float, now: float) -> str | None:
        """Why a step predicted to take `predicted_ms` to its first token cannot start now, or None when it can."""
        return past_deadline(predicted_ms, self.left_ms(now))


def request_urgency(headers: Mapping[str, str], body: MutableMapping[str, Any], principal: Principal,
                    default_level: int) -> Asked:
    """Read, validate and authorize the request's urgency; pops the gateway's fields from `body`."""
    raw_priority, raw_deadline = body.pop(BODY_PRIORITY, None), body.pop(BODY_DEADLINE, None)
    header = headers.get(H_PRIORITY)
    field, value = (H_PRIORITY, header) if header is not None and header.strip() else (BODY_PRIORITY, raw_priority)
    level = default_level
    if value is not None:
        try:
            level = parse_level(value)
        except ValueError as e:
            raise InvalidRequest(f"{field}: {e}", param=field) from None
    allowed = principal.scopes.max_priority
    if allowed is not None and level > allowed:
        raise PermissionDenied(f"{field}: {label(level)} is above what tenant {principal.tenant!r} and this key "
                               f"allow ({label(allowed)} at most)", param=field, code="priority_not_allowed")
    header = headers.get(H_DEADLINE)
    field, value = (H_DEADLINE, header) if header is not None and header.strip() else (BODY_DEADLINE, raw_deadline)
    return Asked(level, None if value is None else _deadline(field, value), field)


def _deadline(field: str, value: object) -> float:
    try:
        ms = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else float("nan")
    except ValueError:
        ms = float("nan")
    if not 0 < ms <= MAX_DEADLINE_MS:  # also NaN
        raise InvalidRequest(f"{field}: {value!r} is not a deadline: give the milliseconds within which the first "
                             f"token must arrive, a number above 0 and at most {MAX_DEADLINE_MS:.0f}", param=field)
    return ms
