"""GET /v1/models: every model the gateway serves, with its kind (chat, or embedding), in one list that both
the OpenAI SDKs (`id`, `object`, `created`, `owned_by`) and the Anthropic SDKs (`type`, `display_name`,
`created_at`, `has_more`, `first_id`, `last_id`) read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aigrid.agents.embeddings import Embedder
from aigrid.spec.models import GridSpec

EPOCH = "1970-01-01T00:00:00Z"
"""Models on a grid have no release date; both SDKs want one."""


def _entry(model_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "aigrid", "type": "model",
            "display_name": model_id, "created_at": EPOCH, "kind": kind, **extra}


def model_list(spec: GridSpec, embedders: Mapping[str, Embedder]) -> dict[str, Any]:
    data = [_entry(name, "chat", family=m.family, params_b=m.params_b, max_input_tokens=m.context)
            for name, m in spec.models.items()]
    data.append(_entry("auto", "chat", display_name="auto (the router picks the model)"))
    aliases: dict[str, list[str]] = {}
    for alias, embedder in embedders.items():
        aliases.setdefault(embedder.model, []).append(alias)
    for name, names in aliases.items():
        data.append(_entry(name, "embedding", dimensions=embedders[names[0]].dimensions,
                           aliases=sorted(a for a in names if a != name)))
    return {"object": "list", "data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
