"""Anthropic Messages <-> Chat Completions, both ways, without I/O.

A request becomes an ordinary chat body for the one pipeline (routes.Routes.route): the system prompt a
system message, content blocks chat content parts, an assistant's `tool_use` blocks its `tool_calls`, a
user's `tool_result` blocks `tool` messages (placed first, as they answer the preceding assistant turn), a
user's other blocks one user message in their order, a `document` block (plain text, or text blocks) a text
part of it which the firewall reads as a document (`placed_messages`' `documents`),
`stop_sequences` -> `stop`, `metadata.user_id` -> `user`, tools and tool_choice their chat forms. A chat
answer becomes a Message (errors become Anthropic's shape in envelope.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from aigrid.agents.loop import OrphanToolResult, UnansweredToolCalls, check_tool_results
from aigrid.errors import ApiError, InvalidRequest
from aigrid.field_names import field_name
from aigrid.gateway.chat_events import cached_of, matched_stop
from aigrid.gateway.continuation import EchoStrip
from aigrid.gateway.front_door import DOCUMENT_IN_TOOL_RESULT, IMAGE_IN_TOOL_RESULT, name_own_field
from aigrid.gateway.messages_schema import (
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    SearchResultBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from aigrid.gateway.urgency import body_urgency
from aigrid.json_depth import too_deep

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _image_url(block: ImageBlock, where: str) -> dict[str, Any]:
    src = block.source
    if src.type == "url":
        if not src.url:
            raise InvalidRequest(f"{where}.source.url: required for a url image", param=f"{where}.source.url")
        return {"type": "image_url", "image_url": {"url": src.url}}
    if not src.data or not src.media_type:
        raise InvalidRequest(f"{where}.source: a base64 image needs media_type and data", param=f"{where}.source")
    return {"type": "image_url", "image_url": {"url": f"data:{src.media_type};base64,{src.data}"}}


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Plain text when every part is text (what every engine reads), content parts otherwise."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _tool_result_text(block: ToolResultBlock, where: str) -> str:
    """A tool_result's content as the text of its chat `tool` message (which holds text only): text blocks as
    they are, a text document and a search result as their text, and an image or a document the grid cannot
    read (a PDF, a file) as a line saying so where it stood (IMAGE_IN_TOOL_RESULT, DOCUMENT_IN_TOOL_RESULT)."""
    if isinstance(block.content, str):
        text = block.content
    else:
        text = "\n".join(_tool_result_part(b, f"{where}.content.{k}") for k, b in enumerate(block.content or ()))
    return f"Error: {text}" if block.is_error else text


def _tool_result_part(b: TextBlock | ImageBlock | DocumentBlock | SearchResultBlock, where: str) -> str:
    if isinstance(b, TextBlock):
        return b.text
    if isinstance(b, ImageBlock):
        return IMAGE_IN_TOOL_RESULT
    if isinstance(b, SearchResultBlock):
        return f"Search result: {b.title}\nSource: {b.source}\n\n" + "\n".join(t.text for t in b.content)
    if b.source.type in ("text", "content"):
        return _document_text(b, where)
    return DOCUMENT_IN_TOOL_RESULT


def _assistant(blocks: list[Any], where: str) -> dict[str, Any]:
    texts, calls = [], []
    for j, b in enumerate(blocks):
        if isinstance(b, TextBlock):
            texts.append(b.text)
        elif isinstance(b, ToolUseBlock):
            calls.append({"id": b.id, "type": "function",
                          "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()}})
        elif not isinstance(b, ThinkingBlock):
            raise InvalidRequest(f"{where}.content.{j}: an assistant turn holds text and tool_use blocks only",
                                 param=f"{where}.content.{j}.type")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    return out


Placed = tuple[dict[str, Any], str]
"""A chat message and the Messages field it came from (a firewall block names that field)."""


DOCUMENT_FIELD = ".source"
"""The end of the Messages field a document's chat message came from (`messages.0.content.1.source`)."""


def _document_text(block: DocumentBlock, where: str) -> str:
    src = block.source
    if src.type == "text" and src.data is not None:
        body = src.data
    elif src.type == "content" and src.content is not None:
        if isinstance(src.content, str):
            body = src.content
        elif all(isinstance(b, TextBlock) for b in src.content):
            body = "\n".join(b.text for b in src.content if isinstance(b, TextBlock))
        else:
            raise InvalidRequest(f"{where}.source.content: a document's content blocks must be text blocks",
                                 param=f"{where}.source.content")
    elif src.type in ("text", "content"):
        field = "data" if src.type == "text" else "content"
        raise InvalidRequest(f"{where}.source.{field}: required for a {src.type} document",
                             param=f"{where}.source.{field}")
    else:
        raise InvalidRequest(f"{where}.source.type: {src.type!r} documents (PDF, files) are not read by this grid: "
                             "send the document's text (source type 'text' or 'content')", param=f"{where}.source.type")
    head = [f"Document: {block.title}" if block.title else "Document:", block.context or ""]
    return "\n".join(line for line in head if line) + "\n\n" + body


DocumentParts = dict[tuple[int, int], str]
"""The chat content parts that are documents, by (message, part) index of `placed_messages`, each with the Messages
field it came from (`messages.0.content.1.source`)."""


def _user(blocks: list[Any], where: str, documents: list[tuple[int, str]]) -> list[Placed]:
    """A user turn: its leading tool results as `tool` messages first, then one user message of its other blocks
    in order; a document block is a text part of it, its index and field added to `documents`. Until 6 Dec 2026
    each document was a user message of its own before the turn's text: consecutive user messages, which chat
    templates that require alternating roles refuse. A tool result after another block is a `tool` message after
    the user message, which check_tool_results refuses: Anthropic's API requires a turn's tool_result blocks to
    come first in its content ("In the user message containing tool results, the tool_result blocks must come
    FIRST in the content array", its tool-use docs) and refuses a call whose result comes later as unanswered
    ("`tool_use` ids were found without `tool_result` blocks immediately after"). Until the thirty-seventh session
    every result was moved to the front, and such a turn was accepted."""
    tools: list[Placed] = []
    late: list[Placed] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        if isinstance(b, ToolResultBlock):
            (late if parts else tools).append(({"role": "tool", "tool_call_id": b.tool_use_id,
                                                "content": _tool_result_text(b, f"{where}.content.{j}")},
                                               f"{where}.content.{j}.content"))
        elif isinstance(b, DocumentBlock):
            documents.append((len(parts), f"{where}.content.{j}{DOCUMENT_FIELD}"))
            parts.append({"type": "text", "text": _document_text(b, f"{where}.content.{j}")})
        elif isinstance(b, TextBlock):
            parts.append({"type": "text", "text": b.text})
        elif isinstance(b, ImageBlock):
            parts.append(_image_url(b, f"{where}.content.{j}"))
        elif isinstance(b, ToolUseBlock):
            raise InvalidRequest(f"{where}.content.{j}: tool_use blocks belong to assistant turns",
                                 param=f"{where}.content.{j}.type")
    content = parts if documents else _content(parts)  # a document stays a part of its own, read as a document
    return tools + ([({"role": "user", "content": content}, f"{where}.content")] if parts else []) + late


def placed_messages(req: CountTokensRequest, documents: DocumentParts | None = None) -> list[Placed]:
    """The chat messages of a request, each with the Messages field it came from; the content parts that are
    documents into `documents` when given."""
    out: list[Placed] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n".join(b.text for b in req.system)
        out.append(({"role": "system", "content": system}, "system"))
    last = len(req.messages) - 1
    late: set[int] = set()  # the tool results that came after another block of their turn (_user)
    for i, m in enumerate(req.messages):
        if not (i == last and m.role == "assistant"):  # only a final assistant turn (a prefill) may be empty
            _nonempty(m, f"messages.{i}")
        if i == last and m.role == "assistant":
            if not m.content:
                break  # an empty final assistant turn is no prefill: not sent (llama.cpp would continue it)
            _no_trailing_whitespace(m, f"messages.{i}")
        parts: list[tuple[int, str]] = []
        placed = _turn(m, f"messages.{i}", parts)
        at_user = next((k for k, (_, at) in enumerate(placed) if at == f"messages.{i}.content"), None)
        user = len(out) + (at_user or 0)
        if at_user is not None and m.role == "user" and _calls_before(out):
            late.update(range(user + 1, len(out) + len(placed)))
        out.extend(placed)
        if documents is not None:  # a turn's documents are parts of its user message
            documents.update({(user, part): field for part, field in parts})
    try:  # Anthropic's 400 for a tool_result that answers no tool_use block of the assistant turn before it, and
        check_tool_results([m for m, _ in out])  # for a tool_use block no tool_result of the next turn answers
    except UnansweredToolCalls as e:
        raise _unanswered(out[e.index][1], e.ids) from e
    except OrphanToolResult as e:
        if e.index in late:  # the turn's calls are answered before it: a result after its text is out of place
            block = out[e.index][1].removesuffix(".content")
            raise InvalidRequest(f"{block}: `tool_result` blocks must come first in the content of a user message, "
                                 "before any other block", param=block) from e
        raise _unexpected(out[e.index][1], e.call_id, e.called) from e
    except InvalidRequest as e:
        name_own_field(e, [where for _, where in out], dotted=True)
        raise
    return out


def _calls_before(out: list[Placed]) -> bool:
    """Whether the assistant turn that `out` ends with (its messages in a row, one turn) made a tool call: a user
    turn's late tool_result is then out of place; after no call it is a result of nothing, as one first would be."""
    for m, _ in reversed(out):
        if m.get("role") != "assistant":
            return False
        if m.get("tool_calls"):
            return True
    return False


def _unanswered(where: str, ids: Sequence[str]) -> InvalidRequest:
    """Anthropic's 400 (its words) for the tool_use blocks of the assistant turn at `where` (`messages.3.content`)
    that no tool_result block of the next turn answers, naming that turn (`messages.3`) and their ids. Until the
    thirty-sixth session they were sent to the engine: calls without their results."""
    turn = where.removesuffix(".content")
    return InvalidRequest(f"{turn}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                          f"{', '.join(ids)}. Each `tool_use` block must have a corresponding `tool_result` block in "
                          "the next message.", param=turn)


def _unexpected(where: str, tool_use_id: str | None, called: bool) -> InvalidRequest:
    """Anthropic's 400 (its words) for the tool_result block at `where` (`messages.2.content.0.content`, its content)
    that answers no tool_use block of the assistant turn before it, naming the block (`messages.2.content.0`); where
    the message before it has no tool_use block at all (`called` False), Anthropic's other words, naming the user turn
    (`messages.2`). Until the thirty-sixth session the chat door's words named its content."""
    block = where.removesuffix(".content")
    if not called:
        turn = block.rsplit(".content.", 1)[0]
        return InvalidRequest(f"{turn}: `tool_result` block(s) provided when previous message does not contain any "
                              "`tool_use` blocks", param=turn)
    return InvalidRequest(f"{block}: unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. Each "
                          "`tool_result` block must have a corresponding `tool_use` block in the previous message.",
                          param=block)


def _nonempty(m: MessageParam, where: str) -> None:
    """Anthropic's 400 for a turn with no content (its text blocks are checked by messages_schema.nonblank)."""
    if not m.content:
        raise InvalidRequest(f"{where}: all messages must have non-empty content except for the optional final "
                             "assistant message", param=where)
    if isinstance(m.content, str) and m.content.isspace():
        raise InvalidRequest(f"{where}: text content blocks must contain non-whitespace text", param=where)


def _no_trailing_whitespace(m: MessageParam, where: str) -> None:
    """Anthropic's 400 for a prefill (the final assistant turn) whose text ends with whitespace, a whitespace-only
    one included: "final assistant content cannot end with trailing whitespace"."""
    if isinstance(m.content, str):
        text: str | None = m.content
    elif any(isinstance(b, ToolUseBlock) for b in m.content):
        return  # a turn that calls tools is not a prefill
    else:  # the prefill the engine continues: the turn's text blocks joined (thinking and the rest left out)
        text = next((b.text for b in reversed(m.content) if isinstance(b, TextBlock)), None)
    if text and text[-1].isspace():
        raise InvalidRequest(f"{where}: final assistant content cannot end with trailing whitespace", param=where)


def chat_messages(req: CountTokensRequest) -> list[dict[str, Any]]:
    return [m for m, _ in placed_messages(req)]


def _turn(m: MessageParam, where: str, documents: list[tuple[int, str]]) -> list[Placed]:
    if isinstance(m.content, str):
        return [({"role": m.role, "content": m.content}, f"{where}.content")]
    if m.role == "assistant":
        return [(_assistant(m.content, where), f"{where}.content")]
    return _user(m.content, where, documents)


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice.name: required when tool_choice.type is 'tool'",
                                 param="tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def chat_tools(req: CountTokensRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if req.tools:
        out["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description or "", "parameters": t.input_schema,
            **({} if t.strict is None else {"strict": t.strict})}} for t in req.tools]  # Anthropic's strict: OpenAI's
    if req.tool_choice is not None:
        out["tool_choice"] = _tool_choice(req.tool_choice)
        if req.tool_choice.disable_parallel_tool_use:
            out["parallel_tool_calls"] = False
    return out


def prefill_of(chat: Mapping[str, Any]) -> str:
    """The text of a final assistant turn (Anthropic's prefill): the answer continues it and does not repeat it,
    though llama.cpp repeats it at the start of its output (continuation.EchoStrip removes that)."""
    messages = chat.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content") if last.get("role") == "assistant" and not last.get("tool_calls") else None
    return content if isinstance(content, str) else ""


PREWARM_TOKENS = 1
"""What the engine is asked for on `max_tokens: 0`, Anthropic's prompt cache pre-warm (an engine takes no 0): it
reads the prompt, which its prefix cache keeps for the requests that follow (routed to it by the prompt's
prefix), and writes one token that is not answered: the message has no content and stops at `max_tokens`."""


def chat_body(req: MessagesRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "messages": chat_messages(req),
                            "max_tokens": req.max_tokens or PREWARM_TOKENS,
                            "stream": req.stream, **chat_tools(req)}
    if req.stream:
        body["stream_options"] = {"include_usage": True}  # Anthropic's message_delta always carries usage
    if req.stop_sequences:
        body["stop"] = req.stop_sequences
    for name in ("temperature", "top_p", "top_k"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.metadata is not None and req.metadata.user_id:
        body["user"] = req.metadata.user_id
    return {**body, **json_output(req), **body_urgency(req.model_extra)}  # `priority`, `deadline_ms`: as on chat


def json_output(req: MessagesRequest) -> dict[str, Any]:
    """Anthropic's structured outputs (`output_config.format`, or the beta's top-level `output_format`; the
    SDKs' `messages.parse(output_format=Model)`) as the chat `response_format` the engine decodes under (the
    schema's grammar); {} without one. Ignored before, the answer was free text and `parse` failed on it."""
    given = req.output_config.format if req.output_config is not None else None
    if given is not None and req.output_format is not None:
        raise InvalidRequest("output_format: give output_config.format or output_format, not both",
                             param="output_format")
    fmt = given or req.output_format
    if fmt is None:
        return {}
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "output", "schema": fmt.json_schema, "strict": True}}}


def name_messages_field(err: ApiError, req: MessagesRequest | None) -> None:
    """A pipeline error naming a chat field that chat_body set from a field of the Messages API's own names the
    client's field instead, in its param and in its message: `stop` -> `stop_sequences`, `response_format`'s schema
    -> `output_format.schema` (or `output_config.format.schema`, as the client sent it), a tool's
    `function.parameters` -> its `input_schema`. Until the thirty-third session a `stop_sequences` list past its
    bound was refused as `stop`, a schema's pattern past its bound as `response_format.json_schema.schema...` or
    `tools.0.function.parameters...`: fields the client never sent (issue 12). Read from the error's field's parts
    (ApiError.field: a tool's as front_door.name_own_field left them, `tools`, N, `parameters`, ...); until the
    thirty-eighth session from its param string, parsed again."""
    field = err.field or ()
    if field[:1] == ("stop",):
        own_parts: tuple[int | str, ...] = ("stop_sequences", *field[1:])
    elif field[:1] == ("response_format",):
        given = req is not None and req.output_config is not None and req.output_config.format is not None
        base = ("output_config", "format") if given else ("output_format",)
        schema = field[1:3] == ("json_schema", "schema")
        own_parts = (*base, "schema", *field[3:]) if schema else (*base, *field[1:])
    elif len(field) > 2 and field[0] == "tools" and isinstance(field[1], int) and \
            (rest := field[3:] if field[2] == "function" else field[2:])[:1] == ("parameters",):
        own_parts = ("tools", field[1], "input_schema", *rest[1:])
    else:
        return
    param, own = str(err.param), field_name(own_parts, dotted=True)
    for said in (f"'{param}'", f"({param})", f"(at {param})", f"{param}: ", f"{param} holds "):  # where a message
        err.message = err.message.replace(said, said.replace(param, own))  # names the field (envelope, schemas)
    err.param, err.field = own, own_parts


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as Anthropic's `input` object (what a model wrote that is not an object
    is kept, under `_raw`, rather than lost)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    if too_deep(value) is not None:  # orjson could not write it back (254 levels): a 500 for the client
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": value}


def stop_of(reason: str, matched: str | None, stop_sequences: Sequence[str] | None,
            called: bool = False) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for a chat finish_reason: `stop_sequence` when the engine
    named one of the request's stop sequences as the one that matched (chat_events.matched_stop). `called`: the
    answer holds a `tool_use` block. A turn that ended on its own is `tool_use` exactly when it called a tool, as
    Anthropic answers, whatever the engine's finish_reason said: vLLM and OpenAI end a call forced by a named
    `tool_choice` with `stop` (vllm-project/vllm#25054), and a `tool_calls` with no call (vllm#53255) is no call."""
    if reason == "stop" and matched is not None and stop_sequences and matched in stop_sequences:
        return "stop_sequence", matched
    said = STOP_REASONS.get(reason, "end_turn")
    if said in ("end_turn", "tool_use"):
        return ("tool_use" if called else "end_turn"), None
    return said, None


def anthropic_message(chat: dict[str, Any], model: str, stop_sequences: Sequence[str] | None = None,
                      prefill: str = "", prewarm: bool = False) -> dict[str, Any]:
    """`prewarm`: the answer to `max_tokens: 0` (PREWARM_TOKENS): no content, stopped at `max_tokens`."""
    choice = (chat.get("choices") or [{}])[0]
    msg = {} if prewarm else choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = EchoStrip(prefill)(msg["content"]) if isinstance(msg.get("content"), str) else None
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:20]}",
                        "name": fn.get("name", ""), "input": tool_input(fn.get("arguments", ""))})
    usage = chat.get("usage") or {}
    stop_reason, stop_sequence = ("max_tokens", None) if prewarm else stop_of(
        choice.get("finish_reason") or "stop", matched_stop(choice), stop_sequences,
        called=any(b["type"] == "tool_use" for b in content))
    return {"id": message_id(), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": anthropic_usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                                     cached_of(usage))}


def anthropic_usage(prompt: int, completion: int, cached: int) -> dict[str, int]:
    """Anthropic's usage: `input_tokens` are the prompt tokens not read from the engine's prefix cache, which
    are `cache_read_input_tokens` (engines report no cache writes). An engine's cached count is at most its prompt's:
    more (2**64 - 1 of a prompt of 5) made `input_tokens` negative, past what JSON's writer holds (a 500, or a
    stream cut with a traceback)."""
    cached = min(max(cached, 0), prompt)
    return {"input_tokens": prompt - cached, "output_tokens": completion, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0}
