"""The characters of a chat prompt a model reads, counted one way for the gateway's token estimates (a request's:
gateway/request_info.estimate_prompt_tokens, which sizes its admission and quota reservations and its hang-up charge;
a tool loop's later turn's: turn_prompt_tokens) and for the tool loop's context bound (LoopConfig.max_prompt_chars).

The tools a body offers count as their JSON. A message counts its content (a string, or its parts' `text` and
`refusal`) and what the engines are sent beside it, which a chat template renders into the prompt: an assistant turn's
tool calls (call_chars: an OpenAI call's id, function name and arguments; another form's JSON), a legacy
`function_call` (engines but a hosted one get it as a tool call: engine_body.for_engine), its reasoning as clients
replay it (`reasoning_content`, `reasoning`) and its `refusal` (a refused turn sent back: engines but a hosted one get
it as the content). Until 6 Dec 2026 a request's estimate read its messages' content only and not its tools: an
agent's history of tool calls (their arguments most of its size) was reserved, and charged when its client hung up, at
a small part of its size (40 calls, 59 KB: 713 tokens, now 12,868); a loop turn's read no refusal nor reasoning.
Cheap: no JSON is written but the tools' and a tool call's of a form other than OpenAI's, each alone
(scripts/bench_prompt_estimate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

PART_TEXTS = ("text", "refusal")
"""A content part's texts the model reads: any part's `text`, and an assistant's refusal part's (the chat schema,
gateway.schemas.Message, serves no other part with text). The one definition: the gateway's schema and firewall
(gateway.model_texts) read it from here."""
REASONING_KEYS = ("reasoning_content", "reasoning")
"""An earlier assistant turn's reasoning as clients replay it (vLLM, SGLang, llama.cpp and DeepSeek's
`reasoning_content`; vLLM's newer `reasoning`), which reasoning models' templates (Qwen3, DeepSeek-R1) render: counted
here, read by the firewall (gateway.model_texts)."""
BESIDE_CONTENT = ("refusal", *REASONING_KEYS)
"""A message's texts beside its content that its engine is sent: an assistant's refusal, and its reasoning."""


class ValidatedMessage(Protocol):
    """A chat message as the gateway's schema validated it (gateway.schemas.Message): its content and tool calls, and
    its other fields (refusal, reasoning, a legacy function call) as extra fields."""

    @property
    def content(self) -> Any: ...
    @property
    def tool_calls(self) -> Any: ...
    @property
    def model_extra(self) -> dict[str, Any] | None: ...


class ValidatedChat(Protocol):
    """A chat request as the gateway's schema validated it (gateway.schemas.ChatRequest)."""

    @property
    def tools(self) -> Any: ...
    @property
    def messages(self) -> Sequence[ValidatedMessage]: ...


Size = Callable[[str | bytes], int]
"""How a text is counted: its characters (len, the default), or the gateway's token weight
(gateway.request_info.prompt_units: a quarter token a letter, a token a digit, mark or non-ASCII byte)."""


def message_chars(message: Mapping[str, Any] | ValidatedMessage, size: Size = len) -> int:
    """The characters of one chat message, a JSON object or a validated message: its `content`, its `tool_calls`, and
    its refusal, reasoning and legacy function call (a JSON object's keys; a validated message's extra fields), each
    text counted by `size`."""
    beside: Mapping[str, Any] | None
    if isinstance(message, Mapping):
        content, tool_calls, beside = message.get("content"), message.get("tool_calls"), message
    else:
        content, tool_calls, beside = message.content, message.tool_calls, message.model_extra
    total = 0
    if isinstance(content, str):
        total += size(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                total += sum(size(text) for key in PART_TEXTS if isinstance(text := part.get(key), str))
    if tool_calls:
        total += sum(call_chars(c, size) for c in tool_calls)
    if beside:  # a validated message's extra fields: most often none
        for key in BESIDE_CONTENT:
            text = beside.get(key)
            if isinstance(text, str):
                total += size(text)
        call = beside.get("function_call")
        if call is not None:
            total += call_chars(call, size)
    return total


_CALL_KEYS = frozenset({"id", "type", "function"})
_FUNCTION_KEYS = frozenset({"name", "arguments"})


def call_chars(call: Any, size: Size = len) -> int:
    """A tool call's characters: OpenAI's form (an id, a type, and a `function` of a string `name` and `arguments`,
    nothing else) its id, name and arguments, which templates print as they are (the arguments' JSON, not that JSON
    written again as a string); any other form (a custom tool's call, an object as arguments, keys of the client's
    own) its JSON, written."""
    if isinstance(call, Mapping) and call.keys() <= _CALL_KEYS:
        function = call.get("function")
        if isinstance(function, Mapping) and function.keys() <= _FUNCTION_KEYS:
            name, arguments, cid = function.get("name"), function.get("arguments"), call.get("id")
            if isinstance(name, str) and isinstance(arguments, str) and (cid is None or isinstance(cid, str)):
                return size(name) + size(arguments) + size(cid or "")
    return size(orjson.dumps(call))


def tools_chars(tools: Any, size: Size = len) -> int:
    """Characters of the tools a chat body offers (each one's JSON, which templates print into the system turn)."""
    return sum(size(orjson.dumps(t)) for t in tools) if tools else 0


def prompt_chars(body: Mapping[str, Any] | ValidatedChat, size: Size = len) -> int:
    """Characters of a chat body's messages (message_chars) and the tools it offers natively (tools_chars): the one
    count of a prompt, for a body as JSON (a tool loop's turn) and as the gateway validated it (a request's estimate:
    gateway/request_info.estimate_prompt_tokens)."""
    if isinstance(body, Mapping):
        tools, messages = body.get("tools"), body.get("messages") or ()
    else:
        tools, messages = body.tools, body.messages
    return tools_chars(tools, size) + sum(message_chars(m, size) for m in messages)
