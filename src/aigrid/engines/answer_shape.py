"""What a chat completion's (or a completion's) texts are, once, for everything that reads an engine's answer: a whole
answer's check (gateway/usage.py: `whole_answer`), the output filter's check of a redacted stream
(gateway/output_filter.py: `OutputFilter.event`), the translating doors' reader of a stream (gateway/chat_events.py)
and the legacy completions' echo (engines/legacy_completions.py).

A choice's texts are its message's (or its delta's) TEXTS, a completion's `text`, and each tool call's `id` and its
function's `name` and `arguments`: each a string, or null. One null rule at every level: null is no text, the same as
the field left out (real engines send `content: null` beside tool calls, SGLang streams `"id": null, "name": null` in
a call's later pieces). So a tool call's `"arguments": null` is a call with no arguments (read as ""), in a whole answer
as in a stream; until the twenty-sixth session a whole answer with it was refused (a 502) while a stream with it
passed. What differs between the levels is only what must be there: a whole answer's choice holds a message object or
a text string, and its tool calls a function object with a string `name`; a streamed piece may hold none of them (a
call's name comes in its first piece only). Anything else (a list as `content`, an object as `arguments`) is text the
output filter does not read and the front doors cannot show: the engine's fault."""

from __future__ import annotations

from typing import Any

TEXTS = ("content", "reasoning_content", "reasoning", "refusal")
"""The texts of a chat message (or a streamed delta) a client reads: the answer, a reasoning model's reasoning
(vLLM's, SGLang's and llama.cpp's `reasoning_content`, vLLM's newer `reasoning`) and a refusal."""


def is_text(value: Any) -> bool:
    """The null rule: a text is a string, or null (no text)."""
    return value is None or isinstance(value, str)


def tool_call_fault(call: Any, whole: bool) -> str | None:
    """Why a tool call (`whole`: of a whole answer's message; else a streamed piece of one) is not one (None: it is):
    an object whose `id`, and whose `function`'s `name` and `arguments`, are texts (is_text); a whole answer's call
    holds a `function` object with a string `name`."""
    if not isinstance(call, dict):
        return "a tool call that is not an object"
    fn = call.get("function")
    if fn is None and not whole:
        return None if is_text(call.get("id")) else "a tool call whose id is not a string"
    if not isinstance(fn, dict):
        return "a tool call whose function is not an object"
    if not (is_text(call.get("id")) and is_text(fn.get("name")) and is_text(fn.get("arguments"))):
        return "a tool call whose id, name or arguments are not strings"
    if whole and fn.get("name") is None:
        return "a tool call that names no function"
    return None


def message_fault(message: Any, whole: bool) -> str | None:
    """Why a choice's message (`whole`) or delta is not one (None: it is): an object whose TEXTS are texts and whose
    `tool_calls` (or null) are a list of tool calls (tool_call_fault)."""
    what = "message" if whole else "delta"
    if not isinstance(message, dict):
        return f"a {what} that is not an object"
    for key in TEXTS:
        if not is_text(message.get(key)):
            return f"a {what} whose {key} is not a string"
    calls = message.get("tool_calls")
    if calls is None:
        return None
    if not isinstance(calls, list):
        return "tool_calls that are not a list"
    for call in calls:
        if (why := tool_call_fault(call, whole)) is not None:
            return why
    return None


def choice_fault(choice: Any, whole: bool) -> str | None:
    """Why one choice (`whole`: of a whole answer; else of a streamed chunk) is not a chat completion's or a
    completion's (None: it is): an object with a text `finish_reason` and a text `text`, its `message` (`delta`) as
    message_fault reads it; a whole answer's choice also has an integer `index` (or none: 0) and holds a message or
    a string `text`."""
    if not isinstance(choice, dict):
        return "a choice that is not an object"
    if whole and type(choice.get("index", 0)) is not int:
        return "a choice whose index is not a whole number"
    if not is_text(choice.get("finish_reason")):
        return "a finish_reason that is not a string"
    text = choice.get("text")
    if not is_text(text):
        return "a text that is not a string"
    message = choice.get("message" if whole else "delta")
    if message is not None:
        return message_fault(message, whole)
    if whole and text is None:
        return "a choice with neither a message nor a text"
    return None
