"""Stored responses (`store: true`), per tenant and per jurisdiction: a conversation never leaves the
jurisdiction that served it.

Each jurisdiction has its own partition, and a response is written only into the partition of the site
that served it, and only when that jurisdiction is one its tenant may use. A follow-up
(`previous_response_id`) finds its history in that partition and is then routed with residency narrowed to
that one jurisdiction (responses_api.py), so the history is read, served and stored again only there; when
no site of that jurisdiction can serve, the follow-up is refused, never moved.

The partitions live in this gateway's memory (bounded, oldest evicted first): a deployment with gateways
in several jurisdictions keeps each partition on the gateways of its jurisdiction; a follow-up that
reaches a gateway without the conversation gets a 404, never another region's copy (docs/responses-api.md).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("aigrid.gateway")


@dataclass(slots=True)
class StoredResponse:
    id: str
    tenant: str
    jurisdiction: str
    site: str
    response: dict[str, Any]
    """The Response object as GET /v1/responses/{id} returns it."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """The conversation up to and including this answer, as chat messages (instructions excluded, as the
    Responses API does not carry them over)."""


class ResponseStore:
    def __init__(self, max_per_jurisdiction: int = 10_000) -> None:
        self._max = max_per_jurisdiction
        self._partitions: dict[str, OrderedDict[tuple[str, str], StoredResponse]] = {}

    def put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool:
        """Keep `record` in its jurisdiction's partition; refuses (False) a jurisdiction the tenant may not use."""
        if allowed is not None and record.jurisdiction not in allowed:
            log.error("response %s of tenant %s served in %s, outside its jurisdictions %s: not stored",
                      record.id, record.tenant, record.jurisdiction, sorted(allowed))
            return False
        part = self._partitions.setdefault(record.jurisdiction, OrderedDict())
        part[(record.tenant, record.id)] = record
        while len(part) > self._max:
            part.popitem(last=False)
        return True

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        for part in self._partitions.values():
            found = part.get((tenant, response_id))
            if found is not None:
                return found
        return None

    def delete(self, tenant: str, response_id: str) -> bool:
        for part in self._partitions.values():
            if part.pop((tenant, response_id), None) is not None:
                return True
        return False

    def jurisdictions_of(self, tenant: str, response_id: str) -> list[str]:
        """Every partition holding this response (tests check that it is exactly one)."""
        return [j for j, part in self._partitions.items() if (tenant, response_id) in part]
