"""Refuse, at the gateway, image input to a model that reads only text, before routing.

An engine without a vision projector answers image parts with a 5xx (llama.cpp: "image input is not
supported"), which the proxy would take for a sick engine: every candidate charged a failure, circuits
opened by a client's input. So the spec says which models take images (models.<name>.vision), and a request
with image parts for a model name that can reach none is a 400 naming the part, as OpenAI's own is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aigrid.errors import InvalidRequest
from aigrid.field_names import Field, field_name
from aigrid.gateway.schemas import IMAGE_PARTS
from aigrid.spec.models import ModelSpec


def takes_images(model: str, models: Mapping[str, ModelSpec]) -> bool:
    """Whether any model the name can route to (a model, a family, or "auto") reads images."""
    if model in models:
        return models[model].vision
    return any(m.vision for m in models.values() if model == "auto" or m.family == model)


def first_image(messages: Any) -> Field | None:
    """The field (its parts) of the first image part of a chat body's messages, if any."""
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind in IMAGE_PARTS:
                return ("messages", i, "content", j)
    return None


def check_images(model: str, body: Mapping[str, Any], models: Mapping[str, ModelSpec]) -> bool:
    """Whether the chat body has image parts (then for a model that reads them; else the 400 below)."""
    where = first_image(body.get("messages"))
    if where is None:
        return False
    if not takes_images(model, models):
        raise InvalidRequest(f"{field_name(where)}: the model '{model}' does not take image input on this grid (no model "
                             "it can route to has `vision: true` in the grid spec)", param=where,
                             code="image_input_not_supported")
    return True
