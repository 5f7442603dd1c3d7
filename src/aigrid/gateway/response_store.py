"""Stored responses (`store: true`), per tenant and per jurisdiction: a conversation never leaves the
jurisdiction that served it.

Each jurisdiction has its own partition, and a response is written only into the partition of the site
that served it, and only when that jurisdiction is one its tenant may use. A follow-up
(`previous_response_id`) finds its history in that partition and is then routed with residency narrowed to
that one jurisdiction (responses_api.py), so the history is read, served and stored again only there; when
no site of that jurisdiction can serve, the follow-up is refused, never moved.

A record keeps only its own turn (the new input and the answer) and the id of the response it continued;
the history is the chain of turns, read back within the one partition, so a long conversation costs memory
linear in its length. Each partition holds at most `max_bytes` of turns (their memory, footprint.py); over it, the tenant holding the most
loses its oldest first (fair_lru.py: a tenant cannot push out the others' conversations); a follow-up whose
chain lost a turn to eviction is refused (404), never answered from a partial history.

A background response (`background: true`, background.py) is announced before any site is chosen by a
placeholder (`Pending`: its id, tenant, key id, model, creation time, status, once it failed the error, and
the request's numeric, boolean and mode settings its Response echoes: never text), kept
outside the partitions because it holds no conversation content; at most `max_pending` of them, the oldest
of the tenant holding the most out first. Its answer is stored like any other, into its site's partition, and the placeholder dropped in the
same step (`complete`), so that a cancel either comes first (nothing is stored) or finds the answer; a run
that ends without an answer (failed, cancelled) leaves only its placeholder with the final status.

A placeholder in a shared store (the hub here, a Redis) names its owner, the process that runs it
(background.BackgroundRuns.owner), which renews its lease every poll while it has runs (`heartbeat`). A
reader that finds a queued or in-progress placeholder whose owner's lease has ended (its process died)
fails it (`abandon`): once, whoever races, and never one whose owner renews.

This is the in-memory store: a gateway's (or, with --workers, its hub's). A jurisdiction named in
`gateway.stores` keeps its partition in that Redis instead, shared by every gateway that names it
(stores_redis.py, behind the one interface of stores.py); a follow-up that reaches a gateway without the
conversation gets a 404, never another region's copy (docs/responses-api.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aigrid.gateway.event_log import EventLogs
from aigrid.gateway.fair_lru import FairLru
from aigrid.gateway.footprint import RECORD, footprint

log = logging.getLogger("aigrid.gateway")
MAX_BYTES = 256 * 1024 * 1024
"""Default budget of one jurisdiction's partition: its turns and stored Response objects, in this process's
memory as footprint.py estimates it (before, as JSON bytes: ~1 GiB held for 256 MiB counted)."""


@dataclass(slots=True)
class StoredResponse:
    id: str
    tenant: str
    jurisdiction: str
    site: str
    response: dict[str, Any]
    """The Response object as GET /v1/responses/{id} returns it."""
    turn: list[dict[str, Any]] = field(default_factory=list)
    """This request's input and its answer, as chat messages (instructions excluded: the Responses API
    does not carry them over)."""
    previous: str | None = None
    """The response this one continued: the rest of the history."""
    size: int = 0
    inputs: list[dict[str, Any]] = field(default_factory=list)
    """This request's input as Response items, with ids (GET /v1/responses/{id}/input_items)."""
    models: list[str] = field(default_factory=list)
    """The grid models whose answers it holds: its own and every earlier turn's of its previous_response_id chain
    (produced_by); empty in a record written before the thirty-fifth session."""
    listed: list[str] = field(default_factory=list)
    """The grid tools an `mcp_list_tools` item of it or of its previous_response_id chain lists (their names): a
    continuation that offers no other lists them no more, as OpenAI's (responses_translate.held_tools); empty in a
    record written before the thirty-eighth session."""

    def produced_by(self) -> list[str]:
        """The grid models whose answers this record and its history hold (a record of before `models`: its own)."""
        own = self.response.get("model")
        return self.models or ([own] if isinstance(own, str) else [])


FINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
"""The statuses a Response never leaves."""
REFUSED = {"code": "server_error", "message": "the answer could not be stored in a jurisdiction this tenant may use"}
"""A background response's error when its answer was refused by its jurisdiction's partition (put)."""
UNKEPT = frozenset({"cancelled", "failed"})
"""A placeholder's statuses that refuse its run's late answer (`complete`) and stop its run (`cancelled`)."""
PENDING_MAX = 50_000
"""Default number of background placeholders kept (each a few hundred bytes)."""


@dataclass(slots=True)
class Pending:
    """A background response without a stored answer: queued, in progress, or ended without one (failed,
    cancelled). No conversation content: it may be kept outside the jurisdiction partitions."""

    id: str
    tenant: str
    model: str
    created_at: int
    status: str = "queued"
    error: dict[str, Any] | None = None
    """Once failed: the Response's `error` ({"code", "message"}: no prompt text)."""
    owner: str = ""
    """The process that runs it (background.BackgroundRuns.owner), whose lease says it is alive; "": none
    (a gateway's own memory, which dies with its runs)."""
    key_id: str = ""
    """The key that created it (security.principal.Principal.key_id): the audit record of a run whose owner
    died names it (responses_api.py `_look`); "": a placeholder written before it was kept."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The request's settings its Response echoes (responses_translate.settings: max_output_tokens,
    temperature, top_p, parallel_tool_calls, the tool_choice mode): numbers, booleans and a mode, never text."""
    scopes: dict[str, Any] | None = None
    """What its creator was allowed (the creating principal's scopes, Scopes.to_dict()): who else may read its event
    log, cancel or delete it (responses_api._may_follow); None: a placeholder written before they were kept."""


def may_store(record: StoredResponse, allowed: frozenset[str] | None) -> bool:
    """Whether `record`'s jurisdiction is one its tenant may use (`allowed`, None: any); a refusal is logged.
    Every store's `put` asks it (this one, stores_redis.py)."""
    if allowed is None or record.jurisdiction in allowed:
        return True
    log.error("response %s of tenant %s served in %s, outside its jurisdictions %s: not stored",
              record.id, record.tenant, record.jurisdiction, sorted(allowed))
    return False


class BrokenHistory(LookupError):
    """A turn of the conversation was evicted (or deleted): its history cannot be rebuilt."""


class ResponseStore:
    def __init__(self, max_bytes: int = MAX_BYTES, max_pending: int = PENDING_MAX) -> None:
        self._max = max_bytes
        self._partitions: dict[str, FairLru[StoredResponse]] = {}  # per jurisdiction, each within max_bytes
        self._pending: FairLru[Pending] = FairLru(max_pending)  # a count: each placeholder weighs 1
        self._leases: dict[str, float] = {}  # owner -> when its lease ends (time.monotonic); absent: ended
        self.events = EventLogs()
        """The event logs of background responses created with stream (event_log.py): bounded on their own."""

    def put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool:
        """Keep `record` in its jurisdiction's partition; refuses (False) a jurisdiction the tenant may not use."""
        if not may_store(record, allowed):
            return False
        record.size = (RECORD + footprint(record.turn) + footprint(record.response) + footprint(record.inputs)
                       + footprint(record.models) + footprint(record.listed))
        part = self._partitions.get(record.jurisdiction)
        if part is None:
            part = self._partitions[record.jurisdiction] = FairLru(self._max)
        part.put(record.tenant, record.id, record, record.size)
        return True

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        for part in self._partitions.values():
            found = part.get(tenant, response_id)
            if found is not None:
                return found
        return None

    def history(self, record: StoredResponse) -> list[dict[str, Any]]:
        """The whole conversation up to and including `record`, read from its own partition only."""
        part = self._partitions.get(record.jurisdiction)
        turns = [record.turn]
        previous = record.previous
        while previous is not None:
            earlier = part.get(record.tenant, previous) if part is not None else None
            if earlier is None:
                raise BrokenHistory(previous)
            turns.append(earlier.turn)
            previous = earlier.previous
        return [message for turn in reversed(turns) for message in turn]

    def delete(self, tenant: str, response_id: str) -> bool:
        return any(part.pop(tenant, response_id) is not None for part in self._partitions.values())

    def jurisdictions_of(self, tenant: str, response_id: str) -> list[str]:
        """Every partition holding this response (tests check that it is exactly one)."""
        return [j for j, part in self._partitions.items() if (tenant, response_id) in part]

    # --- background placeholders ------------------------------------------------------------------------
    def add_pending(self, pending: Pending) -> None:
        self._pending.put(pending.tenant, pending.id, pending, 1)

    def lookup(self, tenant: str, response_id: str) -> StoredResponse | Pending | None:
        """The stored response, else its background placeholder (one step: never neither while it moves)."""
        return self.get(tenant, response_id) or self._pending.get(tenant, response_id)

    def mark(self, tenant: str, response_id: str, status: str, error: dict[str, Any] | None = None) -> Pending | None:
        """A placeholder moved on to `status` (`cancelled` is the client's cancel); one in a final status
        stays as it is (a cancel wins over the failure the cancelled run reports next)."""
        found = self._pending.get(tenant, response_id)
        if found is not None and found.status not in FINAL:
            found.status, found.error = status, error
        return found

    def complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str:
        """A background response's answer, stored in its site's partition with its placeholder dropped, in
        one step: "stored"; "cancelled" when the client's cancel came first, "failed" when a reader failed it
        first (`abandon`: its owner's lease had ended), nothing stored either way; "refused" when the
        partition refused it (put): the placeholder then says failed."""
        found = self._pending.get(record.tenant, record.id)
        if found is not None and found.status in UNKEPT:
            return found.status
        if not self.put(record, allowed):
            self.mark(record.tenant, record.id, "failed", dict(REFUSED))
            return "refused"
        self._pending.pop(record.tenant, record.id)
        return "stored"

    def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        """Of these (tenant, id), the ids whose placeholder says cancelled (its client's act), or failed by a reader
        that took its owner for dead (the grid's), each with that status: a worker's runs to stop, and why."""
        return {rid: found.status for tenant, rid in keys
                if (found := self._pending.get(tenant, rid)) is not None and found.status in UNKEPT}

    def heartbeat(self, owner: str, lease_s: float) -> None:
        """`owner`'s runs are alive for `lease_s` more (the owner renews it every poll while it has runs)."""
        now = time.monotonic()
        for ended in [o for o, until in self._leases.items() if until <= now]:
            del self._leases[ended]
        self._leases[owner] = now + lease_s

    def abandon(self, pending: Pending, error: dict[str, Any]) -> Pending | None:
        """`pending` failed with `error` when it is still queued or in progress, still `pending.owner`'s, and
        that owner's lease has ended (its process died): the placeholder as failed; None when nothing
        changed (its owner is alive, it moved on, or another reader failed it first)."""
        found = self._pending.get(pending.tenant, pending.id)
        if (found is None or found.status in FINAL or not found.owner or found.owner != pending.owner
                or self._leases.get(found.owner, 0.0) > time.monotonic()):
            return None
        found.status, found.error = "failed", error
        return found

    def delete_pending(self, tenant: str, response_id: str) -> Pending | None:
        """The placeholder, removed only when its run has ended (a running one must be cancelled first)."""
        found = self._pending.get(tenant, response_id)
        if found is not None and found.status in FINAL:
            self._pending.pop(tenant, response_id)
        return found
