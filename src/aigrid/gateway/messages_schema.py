"""The Anthropic Messages API request, as far as the gateway serves it (docs/messages-api.md lists each field).

Validated strictly where the translation depends on a field, so that a bad request gets a 400 in
Anthropic's error shape naming the field; unknown top-level fields and block extras (cache_control,
citations) are accepted and ignored, as a gateway in front of other models must.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from aigrid.gateway.schemas import MAX_PARTS, bounding, counted_parts, null_is_default, number_fields


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


def nonblank(text: str) -> str:
    """Anthropic's rule for text content: a 400 for an empty or whitespace-only text (the engine never sees it)."""
    if not text:
        raise PydanticCustomError("empty_text", "text content blocks must be non-empty")
    if text.isspace():
        raise PydanticCustomError("blank_text", "text content blocks must contain non-whitespace text")
    return text


class TextBlock(_Open):
    type: Literal["text"]
    text: str

    _nonblank = field_validator("text")(nonblank)


class ImageSource(_Open):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ImageBlock(_Open):
    type: Literal["image"]
    source: ImageSource


class DocumentSource(_Open):
    type: Literal["text", "content", "base64", "url", "file"]
    media_type: str | None = None
    data: str | None = None
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None


class DocumentBlock(_Open):
    """A document the user hands the model (RAG): its text is read as data, by the firewall's document head."""

    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    input: dict[str, Any]


class SearchResultBlock(_Open):
    """A search result a tool returned (Anthropic's `search_result`): its title, source and text blocks."""

    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: str | list[Annotated[TextBlock | ImageBlock | DocumentBlock | SearchResultBlock,
                                  Field(discriminator="type")]] | None = None
    """Anthropic's forms: a string, or text, image, document and search_result blocks (an agent keeps them in
    every later turn, so a form refused here would refuse the rest of its session)."""
    is_error: bool | None = Field(default=None, strict=True)


class ThinkingBlock(_Open):
    """Replayed by agents from earlier turns; no model behind the grid reads them back, so they are dropped."""

    type: Literal["thinking", "redacted_thinking"]


Block = Annotated[TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
                  Field(discriminator="type")]


class MessageParam(_Open):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(_Open):
    type: Literal["custom"] | None = None
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = Field(default=None, strict=True)
    """Anthropic's strict tool use (its input decoded under the schema's grammar): the chat function's `strict`."""

    @field_validator("type", mode="before")
    @classmethod
    def _custom_only(cls, v: object) -> object:
        """Anthropic's server tools (web_search_..., code_execution_..., bash_..., ...) run on Anthropic's servers:
        said so, where pydantic's "Input should be 'custom'" left the caller guessing."""
        if v is not None and v != "custom":
            raise PydanticCustomError("server_tool", "{kind} is not served: this grid runs no Anthropic server tools "
                                      "(web search, code execution, ...); send your own tools as custom tools (name, "
                                      "description, input_schema)", {"kind": repr(v)})
        return v

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Anthropic's rule: a tool's input is an object (`input_schema.type: "object"`). Another type was taken,
        and the model's array or string came back as `{"_raw": ...}` (tool_input), not the input the client's tool
        was written for."""
        if "type" in v and v["type"] != "object":  # none at all: the model still writes an object
            raise PydanticCustomError("object_schema", "its type should be 'object', not {kind} (a tool's input is an "
                                      "object)", {"kind": repr(v["type"])})
        return v


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, min_length=1)
    disable_parallel_tool_use: bool | None = Field(default=None, strict=True)


class Metadata(_Open):
    user_id: str | None = Field(default=None, max_length=256)


class JsonOutputFormat(_Open):
    """Anthropic's structured output (`output_config.format`, or the beta's top-level `output_format`): the
    answer is JSON valid under `schema` (served as chat `response_format` json_schema: the engine's grammar)."""
    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Open):
    format: JsonOutputFormat | None = None


class CountTokensRequest(_Open):
    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageParam] = Field(min_length=1)
    _bounded = bounding("messages")
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None

    @field_validator("system", mode="before")
    @classmethod
    def _bounded_system(cls, v: object, info: ValidationInfo) -> object:
        """The system blocks count with the messages and their blocks (counted_parts, bounded_parts' counter) towards
        MAX_PARTS, on the raw JSON before any block is validated: a 400 naming `system` (100,000 system blocks
        were validated whole)."""
        if not isinstance(v, list):
            return v
        count = len(v) + counted_parts(info.data.get("messages"))  # validated: at most MAX_PARTS with their parts
        if count > MAX_PARTS:
            raise ValueError(f"{count:,} system blocks, messages and content parts in one request, more than the "
                             f"{MAX_PARTS:,} one request may hold: join the system text blocks, or send fewer")
        return v

    tool_choice: ToolChoice | None = None
    mcp_servers: Any = None
    """Anthropic's MCP connector (remote MCP servers whose tools Anthropic's servers call): not served, a 400 naming
    `mcp_servers` (it was accepted and ignored: the model answered without the servers' tools). None or [] passes."""

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _no_mcp_connector(cls, v: object) -> object:
        if v is not None and v != []:
            raise PydanticCustomError(
                "mcp_connector", "the MCP connector is not served: this gateway does not connect to a request's remote "
                "MCP servers, so their tools would not reach the model; run them on your side and send them as custom "
                "tools (name, description, input_schema), answering their tool_use, or have the grid's operator "
                "register the server as a server-side tool (docs/agents.md)")
        return v


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=0)
    """0 is Anthropic's prompt cache pre-warm: the prompt is read, nothing is answered (messages_translate.PREWARM)."""
    stop_sequences: list[str] | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _nonempty_stops(cls, v: list[str] | None) -> list[str] | None:
        """Anthropic's rule (its words): an empty stop sequence ended every answer before its first token
        (llama.cpp matches it at once): an empty `end_turn` message."""
        if v is not None and not all(v):
            raise PydanticCustomError("empty_stop", "each stop sequence must be non-empty")
        return v
    stream: bool = Field(default=False, strict=True)
    """A boolean, as Anthropic's API takes it ("stream: Input should be a valid boolean"): `"stream": "true"` streamed
    until the twenty-eighth session. Null is the default, not streamed (null_is_default, as on every door of the grid;
    Anthropic's API refuses a null, and its SDKs send none)."""
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    _null_stream = null_is_default("stream")
    _typed = number_fields("max_tokens", "temperature", "top_p", "top_k")
    """Numbers, as Anthropic's API takes them ("temperature: Input should be a valid number"): `"max_tokens": "8"`
    and `"temperature": "0.5"` were served until the twenty-eighth session."""
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = None
