"""What an engine of a given kind is sent of a chat body: the `developer` role as `system`; the deprecated
`functions` and `function_call` only to hosted engines, which serve them.

OpenAI's `developer` role is its newer name for `system` (the openai SDK sends it for o-series models, the Agents
SDK for every model). llama.cpp reads it as `system` only since March 2026 (ggml-org/llama.cpp#20215); older
llama-server builds and vLLM hand it to the model's chat template as a role of its own, which a strict template
refuses (Qwen3.5's "Unexpected message role": the engine's error) and others print as an unknown role. So every
engine but a hosted OpenAI-compatible API (kind `openai`, which knows the role) gets `system` in its place. The
firewall reads both roles alike (model_texts.ROLE_SOURCE), so nothing it read changes.

OpenAI's function calling before `tools` (`functions`, `function_call`) is served by a hosted engine, but vLLM and
llama.cpp ignore both fields: the model answered in prose while the client waited for a function call. A request
with either is refused, naming the field, unless every endpoint that may serve its model is of kind `openai`.
Not translated to `tools` (LiteLLM's way): the client reads the answer's `message.function_call` and
finish_reason `function_call`, which the engines answer as `tool_calls`. Beside `tools` either is refused on every
grid: the tool loop (which a request with `tools` may run in) offers the model `tools` only, and dropped `functions`
without a word.

A history of that API (an assistant's `function_call`, the `function` message with its result) is translated for
every engine but a hosted one, which reads it as sent: vLLM and llama.cpp read an assistant's calls from
`tool_calls` and a result as a `tool` message with its `tool_call_id`, and dropped the `function_call` (the model
never saw it had called) and gave the `function` role to the chat template as a role of its own (which a strict
template refuses). The call gets a `tool_calls` entry whose id is derived from its message's place
(`call_legacy_3` for messages[3]: the same for every attempt and turn), and its result is the `tool` message
answering that id. A `function` message that answers no `function_call` of the assistant turn right before it is
the client's 400 naming it (check_legacy_functions), as a `tool` message answering nothing is.

An assistant turn the model refused, sent back as history (the openai SDK's `{"role": "assistant", "refusal": "..."}`
with no content or content null: what OpenAI's Agents SDK sends), goes to every engine but a hosted one with its
refusal as its content, the `refusal` key dropped: vLLM and SGLang read no `refusal` and gave the template an empty
turn, and llama.cpp builds refuse an assistant message with neither `content` nor `tool_calls`. The model reads that
it refused, as the hosted API's model does; the firewall reads the refusal as the message's text either way
(model_texts._beside_content).

A field the client set to null (OpenAI's "or null": the default; the openai SDK sends `stream=None` as
`"stream": null`) is left out of the body every engine but a hosted one gets: vLLM and llama.cpp read a null as
the default, but SGLang declares `stream`, `n`, `logprobs`, `frequency_penalty` and `parallel_tool_calls` as a
plain boolean or number and refused a null in its own words.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

from aigrid.errors import InvalidRequest
from aigrid.gateway.schemas import ASKS_NOTHING, asks_nothing, output_limit
from aigrid.spec.models import GridSpec

KNOWS_DEVELOPER = frozenset({"openai"})
"""Engine kinds sent the `developer` role as the client sent it."""
SERVES_FUNCTIONS = frozenset({"openai"})
"""Engine kinds that serve the deprecated `functions` and `function_call`."""
LEGACY_FIELDS = ("functions", "function_call")
KNOWS_NULL = frozenset({"openai"})
"""Engine kinds sent a body's top-level nulls as the client sent them; the others get those fields left out."""
KNOWS_REFUSAL = frozenset({"openai"})
"""Engine kinds sent an assistant's `refusal` (with no content) as the client sent it; the others get it as the
message's content."""


def bound_output(body: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """A chat or completions body that sets no output limit (schemas.output_limit: no `max_tokens` nor
    `max_completion_tokens`, or a null) with `max_tokens` = `limit` (request_info.OutputBound.limit: the grid's
    gateway.max_output_tokens, or the room the context of the attempt's model leaves the prompt where that is less,
    or None where even that room is below request_info.MIN_OUTPUT_ROOM and the context bounds the answer), as the
    attempt's engine gets it (Proxy._attempt); the body itself where nothing changes (no copy), never modified in
    place. Until the thirty-third session such a body reached the engine with no limit and could decode past the
    grid's limit (with `ignore_eos: true`, to the end of the context; issue 12); the client's answer is the same,
    finish_reason `length` where the limit cuts it. A body that sets its own limit is left as it is (one larger than
    the grid's is refused: request_info.build_request_info)."""
    if limit is None or output_limit(body) is not None:
        return body
    return {**body, "max_tokens": limit}


def _developer(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "developer"


def _legacy(message: Any) -> bool:
    return isinstance(message, dict) and (message.get("role") == "function" or "function_call" in message)


def _refusal(message: Any) -> bool:
    return (isinstance(message, dict) and message.get("role") == "assistant" and message.get("content") is None
            and isinstance(message.get("refusal"), str))


def _refusal_as_content(message: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in message.items() if k != "refusal"}, "content": message["refusal"]}


def legacy_call_id(index: int) -> str:
    """The id an assistant's legacy `function_call` at messages[index] is given as a tool call (CALL_ID's form)."""
    return f"call_legacy_{index}"


def for_engine(body: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """`body` as an engine of `kind` is to get it: each `developer` message renamed `system` where the engine does
    not know the role, a legacy `function_call` / `function` message as a tool call and its `tool` result where
    the engine does not serve them, an assistant's `refusal` without content as its content, and a field set to
    null left out where the engine does not read a null as the default, and a refused field's value that asks
    nothing (schemas.ASKS_NOTHING: `return_hidden_states: false`, which a hosted API would answer its own 400 to)
    left out for every engine. The body itself where nothing changes (no copy); never modified in place."""
    if kind not in KNOWS_NULL and None in body.values():
        body = {k: v for k, v in body.items() if v is not None}
    if any(name in body and asks_nothing(name, body[name]) for name in ASKS_NOTHING):
        body = {k: v for k, v in body.items() if not asks_nothing(k, v)}
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    rename = kind not in KNOWS_DEVELOPER and any(map(_developer, messages))
    translate = kind not in SERVES_FUNCTIONS and any(map(_legacy, messages))
    refusals = kind not in KNOWS_REFUSAL and any(map(_refusal, messages))
    if not rename and not translate and not refusals:
        return body
    if rename:
        messages = [{**m, "role": "system"} if _developer(m) else m for m in messages]
    if refusals:
        messages = [_refusal_as_content(m) if _refusal(m) else m for m in messages]
    if translate:
        messages = _as_tool_calls(messages)
    return {**body, "messages": messages}


def _as_tool_calls(messages: list[Any]) -> list[Any]:
    out: list[Any] = []
    called: str | None = None  # the id of the assistant turn's legacy call just before
    for i, m in enumerate(messages):
        if not _legacy(m):
            out.append(m)
            called = None
        elif m.get("role") == "function":
            result = {k: v for k, v in m.items() if k != "role"}
            out.append({**result, "role": "tool", "tool_call_id": called or legacy_call_id(i)})
            called = None
        else:
            rest = {k: v for k, v in m.items() if k != "function_call"}
            fc = m["function_call"]
            if not isinstance(fc, dict):  # refused at the door (check_legacy_functions); dropped, as the engine did
                out.append(rest)
                continue
            called = legacy_call_id(i)
            call = {"id": called, "type": "function",
                    "function": {"name": fc.get("name"), "arguments": fc.get("arguments", "{}")}}
            earlier = m.get("tool_calls")
            out.append({**rest, "tool_calls": [*(earlier if isinstance(earlier, list) else ()), call]})
    return out


ServingKinds: TypeAlias = Mapping[str, frozenset[str]]
"""A model, a family or `auto` -> the engine kinds of every endpoint that may serve a request for it, of one spec
(kinds_of_spec): built once with the gateway (Gateway.serving_kinds, app.build_gateway), read-only."""


def serving_kinds(model: str, kinds: ServingKinds) -> frozenset[str]:
    """The engine kinds of every endpoint that may serve a request for `model` (a model, a family or `auto`):
    its family's, as a family fallback or an escalation may take it to another model of the family; none for a name
    the spec does not know. Read from the gateway's table (kinds_of_spec of its spec, built once): until the
    thirty-second session every request went over every endpoint of the spec (1.7 ms a request on a grid of 1,200
    endpoints, 7.0 ms on 4,400, at load ~17: `scripts/bench_serving_kinds.py`)."""
    return kinds.get(model, frozenset())


def kinds_of_spec(spec: GridSpec) -> ServingKinds:
    """serving_kinds of every model, every family and `auto` of `spec`, in one pass over its endpoints: a model's
    are its own endpoints' and its family's, a family's its models' endpoints', `auto`'s every endpoint's. Read-only
    (a view of a table no one else holds): the spec of a gateway is fixed once it is built, and so is this."""
    by_model: dict[str, set[str]] = {}
    by_family: dict[str, set[str]] = {}
    for e in spec.endpoints:
        by_model.setdefault(e.model, set()).add(e.engine)
        by_family.setdefault(spec.models[e.model].family, set()).add(e.engine)
    table = {family: frozenset(kinds) for family, kinds in by_family.items()}
    for name, m in spec.models.items():
        table[name] = frozenset(by_model.get(name, set()) | by_family.get(m.family, set())
                                | by_family.get(name, set()))
    table["auto"] = frozenset(e.engine for e in spec.endpoints)
    return MappingProxyType(table)


def check_legacy_functions(model: str, body: Mapping[str, Any], kinds: ServingKinds) -> None:
    """A 400 naming `functions` or `function_call` beside `tools`, or unless every engine that may serve `model`
    (`kinds`: the gateway's table, kinds_of_spec) serves them; where one does not, a 400 naming a legacy history
    that cannot be translated (for_engine)."""
    sent = [f for f in LEGACY_FIELDS if body.get(f) not in (None, [], "none")]
    tools = body.get("tools")
    if sent and isinstance(tools, list) and tools:
        raise InvalidRequest(f"`{sent[0]}` (OpenAI's function calling before `tools`) cannot be sent beside `tools`: "
                             "the grid's tool loop offers the model `tools` only and would drop it; send each "
                             "function as a `tools` entry ({\"type\": \"function\", \"function\": ...}) and "
                             "`tool_choice` instead", param=sent[0])
    hosted = serving_kinds(model, kinds) <= SERVES_FUNCTIONS
    if not hosted:
        _check_legacy_history(body.get("messages"))
    if not sent or hosted:
        return
    raise InvalidRequest(f"`{sent[0]}` (OpenAI's function calling before `tools`) is not served by the engines of "
                         f"model {model!r}: they ignore it and the model would answer in prose; send `tools` "
                         "(each {\"type\": \"function\", \"function\": ...}) and `tool_choice` instead",
                         param=sent[0])


def _check_legacy_history(messages: Any) -> None:
    """The 400 for a legacy history for_engine cannot translate: a `function_call` that is not a function's name and
    arguments, a `function` message that answers no `function_call` of the assistant turn right before it."""
    called = False
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(m, Mapping):
            continue  # the chat schema has already refused it
        if m.get("role") == "function":
            if not called:
                raise InvalidRequest(f"Invalid parameter: the `function` message messages[{i}] must answer the "
                                     "`function_call` of the assistant turn right before it, and there is none",
                                     param=("messages", i))
            called = False
            continue
        fc = m.get("function_call")
        called = fc is not None
        if fc is None:
            continue
        if m.get("role") != "assistant" or not isinstance(fc, Mapping) or not isinstance(fc.get("name"), str) \
                or not isinstance(fc.get("arguments", ""), str):
            raise InvalidRequest(f"Invalid value for 'messages[{i}].function_call': an assistant's call is "
                                 "{\"name\": \"...\", \"arguments\": \"<JSON text>\"}",
                                 param=("messages", i, "function_call"))
