"""OpenAI's cursor lists, read and written once for every list route (input items, conversation items, files,
batches): the query (`limit`, `order`, `after`) checked with a 400 naming the parameter, and the page object
(`{"object": "list", "data", "has_more", "first_id", "last_id"}`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aigrid.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class PageQuery:
    limit: int
    order: str
    """"asc" or "desc"."""
    after: str | None

    @property
    def ascending(self) -> bool:
        return self.order == "asc"


def page_query(query: Mapping[str, str], *, default_limit: int = 20, max_limit: int = 100,
               default_order: str = "desc") -> PageQuery:
    limit = query.get("limit", str(default_limit))
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= max_limit:  # not '²'
        raise InvalidRequest(f"limit must be an integer between 1 and {max_limit}", param="limit")
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    return PageQuery(int(limit), order, query.get("after"))


def page_object(data: Sequence[Mapping[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": list(data), "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
