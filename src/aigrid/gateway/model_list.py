"""GET /v1/models: every model the gateway serves, with its kind (chat, or embedding), in one list that both
the OpenAI SDKs (`id`, `object`, `created`, `owned_by`) and the Anthropic SDKs (`type`, `display_name`,
`created_at`, `lifecycle`, `max_input_tokens`, `max_tokens`, `has_more`, `first_id`, `last_id`) read;
GET /v1/models/{id}: one of them (both SDKs' `models.retrieve`). A caller sees the models its key may use
(`Scopes.allows_model`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aigrid.agents.embeddings import Embedder
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


def find_model(spec: GridSpec, embedders: Mapping[str, Embedder], model_id: str,
               scopes: Scopes = ANYONE) -> dict[str, Any] | None:
    """The entry of `model_id` (an embedding model's alias names its model's entry), None when this grid has
    no such model or the caller's key may not use it."""
    for entry in model_list(spec, embedders, scopes)["data"]:
        if model_id == entry["id"] or model_id in entry.get("aliases", ()):
            return entry
    return None


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
