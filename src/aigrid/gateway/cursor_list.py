"""OpenAI's cursor lists, read and written once for every list route (input items, conversation items, files,
batches): the query (`limit`, `order`, `after`) checked with a 400 naming the parameter, and the page object
(`{"object": "list", "data", "has_more", "first_id", "last_id"}`), and the page after a cursor (`page_after`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aigrid.errors import InvalidRequest
from aigrid.gateway.numbers import plain_int

T = TypeVar("T")


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
               default_order: str = "desc", ordered: bool = True) -> PageQuery:
    """`ordered=False`: a list without `order` in its API (OpenAI's batches, Anthropic's message batches,
    always newest first): an `order` is a 400 naming it, never accepted and ignored."""
    limit = plain_int(query.get("limit", str(default_limit)))
    if limit is None or not 1 <= limit <= max_limit:
        raise InvalidRequest(f"limit must be an integer between 1 and {max_limit}", param="limit")
    if not ordered and "order" in query:
        raise InvalidRequest("order: not a parameter of this list, which is always newest first (page it with "
                             "limit and its cursor)", param="order")
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
    return PageQuery(limit, order, query.get("after"))


def page_object(data: Sequence[Mapping[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": list(data), "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def page_after(rows: Sequence[T], ids: Sequence[str | None], after: str | None,
               limit: int) -> tuple[list[T], bool] | None:
    """The `limit` rows after the one whose id is `after` (from the first when None), and whether more
    follow; None: no row has the id `after`. `ids`: each row's id, in the same order."""
    start = 0
    if after is not None:
        if after not in ids:
            return None
        start = list(ids).index(after) + 1
    return list(rows[start:start + limit]), len(rows) - start > limit
