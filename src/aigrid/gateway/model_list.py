"""GET /v1/models: every model the gateway serves, with its kind (chat, or embedding), in one list that both
the OpenAI SDKs (`id`, `object`, `created`, `owned_by`) and the Anthropic SDKs (`type`, `display_name`,
`created_at`, `lifecycle`, `max_input_tokens`, `max_tokens`, `has_more`, `first_id`, `last_id`) read;
GET /v1/models/{id}: one of them (both SDKs' `models.retrieve`). A caller sees the models its key may use
(`Scopes.allows_model`). Anthropic's `limit`, `after_id` and `before_id` page the list (`model_page`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aigrid.agents.embeddings import Embedder
from aigrid.errors import InvalidRequest
from aigrid.gateway.context_window import smallest_context
from aigrid.gateway.cursor_list import page_after, page_object, page_query
from aigrid.security.principal import Scopes
from aigrid.spec.models import GridSpec

ANYONE = Scopes()
"""No limit: every model (enforcement off, or a key without model scopes)."""
EPOCH = "1970-01-01T00:00:00Z"
"""Models on a grid have no release date; both SDKs want one."""


def _entry(model_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    """`lifecycle` is required in Anthropic's ModelInfo (the SDK left it None: a strict read refused it)."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "aigrid", "type": "model",
            "display_name": model_id, "created_at": EPOCH, "lifecycle": "active", "kind": kind, **extra}


def model_list(spec: GridSpec, embedders: Mapping[str, Embedder], scopes: Scopes = ANYONE) -> dict[str, Any]:
    data = [entry for entry in _entries(spec, embedders) if scopes.allows_model(entry["id"])]
    return {"object": "list", "data": data, "has_more": False,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


MAX_PAGE = 1000
"""Anthropic's largest `limit` of a models page."""


def model_page(listing: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """The page of `listing` (model_list's) that Anthropic's query asks for: `limit` (1-1000, 20 by default),
    `after_id` or `before_id` (the models right after or right before that one); a query with none of them
    (OpenAI's `models.list`, which has no pages) gets the whole list. A bad value is the 400 naming it."""
    if not any(k in query for k in ("limit", "after_id", "before_id")):
        return dict(listing)
    limit = page_query(query, max_limit=MAX_PAGE, ordered=False).limit
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise InvalidRequest("after_id: give after_id or before_id, not both", param="after_id")
    data, ids = listing["data"], [m["id"] for m in listing["data"]]
    if before is not None:
        if before not in ids:
            raise InvalidRequest(f"before_id: no model {before!r}", param="before_id")
        end = ids.index(before)
        rows, more = data[max(0, end - limit):end], end > limit
    else:
        found = page_after(data, ids, after, limit)
        if found is None:
            raise InvalidRequest(f"after_id: no model {after!r}", param="after_id")
        rows, more = found
    return page_object(rows, more)


def find_model(spec: GridSpec, embedders: Mapping[str, Embedder], model_id: str,
               scopes: Scopes = ANYONE) -> dict[str, Any] | None:
    """The entry of `model_id` (an embedding model's alias names its model's entry; a chat models' family, which
    every model call takes, `_family`'s), None when this grid has no such model or the caller's key may not
    use it."""
    for entry in model_list(spec, embedders, scopes)["data"]:
        if model_id == entry["id"] or model_id in entry.get("aliases", ()):
            return entry
    return _family(spec, model_id, scopes)


def _family(spec: GridSpec, family: str, scopes: Scopes) -> dict[str, Any] | None:
    """A family's own entry (not listed: the list holds models), for a caller who may use a model of it: `model:
    "smollm2"` is served by any model of that family (docs/routing.md), so `models.retrieve("smollm2")` was a
    404 that the model call's own 404 listed as available. `models` names the family's models the caller may
    use."""
    members = {name: m for name, m in spec.models.items() if m.family == family and scopes.allows_model(name)}
    context = smallest_context(family, members)  # None: no model of the family the caller may use
    if context is None or not scopes.allows_model(family):  # authorize.authorize checks the name asked for too
        return None
    return _entry(family, "chat", display_name=f"{family} (any model of the family)", family=family,
                  models=list(members), max_input_tokens=context,
                  max_tokens=min(spec.gateway.max_output_tokens, context))


def _entries(spec: GridSpec, embedders: Mapping[str, Embedder]) -> list[dict[str, Any]]:
    limit = spec.gateway.max_output_tokens  # a larger max_tokens is a 400
    data = [_entry(name, "chat", family=m.family, params_b=m.params_b, max_input_tokens=m.context,
                   max_tokens=min(limit, m.context)) for name, m in spec.models.items()]
    data.append(_entry("auto", "chat", display_name="auto (the router picks the model)", max_tokens=limit))
    aliases: dict[str, list[str]] = {}
    for alias, embedder in embedders.items():
        aliases.setdefault(embedder.model, []).append(alias)
    for name, names in aliases.items():
        data.append(_entry(name, "embedding", dimensions=embedders[names[0]].dimensions,
                           aliases=sorted(a for a in names if a != name)))
    return data
