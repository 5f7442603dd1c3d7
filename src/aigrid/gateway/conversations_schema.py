"""The Conversations API's request bodies (conversations_api.py; docs/responses-api.md, "Conversations").

Strict: an unknown field is the client's 400 naming it (no field of these bodies may be silently ignored).
Items are checked one by one as Responses input items when they are added (conversations_api.py), so each
400 names the exact item and field (`items.2.content.0.type`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_ITEMS = 20
"""Items one request may add (OpenAI's limit)."""
Metadata = Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                     Field(max_length=16)]
"""OpenAI's metadata: at most 16 pairs, keys of at most 64 characters, values of at most 512."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversationCreate(_Strict):
    items: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_ITEMS)
    metadata: Metadata | None = None


class ConversationUpdate(_Strict):
    metadata: Metadata | None
    """Replaces the metadata (null: none)."""


class ConversationItemsCreate(_Strict):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS)
