"""OpenAI Responses <-> Chat Completions, both ways, without I/O.

Request: `instructions` -> a system message; `input` (a string, or items: messages with input_text /
input_image / output_text parts, function_call, function_call_output, mcp_call, and compaction, whose summary
the caller opened: compaction.py) -> chat messages after the
stored history of `previous_response_id` or the items of a `conversation`; function tools -> chat tools (a
function tool named like one of the grid's server-side tools runs at the site, agents/); `max_output_tokens`
-> max_tokens;
`text.format` -> response_format. Answer: a chat completion -> output items (mcp_call for each server-side
tool run, a message with output_text, function_call for each of the client's tools) in a Response object.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from aigrid.agents.loop import EXTENSIONS, MAX_TOOL_CALLS
from aigrid.errors import InvalidRequest
from aigrid.field_names import Field
from aigrid.gateway.chat_events import token_logprobs
from aigrid.gateway.envelope import field_name
from aigrid.gateway.front_door import IMAGE_IN_TOOL_RESULT
from aigrid.gateway.responses_schema import ResponsesRequest
from aigrid.gateway.urgency import body_urgency

SERVER_LABEL = "aigrid"
"""server_label of the mcp_call items that report the grid's server-side tool runs."""
_TEXT_PARTS = ("input_text", "output_text", "text")
_PARTS = (*_TEXT_PARTS, "refusal", "input_image")
"""The content parts a message item may have: what _parts checks, and what its 400 lists."""
_ITEMS = ("message", "function_call", "function_call_output", "mcp_call", "mcp_list_tools", "reasoning", "compaction")
"""The input items served: what input_messages checks, and what its 400 lists."""
_ROLES = ("user", "system", "developer", "assistant")


def _listed(names: Sequence[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _text(value: Any, where: str | Field) -> str:
    """`value`, a string, else the 400 naming the field `where` (its parts where given: ApiError.field)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where if isinstance(where, str) else field_name(where)}: must be a string", param=where)
    return value


def _parts(content: Any, where: Field) -> str | list[dict[str, Any]]:
    """`content` (at the field whose parts are `where`, e.g. ("input", 0, "content")) as chat content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{field_name(where)}: must be a string or a list of content parts", param=where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = (*where, j)
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PARTS:
            raise InvalidRequest(f"{field_name((*at, 'type'))}: {kind!r} is not served; use {_listed(_PARTS)}",
                                 param=(*at, "type"))
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": _text(part.get("text"), (*at, "text"))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _text(part.get("refusal"), (*at, "refusal"))})
        else:  # input_image
            if not isinstance(part.get("image_url"), str):
                raise InvalidRequest(f"{field_name(at)}: only input_image with an image_url is served (no file_id)",
                                     param=(*at, "image_url"))
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _append_call(out: list[dict[str, Any]], call: dict[str, Any]) -> None:
    """Consecutive calls are one assistant turn with several tool_calls, as chat engines expect; a call right
    after an assistant message is that turn's (the model wrote its text and its calls as one message: as two
    assistant messages in a row they were refused by chat templates that make roles alternate)."""
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


_ORIGIN = {"message": "content", "function_call_output": "output", "mcp_call": "output",
           "compaction": "encrypted_content"}


def input_messages(items: str | list[dict[str, Any]], origins: list[str] | None = None,
                   summaries: Mapping[int, dict[str, Any]] | None = None, *, root: str = "input") -> list[dict[str, Any]]:
    """The input as chat messages; `origins` (if given) receives the input field each message came from.
    `summaries`: the chat message of each compaction item, by its index in `items` (opened by the caller,
    compaction.py); without one, a compaction item is a 400 (a conversation keeps none). `root`: the field the
    items are, which a 400 names (`input[2].type`; a conversation's `items[2].type`), its parts kept
    (ApiError.field). Until the thirty-eighth session's review (RV3) conversations renamed `input[` in the param
    string and the message."""
    if isinstance(items, str):
        if origins is not None:
            origins.append(root)
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        at = field_name((root, i))
        kind = item.get("type", "message")
        if kind not in _ITEMS:
            raise InvalidRequest(f"{at}.type: {kind!r} is not served; use {_listed(_ITEMS)} items",
                                 param=(root, i, "type"))
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidRequest(f"{at}.role: must be one of {', '.join(_ROLES)}", param=(root, i, "role"))
            out.append({"role": role, "content": _parts(item.get("content"), (root, i, "content"))})
        elif kind == "function_call":
            _append_call(out, _call(_text(item.get("call_id"), (root, i, "call_id")),
                                    _text(item.get("name"), (root, i, "name")),
                                    _text(item.get("arguments", ""), (root, i, "arguments"))))
        elif kind == "function_call_output":
            output = item.get("output")
            text = _parts(output, (root, i, "output")) if isinstance(output, list) else _text(output, (root, i, "output"))
            if not isinstance(text, str):  # a chat tool message carries text only: an image is said, in its place
                # (its data URL written out as JSON reached the model as text, past the vision and image-URL checks)
                text = "\n".join(p["text"] if p["type"] == "text" else IMAGE_IN_TOOL_RESULT for p in text)
            out.append({"role": "tool", "tool_call_id": _text(item.get("call_id"), (root, i, "call_id")),
                        "content": text})
        elif kind == "mcp_call":  # a server-side tool run replayed by the client: the call and its result
            call_id = str(item.get("id") or new_id("mcp"))
            _append_call(out, _call(call_id, _text(item.get("name"), (root, i, "name")), str(item.get("arguments", ""))))
            out.append({"role": "tool", "tool_call_id": call_id, "content": _mcp_result(item)})
        elif kind == "compaction":
            if summaries is None or i not in summaries:
                raise InvalidRequest(f"{at}.type: a compaction item is read in the input of POST /v1/responses "
                                     "(without conversation) and of POST /v1/responses/compact only; a conversation "
                                     "keeps none", param=(root, i, "type"))
            out.append(summaries[i])
        # reasoning and mcp_list_tools items add nothing: they are replayed by agents (a Response's output sent back
        # as input, a conversation's items); no model here reads them back, and the tools a request offers are its
        # `tools` (until the thirty-seventh session an mcp_list_tools item was a 400: the gateway wrote none)
        if origins is not None:  # the messages this item added (a merged function_call adds none)
            origins.extend([f"{at}.{_ORIGIN.get(kind, 'arguments')}"] * (len(out) - len(origins)))
    return out


def input_items(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input as Response items (what GET /v1/responses/{id}/input_items lists): a message's string
    content as one text part, each item with an id (a client's own id kept) and a status."""
    listed = [{"role": "user", "content": items}] if isinstance(items, str) else items
    out: list[dict[str, Any]] = []
    for item in listed:
        kind = item.get("type", "message")
        entry = {**item, "type": kind, "status": item.get("status", "completed")}
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            entry["content"] = [{"type": part, "text": item["content"]}]
        entry.setdefault("id", new_id(_ITEM_PREFIX.get(kind, "item")))
        out.append(entry)
    return out


_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "mcp_call": "mcp",
                "mcp_list_tools": "mcpl", "reasoning": "rs", "compaction": "cmp"}


def _tools(tools: list[dict[str, Any]], server_tools: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            known = ", ".join(sorted(server_tools))
            at = field_name(("tools", i, "type"))
            raise InvalidRequest(f"{at}: {tool.get('type')!r} is not served by this grid; its "
                                 f"server-side tools are function tools by name: {known}", param=at)
        fn: dict[str, Any] = {"name": _text(tool.get("name"), field_name(("tools", i, "name")))}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest("tool_choice: must be auto, none, required or a function", param="tool_choice")
        return choice
    if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
        raise InvalidRequest("tool_choice: only {'type': 'function', 'name': ...} is served", param="tool_choice")
    return {"type": "function", "function": {"name": choice["name"]}}


def _response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.name is None:  # OpenAI's 400, as chat's response_format without json_schema.name (schemas.py)
        raise InvalidRequest("text.format.name: required for json_schema", param="text.format.name")
    if fmt.schema_ is None:
        raise InvalidRequest("text.format.schema: required for json_schema", param="text.format.schema")
    described = {"description": fmt.description} if fmt.description is not None else {}
    # the name's pattern (a-z, A-Z, 0-9, _ and -, 1 to 64) is chat's check of response_format.json_schema.name,
    # named text.format.name (responses_api._own_error)
    return {"type": "json_schema", "json_schema": {"name": fmt.name, **described,
                                                   "schema": fmt.schema_, "strict": bool(fmt.strict)}}


def chat_body(req: ResponsesRequest, history: list[dict[str, Any]], server_tools: Iterable[str],
              origins: list[str] | None = None, summaries: Mapping[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat request; `origins` (if given) receives the Responses field each chat message came from;
    `summaries`: input_messages'."""
    messages = ([{"role": "system", "content": req.instructions}] if req.instructions else [])
    inputs: list[str] = []
    body: dict[str, Any] = {"model": req.model,
                            "messages": messages + history + input_messages(req.input, inputs, summaries),
                            "stream": req.stream}
    if origins is not None:
        earlier = "conversation" if req.conversation is not None else "previous_response_id"
        origins.extend(["instructions"] * len(messages) + [earlier] * len(history) + inputs)
    if req.stream:
        body["stream_options"] = {"include_usage": True}  # response.completed always carries usage
    if req.tools:
        body["tools"] = _tools(req.tools, server_tools)
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    fmt = _response_format(req)
    if fmt is not None:
        body["response_format"] = fmt
    optional = {"max_tokens": req.max_output_tokens, "temperature": req.temperature, "top_p": req.top_p,
                "user": req.user, "parallel_tool_calls": req.parallel_tool_calls}
    body.update({k: v for k, v in optional.items() if v is not None})
    body.update(body_urgency(req.model_extra))  # the gateway's `priority`, `deadline_ms`: read as on chat
    extra = req.model_extra or {}  # the tool loop's `aigrid_max_steps`, `aigrid_tool_mode` (docs/agents.md), read
    body.update({k: extra[k] for k in EXTENSIONS if k in extra})  # as on chat (until review RV2 of the
    # thirty-seventh session left out here: the default steps ran whatever the request asked)
    # the grid's tools the loop may run (until the thirty-eighth session ignored); written only where the request
    # offers one: it counts no other tool, and a body the loop does not serve goes to its engine as written
    if req.max_tool_calls is not None and set(server_tools) & {t["function"]["name"] for t in body.get("tools", ())}:
        body[MAX_TOOL_CALLS] = req.max_tool_calls
    if wants_logprobs(req):
        body["logprobs"], body["top_logprobs"] = True, req.top_logprobs or 0
    return body


LOGPROBS = "message.output_text.logprobs"
INCLUDABLE = ("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
              "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
              "reasoning.encrypted_content", LOGPROBS)
"""OpenAI's `include` values (the SDK's ResponseIncludable). LOGPROBS adds the log-probabilities; the others name
output this gateway does not make (hosted tools, reasoning), so they add nothing, as OpenAI adds nothing where
there is none."""


def check_include(include: list[str] | None) -> None:
    """OpenAI's 400 `invalid_value` naming `include.N` for a value it does not know (until the twenty-first session
    any string was accepted and ignored, so a misspelt `message.output_text.logprob` silently gave no logprobs)."""
    for i, value in enumerate(include or ()):
        if value not in INCLUDABLE:
            at = field_name(("include", i))
            raise InvalidRequest(f"{at}: invalid value {value!r}; supported values are "
                                 f"{', '.join(repr(v) for v in INCLUDABLE)}", param=at,
                                 code="invalid_value")


def wants_logprobs(req: ResponsesRequest) -> bool:
    """The output text's log-probabilities, asked for by `include` (or by `top_logprobs`)."""
    return LOGPROBS in (req.include or ()) or bool(req.top_logprobs)


def logprobs_of(tokens: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat token log-probabilities (chat_events.token_logprobs) in the Responses shape: token, logprob, bytes
    and top_logprobs, per token (engines' extra keys, such as llama.cpp's token ids, left out). What is not of its
    type (an engine's `top_logprobs: 5` raised here: a 500, or a stream cut with a traceback) is left out."""
    return [{**_logprob(t), "top_logprobs": [_logprob(o) for o in _listed_of(t.get("top_logprobs"))]}
            for t in tokens]


def _listed_of(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _logprob(t: dict[str, Any]) -> dict[str, Any]:
    token, logprob, raw = t.get("token"), t.get("logprob"), t.get("bytes")
    return {"token": token if isinstance(token, str) else "",
            "logprob": logprob if isinstance(logprob, int | float) and not isinstance(logprob, bool) else 0.0,
            "bytes": raw if isinstance(raw, list) and all(type(b) is int and 0 <= b < 256 for b in raw) else None}


# --- the answer -----------------------------------------------------------------------------------------
def message_item(text: str, item_id: str, status: str = "completed",
                 logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """`status`: in_progress (as added: no content yet), completed, or incomplete (cut: the text so far)."""
    content = [] if status == "in_progress" else \
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_call_item(call_id: str, name: str, arguments: str, item_id: str,
                       status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def mcp_call_item(step: dict[str, Any]) -> dict[str, Any]:
    """A tool run of the loop (an `aigrid_steps` entry) as OpenAI's `mcp_call` item: its result is `output`, or, where
    it failed, `error`, OpenAI's McpToolCallError object (an `mcp_tool_execution_error` holding the text the model
    read), and its `status` is `failed` (McpCall's status; OpenAI's `response.mcp_call.failed` names such an item).
    Until the thirty-fifth session `error` was that text, a string the openai SDK's own type refuses; until its review
    RV2 a failed run's status was `completed`."""
    ok = bool(step.get("ok"))
    result = str(step.get("result", ""))
    return {"type": "mcp_call", "id": f"mcp_{step.get('call_id') or uuid.uuid4().hex[:24]}",
            "server_label": SERVER_LABEL, "name": str(step.get("tool", "")),
            "arguments": orjson.dumps(step.get("arguments")).decode(), "status": "completed" if ok else "failed",
            "output": result if ok else None,
            "error": None if ok else {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": result}]}}


def listed_tools(chat: Mapping[str, Any], registry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid's server-side tools a request offers (its function tools named like one, agents/), each as OpenAI's
    McpListToolsTool: the tool's name, description and input schema as the grid registered them."""
    out: list[dict[str, Any]] = []
    for tool in chat.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if isinstance(name, str) and name in registry and all(t["name"] != name for t in out):
            found = registry[name]
            out.append({"name": name, "description": str(found.description), "input_schema": dict(found.parameters),
                        "annotations": None})
    return out


def held_tools(items: Any) -> set[str]:
    """The names of the grid's tools that the `mcp_list_tools` items (server_label SERVER_LABEL) among `items` (a
    request's input, a conversation's items, a stored Response's output) list: tools already in the conversation's
    context, which OpenAI lists no more ("As long as the mcp_list_tools item is present in the context of an API
    request, the API will not fetch a list of tools from the MCP server again", its remote MCP guide)."""
    held: set[str] = set()
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and item.get("type") == "mcp_list_tools" and item.get("server_label") == SERVER_LABEL:
            held.update(str(t["name"]) for t in item.get("tools") or () if isinstance(t, Mapping) and "name" in t)
    return held


def to_list(offered: Sequence[Mapping[str, Any]], held: set[str]) -> list[dict[str, Any]]:
    """The tools a Response's mcp_list_tools item lists (listed_tools' `offered`): all those offered, unless the
    conversation's context lists every one already (`held`: held_tools), then none."""
    return [] if all(t["name"] in held for t in offered) else [dict(t) for t in offered]


def mcp_list_tools_item(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """OpenAI's `mcp_list_tools` item for the grid's tools (server_label SERVER_LABEL): OpenAI's Response lists an MCP
    server's tools in one when the tool is first given, before the model's output, whether or not a tool then runs,
    and not again in a later response of the conversation that holds it (openai SDK: McpListTools). The grid's
    Response lists the grid tools it offers so (output_items; streamed, responses_stream) since the thirty-eighth
    session; from the thirty-seventh it listed them before its first tool run, in every response that ran one, and
    before that there was none."""
    return {"type": "mcp_list_tools", "id": new_id("mcpl"), "server_label": SERVER_LABEL,
            "tools": [dict(t) for t in tools]}


def _mcp_result(item: dict[str, Any]) -> str:
    """What a replayed `mcp_call` item's tool run said, as the model reads it: its `output`, else its `error` (the
    object mcp_call_item writes, another of OpenAI's error objects, or a string, as older SDKs typed it), else
    nothing; a text block without text (null) says nothing (until review RV2 of the thirty-fifth session, "None").
    Until the thirty-fifth session a failed run came back as an empty result."""
    if item.get("output") is not None or not item.get("error"):
        return str(item.get("output") or "")
    error = item["error"]
    if not isinstance(error, dict):
        return str(error)
    blocks = error.get("content")
    if isinstance(blocks, list):
        return "\n".join(str(b.get("text") or "") for b in blocks if isinstance(b, dict))
    return str(error.get("message") or orjson.dumps(error).decode())


def output_items(chat: dict[str, Any], steps: bool = False, listed: Sequence[Mapping[str, Any]] | None = None,
                 ) -> tuple[list[dict[str, Any]], str | None]:
    """A chat completion's output items, and its finish_reason. `steps`: a tool loop answered, so its `aigrid_steps`
    are the gateway's (mcp_call items); an engine's own are left out (shown, they were the grid's tool runs, forged,
    past the output filter). `listed` (to_list): the tools an mcp_list_tools item lists first (none: no item)."""
    choice = (chat.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    ran = chat.get("aigrid_steps") if steps else None
    items = [mcp_call_item(s) for s in ran if isinstance(s, dict)] if isinstance(ran, list) else []
    if listed:
        items.insert(0, mcp_list_tools_item(listed))
    if msg.get("content"):
        items.append(message_item(msg["content"], new_id("msg"), logprobs=logprobs_of(token_logprobs(choice))))
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        items.append(function_call_item(str(call.get("id") or new_id("call")), str(fn.get("name", "")),
                                        fn.get("arguments") or "", new_id("fc")))
    return items, choice.get("finish_reason")


def usage_block(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """A Response's usage; `cached`: prompt tokens the engine read from its prefix cache (counted in input).
    `cache_write_tokens` (which the SDK's type requires) is 0: no engine says what it wrote to its cache. An engine's
    cached count is at most its prompt's."""
    cached = min(max(cached, 0), prompt)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})


def settings(req: ResponsesRequest) -> dict[str, Any]:
    """The request's settings a Response echoes that hold no content (numbers, booleans, the tool_choice mode;
    never instructions, input, tools, metadata or a named tool): a background placeholder keeps them
    (response_store.Pending.settings), so that its queued Response echoes them as the final one does."""
    echoed: dict[str, Any] = {"max_output_tokens": req.max_output_tokens, "temperature": req.temperature,
                              "top_p": req.top_p, "parallel_tool_calls": req.parallel_tool_calls is not False,
                              "max_tool_calls": req.max_tool_calls}
    if isinstance(req.tool_choice, str) and req.tool_choice in TOOL_CHOICE_MODES:
        echoed["tool_choice"] = req.tool_choice
    return echoed


def _format_echo(req: ResponsesRequest) -> dict[str, Any]:
    """The request's text.format as OpenAI echoes it on the Response (it was echoed as text whatever was asked)."""
    fmt = req.text.format if req.text is not None else None
    if fmt is None:
        return {"type": "text"}
    return fmt.model_dump(by_alias=True, exclude_none=True)


_INCOMPLETE = {"length": "max_output_tokens", "steered": "steered", "content_filter": "content_filter"}
"""A finish that leaves a Response `incomplete`, and its `incomplete_details.reason` (OpenAI's names)."""
ITEM_CUT = "incomplete"
"""The status of the output item an answer was cut in (by its finish, `incomplete_reason`, or by a failure mid-stream),
as OpenAI gives it: until the thirtieth session it said `completed` inside an incomplete or failed Response. (An item's
status; not stopping.CUT, the reason of the stop's cancel, nor relay_response.CUT, the streamed response being sent.)"""
_CUTTABLE = frozenset({"message", "function_call"})
"""The items the model writes, which a cut can leave unfinished (an mcp_call or compaction item is whole)."""


def incomplete_reason(finish_reason: str | None) -> str | None:
    """OpenAI's `incomplete_details.reason` for a chat answer's finish, None where the answer ended whole."""
    return _INCOMPLETE.get(finish_reason or "")


def cut_last(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`output` with its last item marked cut (ITEM_CUT) where it is one the model was writing."""
    if output and output[-1].get("type") in _CUTTABLE:
        return [*output[:-1], {**output[-1], "status": ITEM_CUT}]
    return output


_LOOP_CUTS = frozenset({"token_budget", "context_limit", "step_limit", "revoked"})
"""A tool loop's stops (aigrid_loop.stop) that end its answer `length` though no max_output_tokens cut it: the
Response says which in `incomplete_details.aigrid_stop` (OpenAI's `reason` has no name for them)."""


def response_object(req: ResponsesRequest, rid: str, created: int, output: list[dict[str, Any]], *,
                    status: str, finish_reason: str | None = None, usage: dict[str, Any] | None = None,
                    loop_stop: str | None = None) -> dict[str, Any]:
    """`finish_reason`: the chat answer's; `length` makes it `incomplete` (`max_output_tokens`), as do `steered`
    (stopped for a steer on its socket, relay_response.SteerCut) and `content_filter` (an engine's filter stopped it),
    its last item (the one cut) `incomplete` too. `loop_stop`: the tool loop's stop (the chat
    answer's aigrid_loop.stop): `token_budget` (the tenant's token quota), `context_limit`, `step_limit` or `revoked` are named
    beside OpenAI's reason, as `incomplete_details.aigrid_stop`."""
    reason = incomplete_reason(finish_reason) if status == "completed" else None
    details: dict[str, Any] | None = {"reason": reason} if reason else None
    if reason:  # the item the answer stopped in is cut (a stream closed it so already: responses_stream)
        output = cut_last(output)
    if details is not None and reason == "max_output_tokens" and loop_stop in _LOOP_CUTS:
        details["aigrid_stop"] = loop_stop
    return {
        "id": rid, "object": "response", "created_at": created, "background": bool(req.background),
        "status": "incomplete" if reason else status, "error": None,
        "incomplete_details": details,
        "instructions": req.instructions, **settings(req), "model": req.model,
        "output": output, "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": None, "summary": None}, "store": req.store,
        "text": {"format": _format_echo(req)}, "tool_choice": req.tool_choice or "auto", "tools": req.tools or [],
        "truncation": "disabled", "usage": usage, "user": req.user, "metadata": req.metadata or {},
        "conversation": None if req.conversation is None else {"id": req.conversation},
    }


def pending_object(rid: str, model: str, created: int, status: str, error: dict[str, Any] | None = None,
                   echoed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Response of a background request without a stored answer (queued, in progress, failed, cancelled),
    from its placeholder alone (response_store.Pending: no conversation content). `echoed`: the request's
    settings it kept (`settings`: max_output_tokens, temperature, top_p, parallel_tool_calls, the
    tool_choice mode), echoed as the final Response does; its instructions, tools, metadata and user show
    only once its answer is stored."""
    return {
        "id": rid, "object": "response", "created_at": created, "background": True, "status": status,
        "error": error, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
        "model": model, "output": [], "parallel_tool_calls": True, "max_tool_calls": None, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": None, "top_p": None,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "truncation": "disabled",
        "usage": None, "user": None, "metadata": {}, **(echoed or {}),
    }


def output_history(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answer's items as chat messages, for the stored conversation a follow-up continues."""
    messages: list[dict[str, Any]] = []
    for item in output:
        if item["type"] == "message":
            text = "".join(p.get("text", "") for p in item.get("content") or ())
            messages.append({"role": "assistant", "content": text})
        elif item["type"] == "function_call":
            _append_call(messages, _call(item["call_id"], item["name"], item["arguments"]))
    return messages
