"""The OpenAI Responses API request, as far as the gateway serves it (docs/responses-api.md lists each field).

Top-level fields are validated here; `input` items, tools and tool_choice are checked item by item during
translation (responses_translate.py), so that each 400 names the exact item and field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from aigrid.gateway.conversations_schema import Metadata
from aigrid.gateway.schemas import _refusing, bounding, null_is_default, number_fields, served_tier


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None


class ContextManagement(BaseModel):
    """One entry of `context_management` (OpenAI's automatic compaction): the only type is `compaction`; its
    `compact_threshold` is the conversation's input tokens above which it is compacted first (None: the gateway's
    share of the model's context, compaction.AUTO_SHARE)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["compaction"]
    compact_threshold: StrictInt | None = Field(default=None, ge=1)


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    _bounded = bounding("input")
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = Field(default=False, strict=True)
    store: bool = Field(default=True, strict=True)
    """`stream` and `store`: null is the default (false, true), as OpenAI's "boolean or null" and the openai SDK's own
    `stream=None`, `store=None` (a 400 "Input should be a valid boolean" until the twenty-eighth session). A boolean,
    as OpenAI's API takes it ("Invalid type for 'stream': expected a boolean, but got a string instead"):
    `"stream": "true"` was a stream, `"store": "false"` not stored, until the twenty-eighth session."""
    _null_is_the_default = null_is_default("stream", "store")
    _typed = number_fields("max_output_tokens", "temperature", "top_p", "top_logprobs", "max_tool_calls")
    """Numbers, as OpenAI's API takes them ("Invalid type for 'max_output_tokens': expected an integer, but got a
    string instead"): `"temperature": "0"`, `"max_output_tokens": "8"` were served until the twenty-eighth session."""
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=128)
    conversation: str | None = Field(default=None, min_length=1, max_length=128)
    """A conversation of the Conversations API (conversations_api.py): its id, or `{"id": ...}` (read as the id)."""
    metadata: Metadata | None = None
    """OpenAI's limits, as Conversations and Batches check them: at most 16 pairs, keys of at most 64
    characters, string values of at most 512."""
    user: str | None = Field(default=None, max_length=256)
    parallel_tool_calls: bool | None = Field(default=None, strict=True)
    max_tool_calls: int | None = Field(default=None, ge=0)
    """OpenAI's "maximum number of total calls to built-in tools that can be processed in a response ... Any further
    attempts to call a tool by the model will be ignored": here the grid's server-side tools the tool loop runs
    (agents/loop.py, `aigrid_max_tool_calls`); at the limit the model answers with what it has, as at the loop's
    step limit. Until the thirty-eighth session it was accepted and ignored as any unlisted field."""
    text: TextConfig | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[str] | None = None
    """Of the includables, `message.output_text.logprobs` is served (the engine's log-probabilities)."""
    context_management: list[ContextManagement] | None = Field(default=None, max_length=1)
    """Automatic compaction (ResponsesApi._auto_compact): at most one entry, as OpenAI has one type."""
    background: bool | None = Field(default=None, strict=True)
    """Run it later, in a task of the gateway (background.py); requires store. GET /v1/responses/{id} polls,
    POST /v1/responses/{id}/cancel stops it."""

    service_tier: str | None = None
    """OpenAI's processing tier, as on chat (schemas.served_tier): `auto` and `default` pass (not sent on: the engines
    have no tiers); `flex`, `scale` and `priority` are a 400 naming `service_tier` (they were accepted and the
    request served at the grid's one tier, the client told nothing, while chat refused them)."""
    _tiers = field_validator("service_tier")(classmethod(lambda cls, v: served_tier(v)))

    prompt: Any = None
    """OpenAI's reusable prompt template (`{id, version, variables}`, stored on OpenAI's platform): not served, a 400
    naming `prompt` (it was accepted and ignored: the template's instructions never reached the model)."""

    _refused = _refusing({"prompt": "prompt templates are not served: this gateway cannot read the prompts stored "
                                     "on OpenAI's platform, so the template's instructions would not reach the model; "
                                     "send the template's text, its variables filled in, as `instructions` (and its "
                                     "messages in `input`)"})

    @field_validator("conversation", mode="before")
    @classmethod
    def _conversation_id(cls, value: Any) -> Any:
        return value["id"] if isinstance(value, dict) and set(value) == {"id"} else value


class CompactRequest(ResponsesRequest):
    """POST /v1/responses/compact (the SDK's `responses.compact`): a model and the conversation to compact, as
    `input` items and/or the stored history of `previous_response_id`, with `instructions`. The other fields of a
    Responses request are accepted and not used (the SDK's image, prompt cache and safety settings are hints
    only); `conversation` and `background` are refused (compaction.py, ResponsesApi.compact), and a `prompt`
    template and a `service_tier` other than `auto` or `default` as in a create."""

    input: str | list[dict[str, Any]] = Field(default_factory=list)
