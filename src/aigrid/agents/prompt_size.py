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

from collections.abc import Mapping
from typing import Any

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


def message_chars(content: Any, tool_calls: Any, beside: Mapping[str, Any]) -> int:
    """The characters of one chat message: its `content`, its `tool_calls`, and from `beside` (the message itself
    where it is a JSON object; a validated message's extra fields) its refusal, reasoning and legacy function call."""
    total = 0
    if isinstance(content, str):
        total += len(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                total += sum(len(text) for key in PART_TEXTS if isinstance(text := part.get(key), str))
    if tool_calls:
        total += sum(map(call_chars, tool_calls))
    if beside:  # a validated message's extra fields: most often none
        for key in BESIDE_CONTENT:
            text = beside.get(key)
            if isinstance(text, str):
                total += len(text)
        call = beside.get("function_call")
        if call is not None:
            total += call_chars(call)
    return total


_CALL_KEYS = frozenset({"id", "type", "function"})
_FUNCTION_KEYS = frozenset({"name", "arguments"})


def call_chars(call: Any) -> int:
    """A tool call's characters: OpenAI's form (an id, a type, and a `function` of a string `name` and `arguments`,
    nothing else) its id, name and arguments, which templates print as they are (the arguments' JSON, not that JSON
    written again as a string); any other form (a custom tool's call, an object as arguments, keys of the client's
    own) its JSON, written."""
    if isinstance(call, Mapping) and call.keys() <= _CALL_KEYS:
        function = call.get("function")
        if isinstance(function, Mapping) and function.keys() <= _FUNCTION_KEYS:
            name, arguments, cid = function.get("name"), function.get("arguments"), call.get("id")
            if isinstance(name, str) and isinstance(arguments, str) and (cid is None or isinstance(cid, str)):
                return len(name) + len(arguments) + len(cid or "")
    return len(orjson.dumps(call))


def tools_chars(tools: Any) -> int:
    """Characters of the tools a chat body offers (each one's JSON, which templates print into the system turn)."""
    return sum(len(orjson.dumps(t)) for t in tools) if tools else 0


def prompt_chars(payload: Mapping[str, Any]) -> int:
    """Characters of a chat body's messages (message_chars) and the tools it offers natively (tools_chars)."""
    total = tools_chars(payload.get("tools"))
    for m in payload.get("messages") or ():
        total += message_chars(m.get("content"), m.get("tool_calls"), m)
    return total
