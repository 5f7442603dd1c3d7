"""How the model asks for a tool: natively (`tool_calls`) or through constrained JSON.

Engines with a tool-calling chat template (vLLM, SGLang, llama.cpp --jinja with a capable model) answer
with OpenAI `tool_calls`. A small model such as SmolLM2-135M has no such template and writes malformed
calls when asked in prose, so in constrained mode every model turn is decoded under a JSON schema (sent
as `response_format: json_schema`, which llama.cpp, vLLM and SGLang turn into a grammar):

    {"tool": "<name>", "arguments": {...that tool's own schema...}}  |  {"answer": "<text>"}

A client's JSON `response_format` (json_schema, json_object) is the answer's schema: {"answer": {...its JSON...}},
and the answer the client gets is that JSON (answer_schema).

The output is then well-formed by construction: the tool name is one of the offered tools and the
arguments satisfy that tool's schema (enums, patterns). parse_turn() reads either form, so a native reply
from an engine asked in constrained mode is understood too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from aigrid.agents.answer_stream import AnswerStream
from aigrid.agents.schema_refs import embedded
from aigrid.json_depth import MAX_DEPTH, too_deep

MAX_ANSWER_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as offered to the model: a server tool from the registry or a client's own tool."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    server: bool
    strict: bool | None = None
    """The client's function `strict` (a client tool's; None where it said nothing): passed on to a native turn."""


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    name: str
    arguments: Mapping[str, Any] | None
    """None when the model's arguments were not a JSON object (then `error` says why)."""
    raw_arguments: str
    error: str | None = None


@dataclass(slots=True)
class Turn:
    """One model reply: tool calls, or an answer (content)."""

    content: str = ""
    calls: list[Call] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def answer_schema(client_format: Mapping[str, Any] | None) -> dict[str, Any]:
    """The schema of the `answer` in a constrained turn: text, or the client's JSON `response_format` (json_schema:
    its `schema`; json_object: any JSON object), so the final answer is that JSON (`{"answer": {...}}`)."""
    kind = client_format.get("type") if client_format else None
    if kind == "json_schema":
        schema = (client_format or {}).get("json_schema", {}).get("schema")
        return dict(schema) if isinstance(schema, Mapping) and schema else {"type": "object"}
    if kind == "json_object":
        return {"type": "object"}
    return {"type": "string", "maxLength": MAX_ANSWER_CHARS}


def structured(client_format: Mapping[str, Any] | None) -> bool:
    """Does the client's response_format ask for JSON (json_object or json_schema)?"""
    return bool(client_format) and (client_format or {}).get("type") in ("json_object", "json_schema")


def step_schema(tools: Sequence[ToolSpec], *, allow_answer: bool = True,
                client_format: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON schema of one constrained model turn offering `tools` (and a final answer, held to the client's
    JSON `response_format` when it has one)."""
    defs: dict[str, Any] = {}  # the embedded schemas' own $defs, at the root where their refs point (schema_refs)
    options: list[dict[str, Any]] = [
        {"type": "object",
         "properties": {"tool": {"const": t.name},
                        "arguments": embedded(t.parameters, f"t{i}-", defs) or {"type": "object"}},
         "required": ["tool", "arguments"], "additionalProperties": False}
        for i, t in enumerate(tools)
    ]
    if allow_answer or not options:
        options.append({"type": "object",
                        "properties": {"answer": embedded(answer_schema(client_format), "answer-", defs)},
                        "required": ["answer"], "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": defs} if defs else schema


def response_format(tools: Sequence[ToolSpec], *, allow_answer: bool = True,
                    client_format: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": "agent_step", "strict": True,
                            "schema": step_schema(tools, allow_answer=allow_answer, client_format=client_format)}}


def system_prompt(tools: Sequence[ToolSpec], answer: str = "TEXT") -> str:
    """`answer`: how the prompt names the answer (TEXT, or the client's JSON format's, which the grammar holds)."""
    if not tools:
        return ('You are an agent. Use the tool results above to answer the question. '
                f'Reply with ONE JSON object: {{"answer": {answer}}}.')
    lines = ["You are an agent that answers by calling tools. Tools:"]
    for t in tools:
        lines.append(f"- {t.name}: {t.description} Arguments: {arguments_text(t.parameters)}")
    lines.append('Reply with ONE JSON object: {"tool": NAME, "arguments": {...}} to call a tool, or '
                 f'{{"answer": {answer}}} when the tool results answer every part of the question.')
    return "\n".join(lines)


def arguments_text(parameters: Mapping[str, Any], max_values: int = 50) -> str:
    """A tool's arguments in words for the prompt: `"source" (the start, one of Lyon, Paris)`. Small
    models follow this better than a JSON schema dump; the grammar enforces the schema anyway."""
    parts = []
    for name, prop in (parameters.get("properties") or {}).items():
        notes = [str(prop["description"])] if isinstance(prop, Mapping) and prop.get("description") else []
        if isinstance(prop, Mapping) and isinstance(prop.get("enum"), list):
            values = [str(v) for v in prop["enum"]]
            more = f" (+{len(values) - max_values} more)" if len(values) > max_values else ""
            notes.append("one of " + ", ".join(values[:max_values]) + more)
        parts.append(f'"{name}"' + (f" ({'; '.join(notes)})" if notes else ""))
    return ", ".join(parts) or "none"


def tool_result_message(name: str, result: str) -> dict[str, Any]:
    """How a tool's result is shown to a model that has no tool role in its template."""
    return {"role": "user", "content": f"{name} result: {result}"}


def constrained_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec],
                         client_format: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The client's conversation rewritten for constrained mode: our tool prompt merged into the system
    message, earlier assistant tool calls as the JSON the grammar produces and tool results as user turns
    (templates without tool support render neither `tool_calls` nor the `tool` role). A turn's text beside its
    calls (a chat, Messages or Responses turn of text and a call) is kept as text, as an earlier answer is printed,
    in the same assistant message, before its first call's JSON (it was dropped: the model never read what it said).

    A turn of several calls is ONE assistant message (its text, then each call's JSON, one a line, in order) and
    its results ONE user message (each `NAME result: ...`, in order, a blank line between), the user's text that
    follows them too (a Messages turn of tool_result and text blocks; a chat tool message, then a user one): as
    several messages in a row, roles did not alternate and templates that require it (Gemma, Mistral) refused the
    conversation. The model still writes ONE call a turn (the grammar holds it to one object, parse_turn reads
    one): the system prompt says so (MANY_CALLS) when the history shows a turn of several."""
    system = [system_prompt(tools, "A JSON OBJECT in the requested format" if structured(client_format) else "TEXT")]
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    results: list[str] | None = None  # the texts of the user message of the results that follow the last calls
    joined: list[tuple[dict[str, Any], list[str]]] = []  # each such message and its texts, joined once at the end
    many = False
    for m in messages:
        role = m.get("role")
        if role in ("tool", "function"):
            name = names.get(str(m.get("tool_call_id", "")), str(m.get("name") or "tool"))
            shown = tool_result_message(name, _text_of(m.get("content")))
            if results is None:
                results = [shown["content"]]
                joined.append((shown, results))
                out.append(shown)
            else:
                results.append(shown["content"])
            continue
        if role == "user" and results is not None and _only_text(m.get("content")):
            results.append(_text_of(m.get("content")))  # the user's words after the results
            continue
        results = None
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content")))
        elif role == "assistant" and m.get("tool_calls"):
            text = _text_of(m.get("content"))  # the turn's words before its calls: printed as an answer's text is
            steps = []
            for tc in m["tool_calls"]:
                fn = tc.get("function", {})
                names[tc.get("id", "")] = fn.get("name", "tool")
                args = _shallow(_json_object(fn.get("arguments", "{}"))) or {}
                steps.append(orjson.dumps({"tool": fn.get("name"), "arguments": args}).decode())
            many = many or len(steps) > 1
            out.append({"role": "assistant", "content": "\n".join([text, *steps] if text else steps)})
        else:
            out.append(dict(m))
    for message, texts in joined:  # (added to as they came, `+=`, each result copied all before it again: quadratic)
        message["content"] = "\n\n".join(texts)
    if many:
        system.insert(1, MANY_CALLS)
    return [{"role": "system", "content": "\n\n".join(s for s in system if s)}, *out]


MANY_CALLS = ("An earlier turn above shows several tool calls, one JSON object a line; each reply of yours is still "
              "ONE JSON object (one tool call, or the answer).")
"""Said in the system prompt when the history shows a turn of several calls (constrained_messages)."""


def _only_text(content: Any) -> bool:
    """A user message's content that _text_of prints whole (no image part it would drop)."""
    return isinstance(content, str) or (isinstance(content, list) and all(
        isinstance(p, Mapping) and isinstance(p.get("text"), str) for p in content))


def _text_of(content: Any) -> str:
    """A message's content as the text a constrained prompt prints: a list of parts as its parts' `text`, which
    is what the firewall read (gateway/model_texts.chat_texts), never `str()` of the list (every key and value
    of every part, unread)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def _shallow(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """`value`, unless it nests deeper than json_depth.MAX_DEPTH: a model's arguments are written out again as JSON
    (the client's `aigrid_steps`, the next constrained turn), and orjson writes at most 254 levels."""
    return value if value is None or too_deep(value) is None else None


def _json_object(raw: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


NOT_AN_OBJECT = f"the arguments are not a JSON object (of at most {MAX_DEPTH} levels)"
CUT_OFF = "the reply was cut off (max_tokens)"
"""The error of a constrained turn's tool call that max_tokens ended before its JSON did (the loop ends there)."""


def parse_turn(turn: Turn, native_calls: Sequence[Mapping[str, Any]], constrained: bool) -> Turn:
    """Fill turn.calls from native tool_calls, or (constrained mode) from the JSON content; an
    {"answer": ...} object becomes the turn's content."""
    for nc in native_calls:
        raw = str(nc.get("arguments") or "")
        args = _shallow(_json_object(raw))
        turn.calls.append(Call(id=str(nc.get("id") or new_call_id()), name=str(nc.get("name") or ""),
                               arguments=args, raw_arguments=raw, error=None if args is not None else NOT_AN_OBJECT))
    if turn.calls or not constrained:
        return turn
    obj = _json_object(turn.content)
    if obj is None:
        partial = AnswerStream()
        answer = partial.feed(turn.content)
        if partial.is_answer:  # an answer cut off by max_tokens: keep what was written, as OpenAI does
            turn.content = answer
        elif turn.finish_reason == "length":
            turn.calls.append(Call(new_call_id(), "", None, turn.content, CUT_OFF))
        return turn  # else not JSON: an engine that ignored the schema; the text is the answer
    if too_deep(obj) is not None:  # a tool's arguments, or an answer, nested past what is written out again
        name = obj.get("tool")
        turn.calls.append(Call(new_call_id(), name if isinstance(name, str) else "", None, "", NOT_AN_OBJECT))
    elif "tool" in obj:
        args = obj.get("arguments")
        turn.calls.append(Call(new_call_id(), str(obj["tool"]), args if isinstance(args, dict) else None,
                               orjson.dumps(args).decode(), None if isinstance(args, dict) else NOT_AN_OBJECT))
    elif "answer" in obj:  # a string, or the client's JSON format's answer (an object): written out as its JSON
        answer = obj["answer"]
        turn.content = answer if isinstance(answer, str) else orjson.dumps(answer).decode()
    return turn
