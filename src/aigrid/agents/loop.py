"""The tool loop, run at the site the routing core chose: model -> tool calls -> results -> model ...

A chat request opts in by naming server-side tools in its ordinary OpenAI `tools` list: a function tool
whose name is registered (`{"type": "function", "function": {"name": "calculator"}}`; the description and
parameters may be left out, the registry's are used). Tools the grid does not know are the client's own:
when the model calls one, the loop stops and returns that call to the client exactly as OpenAI would
(finish_reason "tool_calls"), with the server-side steps so far attached. A request with only the client's
tools runs here when the chosen model gets tool calls by constrained output (`tool_calls: constrained` in
the grid spec, the default: small models, and engines such as llama.cpp without a tool-calling template,
which would ignore `tools` and answer in prose): its one turn is decoded under the tools' grammar and a call
is returned to the client. On a `native` model such a request is proxied untouched.

run_tool_loop() is an async generator of events: a Step after each tool run, TextDelta for the final
answer as the engine streams it, and one Finished (or Rejected when the engine refuses the request with a
4xx). reply.py turns the events into an OpenAI response or SSE stream. Request extensions (removed before
the body reaches the engine): `aigrid_max_steps` (1..the spec's `agents.max_steps_limit`, at most
MAX_STEPS_LIMIT) and `aigrid_tool_mode`
("constrained" | "native").

Every tool result passes the firewall's choke point (`screen`, bound to the request's tenant by the gateway)
before the model reads it, tagged with the tool's source (tool result, MCP result, retrieved document, web
page): a blocked result is withheld from the model (it reads WITHHELD instead) and the step carries the
verdicts; flagged results pass with theirs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from aigrid.agents.answer_stream import AnswerStream
from aigrid.agents.engine_refusal import raise_for_server_error
from aigrid.agents.prompt_size import prompt_chars
from aigrid.agents.schema_refs import localized, outside_ref
from aigrid.agents.steps import (
    CUT_OFF,
    NOT_AN_OBJECT,
    Call,
    ToolSpec,
    Turn,
    constrained_messages,
    parse_turn,
    response_format,
    structured,
)
from aigrid.agents.tool import NO_CONTEXT, ToolContext, ToolError, ToolRegistry
from aigrid.engines.protocol import Engine
from aigrid.engines.sse import DONE, Quiet, SseDecoder, SseError
from aigrid.engines.token_counts import MOST_COUNT, count_fault
from aigrid.engines.wrapped import read_whole
from aigrid.errors import (
    MISSING_PARAMETER,
    AuthenticationError,
    EngineStreamBroken,
    EngineUnavailable,
    InvalidRequest,
)
from aigrid.field_names import Field, field_name
from aigrid.json_depth import depth_message, few_brackets, too_deep_raw
from aigrid.security.firewall.pipeline import Screened, Verdict
from aigrid.security.firewall.texts import ModelText, Source

log = logging.getLogger(__name__)

ToolMode = Literal["constrained", "native"]
CHAT_PATH = "/v1/chat/completions"
MAX_STEPS_LIMIT = 16
MAX_TOOL_CALLS = "aigrid_max_tool_calls"
"""The most server-side tool runs the request allows, 0 up (the Responses API's `max_tool_calls`, which its door
writes here): past the lower of it and `aigrid_max_steps` (or the grid's default) no server-side tool is offered;
the client's own tools still are (LoopConfig.max_tool_calls)."""
EXTENSIONS = ("aigrid_max_steps", "aigrid_tool_mode", MAX_TOOL_CALLS)
_OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens")
WITHHELD = "error: the AI firewall withheld this tool result (prompt injection suspected)"

ScreenTexts = Callable[[Sequence[ModelText]], Awaitable[Screened]]
"""The firewall's choke point for one request (tenant already bound)."""


@dataclass(frozen=True, slots=True)
class LoopConfig:
    max_steps: int = 6
    """Tool runs per request; when reached the model must answer with what it has."""
    max_tool_calls: int | None = None
    """The server-side tool runs the request allows (`aigrid_max_tool_calls`, the Responses API's `max_tool_calls`:
    OpenAI's "total calls to built-in tools"); past them (or max_steps) no server-side tool is offered, but the
    client's own tools still are, whose calls go back to the client; a server-side call made anyway is not run and
    the answer ends there (stop "step_limit"). None: max_steps alone. (Until review RV1 of the thirty-eighth session
    it lowered max_steps, and past it the client's tools were withheld too.)"""
    max_steps_limit: int = MAX_STEPS_LIMIT
    """The most tool runs a request may ask for (`aigrid_max_steps`; the spec's `agents.max_steps_limit`)."""
    mode: ToolMode = "constrained"
    tool_timeout_s: float = 10.0
    max_result_chars: int = 2_000
    step_max_tokens: int = 256
    """max_tokens of each model turn when the client set none."""
    reuse_tools: bool | None = None
    """May a tool that already returned a result be offered again? None: not in constrained mode (small
    models repeat their last call forever), yes in native mode."""
    max_prompt_chars: int | None = None
    """A later model turn whose messages are longer than this surely exceed the model's context (the
    gateway sets its context x the most characters a token can take): the loop ends there with what it has
    (finish_reason "length", stop "context_limit") instead of the engine refusing the turn."""
    server_tools: bool = True
    """Does the request name a server-side tool? Without one the loop runs only for a model that gets tool
    calls by constrained output (the gateway passes a native model's request to its engine as it came)."""
    max_turn_bytes: int | None = None
    """The most bytes of one model turn's answer the loop reads (it holds the turn's text and calls as they come):
    more is the engine's failure (EngineStreamBroken). The gateway gives the bound of a whole answer
    (Proxy.most_bytes, through WrappedEngine.bound); None: no bound."""
    quiet_s: float | None = None
    """The longest one model turn's engine may send reads that complete no data event (comments, keep-alives):
    more is the engine's failure (EngineStreamBroken), as the relay's (sse.Quiet). The gateway gives
    gateway.stream_idle_s; None: no bound (a turn of keep-alives lasted to the loop's own ceiling)."""
    most_turn_tokens: int | None = None
    """The most tokens one model turn's engine can count (its prompt and completion): what its model's context
    holds, as the front door bounds an answer's count (token_counts.count_fault, Proxy.most_tokens). A turn that counts
    more is the engine's fault, its count unknown (turn_counts). The gateway gives the model's context from the
    spec; None: not known (only engines/token_counts.bad_count applies)."""


DEFAULT_LOOP = LoopConfig()


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    tool: str
    arguments: Any
    result: str
    ok: bool
    duration_ms: float
    model_ms: float
    """Duration of the model turn that asked for this call."""
    call_id: str
    firewall: tuple[Verdict, ...] = ()
    """The firewall's verdicts on this result (blocked: the model read WITHHELD instead)."""

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "tool": self.tool, "arguments": self.arguments, "result": self.result,
               "ok": self.ok, "duration_ms": round(self.duration_ms, 2), "model_ms": round(self.model_ms, 2),
               "call_id": self.call_id}
        if self.firewall:
            out["firewall"] = [v.to_dict() for v in self.firewall]
        return out


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    content: str
    finish_reason: str
    stop: str
    """Why the loop ended: answer | step_limit | context_limit | token_budget (the quota refused a model turn's
    reservation: `before_turn`; or a turn it gave fewer output tokens than asked was cut off by them) | revoked (its
    caller's key was revoked, or its tenant removed, while it ran: `before_turn` raised AuthenticationError) | client_tool
    | max_tokens | tool_choice_none (the engine asked for a tool under `tool_choice: "none"`: not run, the reply
    ends empty)."""
    steps: tuple[Step, ...]
    tool_calls: tuple[dict[str, Any], ...] = ()
    usage: Mapping[str, int] = field(default_factory=dict)
    model_calls: int = 0
    model_ms: float = 0.0
    elapsed_ms: float = 0.0
    mode: str = "constrained"

    def summary(self) -> dict[str, Any]:
        return {"stop": self.stop, "mode": self.mode, "steps": len(self.steps), "model_calls": self.model_calls,
                "model_ms": round(self.model_ms, 1),
                "tool_ms": round(sum(s.duration_ms for s in self.steps), 1),
                "elapsed_ms": round(self.elapsed_ms, 1)}


@dataclass(frozen=True, slots=True)
class Rejected:
    """The engine answered the loop's request with a 4xx: pass its status and body to the client."""

    status: int
    body: bytes


Event = Step | TextDelta | Finished | Rejected


UsageReport = Callable[[Mapping[str, int], Mapping[str, Any] | None], None]
"""Told what a tool loop has spent: its finished model turns' usage and the payload of the model turn an engine
holds now (None between turns)."""

TurnGate = Callable[[Mapping[str, Any]], Awaitable[int | None]]
"""Asked before each model turn of a loop, with the turn's payload: how many output tokens may it write? The gateway
reserves the turn's estimated tokens on the request's quota (Guard.extend; admission reserved the first turn's prompt
and the fewest output tokens a turn is sent with, guard.MIN_TURN_OUTPUT): its own max_tokens, or fewer where the quota has room for fewer (the turn is sent with them; cut
off by them, the loop ends with stop "token_budget"); None (the quota is spent) ends the loop there with what it has
(finish_reason "length", stop "token_budget"). AuthenticationError: the caller may no longer ask (its key revoked
while the loop ran): the loop ends there too, stop "revoked"."""

ToolReport = Callable[[Call, Step | None], None]
"""Told of each server-side tool call as it starts (None) and as it ends (its Step, after the firewall read
its result): the gateway's audit record names every tool a request had run, a call cut off by a cancel too."""


def _function_name(tool: Any) -> str | None:
    if isinstance(tool, Mapping) and tool.get("type", "function") == "function":
        fn = tool.get("function")
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            return str(fn["name"])
    return None


def check_tool_choice(body: Mapping[str, Any]) -> None:
    """OpenAI's 400s for a chat request's `tool_choice` the model cannot meet: a mode other than auto, none or
    required; "required" or a function without `tools`; a function that is not one of them (the loop would
    retry to its step limit); an object that names no function (`{"type": "function"}`, OpenAI's
    `allowed_tools` or a custom tool's choice), which the loop read as "auto". "auto" and "none" without tools pass, as OpenAI-compatible servers take them."""
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none"):
        return
    if not isinstance(choice, Mapping) and choice != "required":
        raise InvalidRequest(f"Invalid value for 'tool_choice': {choice!r}; use 'auto', 'none', 'required' or "
                             "a function", param="tool_choice")
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        raise InvalidRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                             "specified", param="tool_choice")
    name = _function_name(choice)
    if isinstance(choice, Mapping) and name is None:  # it went to the loop as "auto": nothing forced or narrowed
        kind = choice.get("type", "function")
        if kind == "function":
            raise InvalidRequest("Missing required parameter: 'tool_choice.function.name'.",
                                 param="tool_choice.function.name", code=MISSING_PARAMETER)
        raise InvalidRequest(f"Invalid value for 'tool_choice.type': {kind!r} is not served; use 'auto', 'none', "
                             "'required' or {'type': 'function', 'function': {'name': ...}}", param="tool_choice.type")
    if name is not None and name not in {_function_name(t) for t in tools}:
        raise InvalidRequest(f"Invalid value for 'tool_choice': the function {name!r} is not one of the request's "
                             "tools", param="tool_choice")


class UnansweredToolCalls(InvalidRequest):
    """An assistant turn's tool calls that no `tool` message after it answers (OpenAI's wording; each front door
    says it in its API's own words from `index`, the assistant message's, and `ids`). Its param is OpenAI's: the
    `role` of the message at `after`, the first after the calls' message that is no `tool` message, which
    should have been one ("messages.[5].role" in OpenAI's dotted form, the bracket form here as in every other param), or
    `messages` where the conversation ends there. Until the thirty-seventh session it was ours,
    `messages[N].tool_calls` of the assistant message."""

    def __init__(self, index: int, ids: Sequence[str], after: int | None = None) -> None:
        self.index, self.ids = index, tuple(ids)
        super().__init__("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                         "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                         f"{', '.join(self.ids)}", param=("messages",) if after is None else ("messages", after, "role"))


class OrphanToolResult(InvalidRequest):
    """A `tool` message (at `index`) that answers no tool call of the assistant turn before it, naming `call_id`
    (OpenAI's chat door says it so; the Messages and Responses doors in their APIs' own words). `called`: whether the
    message before it made any tool call (Anthropic words the two cases apart)."""

    def __init__(self, message: str, param: Field, index: int, call_id: str | None, called: bool) -> None:
        self.index, self.call_id, self.called = index, call_id, called
        super().__init__(message, param=param)


def check_tool_results(messages: Any, *, assistants_merge: bool = True) -> None:
    """The 400 for a `tool` message that answers no tool call of the assistant turn before it (its results
    follow it, in any order): the engine would read a result of nothing; and, since the thirty-sixth session, the
    400 for an assistant turn's tool call that no `tool` message right after it answers (UnansweredToolCalls: it was
    accepted, and the engine read a call without its result). OpenAI, Anthropic and the Responses API refuse
    both; the chat route checks every chat request's messages, so the Messages and Responses front doors'
    translations (Anthropic's tool_use and tool_result blocks, function_call and function_call_output items) too.
    `assistants_merge`: consecutive assistant messages are one turn (Anthropic's Messages API merges them), so
    results after them answer the calls of either; False on OpenAI's chat door (since the thirty-eighth session):
    OpenAI requires a call's tool messages right after the message that made it, and refuses
    [assistant(tool_calls), assistant, tool] ("An assistant message with 'tool_calls' must be followed by tool
    messages responding to each 'tool_call_id'. (insufficient tool messages following tool_calls message)",
    invalid_request_error, as quoted from OpenAI's API in e.g. github.com/agno-agi/agno/issues/1784) where the grid
    accepted it."""
    if not isinstance(messages, list):
        return  # the chat schema has already refused it
    calls: dict[str, int] | None = None  # the call ids of the assistant turn the messages since answer, each its
    answered: set[str] = set()          # assistant message's index; and those answered so far
    order: list[str] = []  # the turn's call ids in order, from `first` on those a result naming none may answer
    first = 0
    previous = None
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, Mapping) else None
        if role == "assistant":  # consecutive assistant turns are one (the Messages API merges them)
            if previous != "assistant" or not assistants_merge:
                _all_answered(calls, answered, messages)
                calls, answered = None, set()
            listed = m.get("tool_calls")
            for k, c in enumerate(listed if isinstance(listed, list) else ()):
                if isinstance(c, Mapping) and c.get("id") is None:  # OpenAI's 400: no result could answer it
                    raise InvalidRequest(f"Missing required parameter: 'messages[{i}].tool_calls[{k}].id'.",
                                         param=("messages", i, "tool_calls", k, "id"), code=MISSING_PARAMETER)
            ids = ({c["id"]: i for c in listed if isinstance(c, Mapping) and isinstance(c.get("id"), str)}
                   if isinstance(listed, list) else {})
            if previous == "assistant" and calls and assistants_merge:  # (the turn's dict grown in place: until the thirty-sixth session
                for c, at in ids.items():          # (brief QUAD) copied whole at each message, quadratic in them)
                    calls.setdefault(c, at)
            else:
                calls = ids
            order, first = [], 0
        elif role == "tool":
            called = m.get("tool_call_id")
            if called is not None and not isinstance(called, str):
                raise InvalidRequest(f"Invalid type for 'messages[{i}].tool_call_id': expected a string",
                                     param=("messages", i, "tool_call_id"))
            if not calls:
                # OpenAI's words (its param reads "messages.[N].role"; ours keeps the bracket form of every other)
                raise OrphanToolResult("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                                       "message with 'tool_calls'.", ("messages", i, "role"), i, called, False)
            if called is not None and called not in calls:
                raise OrphanToolResult(f"Invalid parameter: 'tool_call_id' of '{called}' not found in 'tool_calls' of "
                                       "previous message.", ("messages", i, "tool_call_id"), i, called, True)
            if called is None:  # a result naming no call (the chat schema lets it) answers the first unanswered,
                order = order or list(calls)  # read on from the last one found (those before it stay answered):
                while first < len(order) and order[first] in answered:  # until the thirty-sixth session (brief
                    first += 1                # QUAD) from the first call each time, quadratic in such results
                called = order[first] if first < len(order) else None
            if called is not None:
                answered.add(called)
        elif role is not None:
            _all_answered(calls, answered, messages)
            calls, answered = None, set()
        previous = role
    _all_answered(calls, answered, messages)


def _all_answered(calls: Mapping[str, int] | None, answered: set[str], messages: list[Any]) -> None:
    """UnansweredToolCalls for the calls of an assistant turn that `answered` lacks, naming the first one's message
    and the first message after it that is no `tool` message (None: the conversation ends), which came instead of
    their results, as OpenAI names it: an assistant message right after the calls' too, though consecutive
    assistants are one turn here (until review RV2 of the thirty-seventh session the message that ended the turn,
    or `messages` where none did)."""
    missing = {c: at for c, at in (calls or {}).items() if c not in answered}
    if missing:
        at = min(missing.values())
        after = next((j for j in range(at + 1, len(messages))
                      if not (isinstance(messages[j], Mapping) and messages[j].get("role") == "tool")), None)
        raise UnansweredToolCalls(at, list(missing), after)


def wants_server_tools(body: Mapping[str, Any], registry: Mapping[str, Any]) -> bool:
    """True when the request's `tools` name at least one registered server-side tool."""
    tools = body.get("tools")
    return isinstance(tools, list) and any(_function_name(t) in registry for t in tools)


def unallowed_tool(body: Mapping[str, Any], registry: Mapping[str, Any], allows: Callable[[str], bool]
                   ) -> tuple[int, str] | None:
    """(index, name) of the first of the request's `tools` that is a server-side tool `allows` refuses (the
    caller's Scopes.allows_tool); None when each is allowed."""
    tools = body.get("tools")
    for i, t in enumerate(tools if isinstance(tools, list) else ()):
        name = _function_name(t)
        if name is not None and name in registry and not allows(name):
            return i, name
    return None


def offered_tools(body: Mapping[str, Any], registry: ToolRegistry) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    for i, t in enumerate(body.get("tools") or []):
        name = _function_name(t)
        if name is None and isinstance(t, Mapping) and t.get("type") == "custom":
            raise InvalidRequest("custom tools are not served by this grid: its tool loop and engines take function "
                                 "tools, whose input is JSON under a schema, not a custom tool's free-form or grammar "
                                 "input; offer a function tool", param=("tools", i, "type"))
        if name is None:
            raise InvalidRequest("tools must be function tools with a name", param=("tools", i))
        if name in registry:
            tool = registry[name]
            specs.append(ToolSpec(name, tool.description, tool.parameters, server=True))
        else:
            fn = t["function"]
            check_tool_definition(fn, ("tools", i, "function"))
            specs.append(ToolSpec(name, str(fn.get("description") or ""),
                                  fn.get("parameters") or {"type": "object"}, server=False, strict=fn.get("strict")))
    return specs


def check_tool_definition(fn: Mapping[str, Any], where: Field) -> None:
    """A client tool's definition is rendered into the model's prompt and grammar: a description that is
    not text or parameters that are not a JSON Schema object are the client's mistake (400), not an engine
    failure. Its name as OpenAI's rule has it (the loop prints it into the prompt). An MCP server's tools are held
    to the same (mcp_tools: a tool that fails it is not offered)."""
    name = fn.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise InvalidRequest("a tool's name must be 1-64 letters, digits, underscores or dashes",
                             param=(*where, "name"))
    if fn.get("description") is not None and not isinstance(fn["description"], str):
        raise InvalidRequest("a tool's description must be a string", param=(*where, "description"))
    if fn.get("strict") is not None and not isinstance(fn["strict"], bool):
        raise InvalidRequest("a tool's strict must be a boolean", param=(*where, "strict"))
    params = fn.get("parameters")
    if params is None:
        return
    if not isinstance(params, Mapping):
        raise InvalidRequest("a tool's parameters must be a JSON Schema object", param=(*where, "parameters"))
    props = params.get("properties")
    if props is not None and not isinstance(props, Mapping):
        raise InvalidRequest("parameters.properties must be an object of JSON Schemas",
                             param=(*where, "parameters", "properties"))
    for key, prop in (props or {}).items():
        if not isinstance(prop, Mapping | bool):
            raise InvalidRequest("each property must be a JSON Schema", param=(*where, "parameters", "properties", key))


def refuse_outside_ref(parameters: Any, where: Field) -> None:
    """The client's 400 naming a `$ref` of a tool's `parameters` that is no pointer from its own root (a URL, another
    document, an anchor: schema_refs.outside_ref), for a tool whose schema goes into a grammar."""
    outside = outside_ref(parameters) if isinstance(parameters, Mapping) else None
    if outside is not None:
        path, ref = outside
        raise InvalidRequest(f"a $ref to {ref[:200]!r} is not served where the model's tool calls are decoded under "
                             "a grammar (this model's constrained tool calls, or a forced tool_choice): the grid "
                             "fetches no schema, nor does any engine (llama-server refuses it, \"unsupported $ref\"); "
                             "put the schema in the tool's $defs and refer to it as #/$defs/Name",
                             param=(*where, "parameters", *path))  # a schema's list index as each door writes one


def check_grammar_refs(body: Mapping[str, Any], registry: Mapping[str, Any], mode: ToolMode) -> None:
    """A client tool's schema a model turn puts into a grammar needs every `$ref` resolvable within it: each tool of
    a `constrained` loop (its step schema), and on a `native` one the tools a forced `tool_choice` names (`required`:
    all), which the engine compiles to a grammar (vLLM). There a ref outside the schema is the client's 400
    (refuse_outside_ref). Elsewhere (a native turn the model may answer freely, `tool_choice: none`) the engine gets
    the schema as the client wrote it, as before the thirty-fourth session."""
    choice = body.get("tool_choice")
    if choice == "none":
        return  # no turn offers a tool
    forced = _function_name(choice) if isinstance(choice, Mapping) else None
    if mode == "native" and forced is None and choice != "required":
        return
    for i, t in enumerate(body.get("tools") or []):
        name = _function_name(t)
        if name is None or name in registry or (mode == "native" and forced is not None and name != forced):
            continue
        refuse_outside_ref(t["function"].get("parameters"), ("tools", i, "function"))


_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _check_tool_calls(messages: Any) -> None:
    """Earlier assistant turns' tool calls, which the loop replays to the model: each a function call with a
    name and its arguments as a JSON string."""
    if not isinstance(messages, list):
        return  # the chat schema has already refused it
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") if isinstance(m, Mapping) else None
        if calls is None:
            continue
        if not isinstance(calls, list):
            raise InvalidRequest("tool_calls must be a list", param=("messages", i, "tool_calls"))
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not isinstance(
                    fn.get("arguments", ""), str) or not isinstance(call.get("id", ""), str):
                raise InvalidRequest("a tool call needs an id, function.name and function.arguments (a JSON string)",
                                     param=("messages", i, "tool_calls", j))
            _shallow_arguments(fn.get("arguments", ""), ("messages", i, "tool_calls", j, "function", "arguments"))


def _shallow_arguments(arguments: str, where: Field) -> None:
    """A replayed call's arguments nested too deep for the JSON a constrained turn shows the model (json_depth.py):
    a 400 naming them, not a failure of every engine."""
    raw = arguments.encode()
    if few_brackets(raw):
        return
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # not JSON: read as no arguments, as before
    deep = too_deep_raw(raw, value)  # orjson's write decides (C speed); the walk runs only for a value too deep
    if deep is not None:
        inside = ".".join(map(str, deep))  # a path inside the arguments' JSON string, not a field of the request
        field = field_name(where)
        raise InvalidRequest(depth_message(field if not inside else f"{field} at {inside}"), param=where)


def loop_config(body: Mapping[str, Any], base: LoopConfig) -> LoopConfig:
    """`base` with the request's extensions applied (400 naming the field when they are bad)."""
    steps, mode = body.get("aigrid_max_steps", base.max_steps), body.get("aigrid_tool_mode", base.mode)
    limit = base.max_steps_limit
    if "aigrid_max_steps" in body and (isinstance(steps, bool) or not isinstance(steps, int)
                                       or not 1 <= steps <= limit):
        raise InvalidRequest(f"aigrid_max_steps must be an integer from 1 to {limit} (this grid's "
                             "agents.max_steps_limit)", param="aigrid_max_steps")
    if mode not in ("constrained", "native"):
        raise InvalidRequest("aigrid_tool_mode must be 'constrained' or 'native'", param="aigrid_tool_mode")
    calls = body.get(MAX_TOOL_CALLS, base.max_tool_calls)
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 0):
        raise InvalidRequest(f"{MAX_TOOL_CALLS} must be an integer of 0 or more", param=MAX_TOOL_CALLS)
    return dataclasses.replace(base, max_steps=steps, mode=mode, max_tool_calls=calls)


def refuse_logprobs(body: Mapping[str, Any]) -> None:
    """`logprobs: true` on a request the loop serves: a 400 naming it. The loop's answer has no log-probabilities: a
    constrained turn's tokens are the step's JSON (`{"answer": "...`, escapes), not the answer's, and no turn's are
    carried into the answer; until the thirty-third session they were asked of every turn and left out of the answer
    without a word."""
    if body.get("logprobs") is True:
        raise InvalidRequest("logprobs are not served with tools the gateway's tool loop runs (server-side tools, or "
                             "client tools on a model that gets tool calls by constrained output): ask without "
                             "logprobs, or without tools", param="logprobs")


def check_min_tokens(body: Mapping[str, Any], config: LoopConfig) -> None:
    """A client's `min_tokens` (vLLM's, SGLang's) past the max_tokens each model turn is sent where the request sets
    no output limit (config.step_max_tokens: _turn_base): a 400 naming it, as a request without tools is refused one
    past the grid's limit it is sent (request_info.build_request_info). Every turn went to the engine with
    min_tokens > max_tokens, vLLM's 400 without a param after the routing and the count (thirty-fourth session). A
    request with its own limit is held to it by the schema (min_tokens no larger than it)."""
    least = body.get("min_tokens")
    if not isinstance(least, int) or isinstance(least, bool) or any(body.get(k) is not None for k in _OUTPUT_LIMITS):
        return
    if least > config.step_max_tokens:
        raise InvalidRequest(f"min_tokens ({least:,}) is more than the output limit of each model turn of the gateway's "
                             f"tool loop ({config.step_max_tokens:,}, what a turn is sent where the request sets no "
                             "max_tokens): set max_tokens to at least min_tokens, or ask fewer", param="min_tokens")


def validate_tool_request(body: Mapping[str, Any], registry: ToolRegistry, base: LoopConfig = DEFAULT_LOOP
                          ) -> LoopConfig:
    """Check a server-side-tools request before it is routed (InvalidRequest naming the field) and
    return its loop settings; run_tool_loop checks the same again (and refuses logprobs on a loop of the client's
    tools alone, which runs only on a model that gets tool calls by constrained output), but for min_tokens, checked
    here only (a loop of the client's tools alone gets no 400 for it after the routing: _turn_base)."""
    offered_tools(body, registry)
    _check_tool_calls(body.get("messages"))
    config = loop_config(body, base)
    if wants_server_tools(body, registry):  # the loop runs whichever model answers
        refuse_logprobs(body)
        # its turns are sent step_max_tokens where the request sets no limit; the client's own tools alone are sent
        # the grid's limit (routes: OutputBound), unwrapped or as the loop's turn (refused past 256 until F2)
        check_min_tokens(body, config)
    return config


async def run_tool_loop(engine: Engine, body: Mapping[str, Any], registry: ToolRegistry, *,
                        context: ToolContext = NO_CONTEXT, config: LoopConfig = DEFAULT_LOOP,
                        clock: Callable[[], float] = time.monotonic,
                        screen: ScreenTexts | None = None,
                        on_usage: UsageReport | None = None,
                        on_tool: ToolReport | None = None,
                        before_turn: TurnGate | None = None) -> AsyncGenerator[Event, None]:
    """Run the loop for one chat request on `engine` (the chosen endpoint's) and yield its events.
    `screen` is the firewall's choke point every tool result passes (the gateway always gives one).
    `on_usage` is told, after each finished model turn, the usage of the turns so far ({} once a turn came without
    the engine's count: _known; what the loop has spent
    if it is stopped early), and when a later model turn is handed to its engine, the same with that turn's
    payload (its prompt is read there even if the loop is stopped before an answer comes). `on_tool` is told of
    each server-side call as it starts and as it ends (ToolReport). `before_turn` is awaited before each model
    turn (TurnGate): refused, the loop ends there (stop "token_budget"; "revoked" where it raised
    AuthenticationError: the caller's credentials no longer hold), no further turn sent.

    Cancelled (its client gone: the gateway cancels the task that drives it), it stops where it is: a model
    turn's engine request is closed, no further turn or tool starts, and a tool already running is left to
    finish on its own (within its timeout; a tool may act: SQL, MCP, the web), its result discarded.

    Raises InvalidRequest for a bad request, EngineUnavailable when the engine fails before its first
    answer (the caller may try the next candidate) and EngineStreamBroken when it fails later.
    """
    config = loop_config(body, config)
    specs = offered_tools(body, registry)
    check_grammar_refs(body, registry, config.mode)
    _check_tool_calls(body.get("messages"))
    refuse_logprobs(body)
    constrained = config.mode == "constrained"
    reuse = (not constrained) if config.reuse_tools is None else config.reuse_tools
    server_names = {s.name for s in specs if s.server}
    client_names = {s.name for s in specs if not s.server}
    base = _turn_base(body, config)
    messages: list[dict[str, Any]] = [dict(m) for m in body.get("messages") or []]
    started = clock()
    steps: list[Step] = []
    spent: set[str] = set()
    usage: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    counted = True  # every finished turn came with the engine's count (else what the loop spent is unknown)
    model_ms, model_calls = 0.0, 0
    # the client's JSON response_format (json_object, json_schema) holds the final answer: a constrained turn's
    # grammar answers in it; a native turn that offers no tools is sent it; a native turn that offers tools is not
    # (vLLM would decode the whole turn under it and no tool could be called) and, when it answers, is asked again
    # without tools under the format (`reformat`; its prose is not streamed)
    fmt = _client_format(body)
    reformat = False
    one_call = body.get("parallel_tool_calls") is False
    runs = config.max_steps if config.max_tool_calls is None else min(config.max_steps, config.max_tool_calls)

    while True:
        at_limit = len(steps) >= config.max_steps
        ran_out = len(steps) >= runs  # no more server-side runs (max_tool_calls): the client's tools are offered still
        none = body.get("tool_choice") == "none"  # OpenAI's: the model answers and calls nothing
        offer = [] if at_limit or none or reformat else [
            s for s in specs if not (s.server and (ran_out or (not reuse and s.name in spent)))]
        payload, turn_constrained, offer = _turn_payload(body, base, messages, offer, constrained,
                                                         first=model_calls == 0, fmt=fmt)
        quiet = fmt is not None and not turn_constrained and bool(offer)  # its answer is asked again: not streamed
        cut = None  # a later turn that cannot run: the answer ends with what the loop has (finish_reason "length")
        capped = False  # the quota gave the turn fewer output tokens than its max_tokens
        if model_calls and config.max_prompt_chars is not None and prompt_chars(payload) > config.max_prompt_chars:
            cut = "context_limit"
        elif before_turn is not None:
            try:
                granted = await before_turn(payload)
            except AuthenticationError:  # the caller may no longer ask (its key revoked while the loop ran)
                granted, cut = None, "revoked"
            if granted is not None:
                capped = _cap_output(payload, granted)
            elif cut is None:
                cut = "token_budget"  # the request's quota has no room for the turn's reservation
        if cut is not None:
            yield Finished("", "length", cut, tuple(steps), (), _known(usage, counted), model_calls, model_ms,
                           (clock() - started) * 1000, config.mode)
            return
        if model_calls and on_usage is not None:  # the first turn's prompt: the gateway's own estimate
            on_usage(_known(usage, counted), payload)
        turn_start = clock()
        turn: Turn | None = None
        async for item in _model_turn(engine, payload, turn_constrained, first=model_calls == 0,
                                      limit=config.max_turn_bytes, quiet=quiet, most=config.most_turn_tokens,
                                      silence=None if config.quiet_s is None else Quiet(config.quiet_s, clock)):
            if isinstance(item, Turn):
                turn = item
            else:
                yield item
                if isinstance(item, Rejected):
                    return
        assert turn is not None
        turn_ms = (clock() - turn_start) * 1000
        model_ms += turn_ms
        model_calls += 1
        for k in usage:
            usage[k] += int(turn.usage.get(k, 0))
        counted = counted and any(k in turn.usage for k in ("prompt_tokens", "completion_tokens"))
        if counted and not _chargeable(usage):
            counted = False
        if on_usage is not None:
            on_usage(_known(usage, counted), None)

        if one_call and len(turn.calls) > 1:
            # the client's parallel_tool_calls: false (Anthropic's disable_parallel_tool_use): its first call alone
            # runs or goes back to the client, as the relay keeps a native answer's (gateway/one_call.py); an engine
            # may answer more (SGLang: sgl-project/sglang#9696), and the calls left out are not in the turn the model
            # reads back, so none goes unanswered
            log.info("a model turn asked for %d tool calls where the request allows one: the first runs",
                     len(turn.calls))
            turn.calls = turn.calls[:1]
        if any(c.error == CUT_OFF for c in turn.calls):
            # max_tokens ended the call's JSON; the next turn has the same budget and would be cut off again:
            # the answer ends here, as OpenAI ends a reply cut by max_tokens
            yield Finished("", "length", "token_budget" if capped else "max_tokens", tuple(steps), (), _known(usage, counted),
                           model_calls, model_ms, (clock() - started) * 1000, config.mode)
            return
        if quiet and not turn.calls and turn.finish_reason != "length":
            reformat = True  # answered in prose beside the tools: the answer is asked for again, under the format
            continue
        if ran_out and turn.calls and not any(c.name in client_names for c in turn.calls):
            at_limit = True  # a server-side call past max_tool_calls (an engine that ignored the offer): not run
        if not turn.calls or at_limit or none:
            # At the limit no more tools run, even if an engine ignored the answer-only turn and asked for
            # one: the answer is cut short (finish_reason "length", as OpenAI says when max_tokens is hit).
            # Nor under `tool_choice: "none"`, where no tool was offered (an engine that ignores the grammar and
            # imitates the calls in the history, or a prompt that talks it into one, ran server-side tools before)
            reason = "length" if turn.finish_reason == "length" or turn.calls else "stop"
            stop = ("step_limit" if at_limit or ran_out else "tool_choice_none" if turn.calls
                    else "token_budget" if capped and reason == "length" else "answer")
            content = "" if turn.calls else turn.content
            yield Finished(content, reason, stop, tuple(steps), (), _known(usage, counted), model_calls, model_ms,
                           (clock() - started) * 1000, config.mode)
            return

        server_calls = [c for c in turn.calls if c.name not in client_names]
        room = runs - len(steps)
        if len(server_calls) > room:
            # one turn may ask for many calls at once (native tool_calls, in either mode): no more run than the steps
            # left; the rest are left out of the turn as the model reads it back, so no call goes unanswered
            gone = {id(c) for c in server_calls[room:]}
            log.info("a model turn asked for %d server-side tool calls with %d steps left: %d left out",
                     len(server_calls), room, len(gone))
            turn.calls = [c for c in turn.calls if id(c) not in gone]
        client_calls = [c for c in turn.calls if c.name in client_names]
        messages.append({"role": "assistant", "content": None if constrained else (turn.content or None),
                         "tool_calls": [_openai_call(c) for c in turn.calls]})
        for call in turn.calls:
            if call.name in client_names:
                continue
            if on_tool is not None:
                on_tool(call, None)
            step = await _run_step(registry, call, server_names, context, config, len(steps), turn_ms, clock)
            if screen is not None:
                step = await _screened(step, registry, screen)
            if on_tool is not None:
                on_tool(call, step)
            steps.append(step)
            if step.ok:
                spent.add(step.tool)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": step.result})
            yield step
        if client_calls:  # constrained: the turn's text is the call's own JSON, not words for the client
            # a call forced by a named tool_choice ends with finish_reason "stop", as OpenAI's and vLLM's do (vLLM's
            # serving_chat, vllm-project/vllm#49496); "required" and "auto" calls with "tool_calls". Until the
            # thirty-sixth session the loop said "tool_calls" for both
            reason = "stop" if model_calls == 1 and _named_client_call(body, client_names) else "tool_calls"
            yield Finished("" if constrained else turn.content, reason, "client_tool", tuple(steps),
                           tuple(_openai_call(c) for c in client_calls), _known(usage, counted), model_calls, model_ms,
                           (clock() - started) * 1000, config.mode)
            return


def _chargeable(usage: Mapping[str, int]) -> bool:
    """Can the loop's summed counts be charged? Each, and the prompt and completion together (what is charged:
    Exchange.used_tokens), at most engines/token_counts.MOST_COUNT (a signed 64-bit integer, the audit record's and
    a metric's); past it the loop's count is unknown (logged: its turns' engines counted more than any context
    holds, which only a turn whose context is not known can pass: LoopConfig.most_turn_tokens None)."""
    held = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    if held <= MOST_COUNT and all(v <= MOST_COUNT for v in usage.values()):
        return True
    log.warning("a tool loop's model turns counted %d tokens in all, past %d: the loop's count is unknown (charged "
                "its reservations)", held, MOST_COUNT)
    return False


def _known(usage: Mapping[str, int], counted: bool) -> dict[str, int]:
    """What a loop reports it spent (on_usage, Finished.usage: the answer's usage): its turns' summed counts, or
    nothing once a turn came without the engine's count. Summed as 0, such a turn was charged nothing: the gateway
    grew the reservation only past what it held 'unused' and settled to the 0; unknown, each turn is charged its
    reservation (Guard.extend) and the answer is settled at it, as any answer whose count is unknown."""
    return dict(usage) if counted else {}


def first_turn(body: Mapping[str, Any], registry: ToolRegistry, config: LoopConfig = DEFAULT_LOOP
               ) -> dict[str, Any]:
    """The body of the loop's first model turn for `body` as run_tool_loop sends it: the request's messages with
    the tools the loop offers (a constrained turn's instructions, or a native turn's tool definitions) and its
    max_tokens; what the gateway reserves at admission for a request with server-side tools."""
    config = loop_config(body, config)
    offer = [] if body.get("tool_choice") == "none" else offered_tools(body, registry)
    payload, _, _ = _turn_payload(body, _turn_base(body, config), [dict(m) for m in body.get("messages") or []],
                                  offer, config.mode == "constrained", first=True, fmt=_client_format(body))
    return payload


def _turn_base(body: Mapping[str, Any], config: LoopConfig) -> dict[str, Any]:
    """What every model turn of the loop sends of the client's body (its max_tokens, step_max_tokens if none)."""
    base = {k: v for k, v in body.items()
            if k not in EXTENSIONS and k not in ("tools", "tool_choice", "parallel_tool_calls", "functions",
                                                  "function_call", "response_format", "stream_options", "n")
            and not (v is None and k in _OUTPUT_LIMITS)}  # null: not set (OpenAI's), as the gateway reads it
    if "max_tokens" not in base and "max_completion_tokens" not in base:
        base["max_tokens"] = config.step_max_tokens
        # a min_tokens past it is lowered to it, as _cap_output lowers it with the quota's grant: with server-side
        # tools it was the client's 400 before routing (check_min_tokens, the one check); with the client's own tools
        # alone the body has no limit here only where the engine's context left the grid's limit no room
        # (request_info.engine_output_limit: None), and run_tool_loop's own check refused it after the routing
        # (thirty-fifth session, FIX6)
        least = base.get("min_tokens")
        if isinstance(least, int) and not isinstance(least, bool) and least > config.step_max_tokens:
            base["min_tokens"] = config.step_max_tokens
    return base


def _client_format(body: Mapping[str, Any]) -> Any:
    """The client's JSON response_format (json_object, json_schema), which holds the loop's final answer; None."""
    return body.get("response_format") if structured(body.get("response_format")) else None


def _turn_payload(body: Mapping[str, Any], base: Mapping[str, Any], messages: list[dict[str, Any]],
                  offer: list[ToolSpec], constrained: bool, *, first: bool, fmt: Any
                  ) -> tuple[dict[str, Any], bool, list[ToolSpec]]:
    """One model turn's body offering `offer` (a first turn: the client's tool_choice may force a call), whether
    it is constrained, and the tools it offers."""
    forced = _forced(body.get("tool_choice"), offer) if first else None
    if forced is not None:
        offer = forced
    # `tool_choice: "none"` in a conversation without tool turns is an ordinary chat turn: no grammar to answer in,
    # so the answer is the model's prose, and no JSON costs tokens of the client's max_tokens (with tool turns in
    # the history, shown as JSON in constrained mode, the answer grammar stays: the model would otherwise imitate
    # them)
    none = body.get("tool_choice") == "none"
    turn_constrained = constrained and not (none and not _has_tool_turns(messages))
    payload = _payload(base, messages, offer, turn_constrained, force_call=forced is not None,
                       one_call=body.get("parallel_tool_calls") is False, client_format=fmt)
    return payload, turn_constrained, offer


def _cap_output(payload: dict[str, Any], granted: int) -> bool:
    """Lower a model turn's output limit (max_tokens, max_completion_tokens: each the payload sets) to `granted`;
    whether it was lowered. The client's `min_tokens` is lowered with it where it is larger: the turn is cut short by
    the quota, and min_tokens > max_tokens is vLLM's 400 (it reached the engine so mid-loop, thirty-fourth session)."""
    lowered = False
    for key in _OUTPUT_LIMITS:
        value = payload.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > granted:
            payload[key] = granted
            lowered = True
    least = payload.get("min_tokens")
    if lowered and isinstance(least, int) and not isinstance(least, bool) and least > granted:
        payload["min_tokens"] = granted
    return lowered


def _has_tool_turns(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(m.get("tool_calls") or m.get("role") in ("tool", "function") for m in messages)


def _named_client_call(body: Mapping[str, Any], client_names: set[str]) -> bool:
    """Whether the request's tool_choice names one of the client's own tools (a first turn's call is forced to it)."""
    choice = body.get("tool_choice")
    return isinstance(choice, Mapping) and _function_name(choice) in client_names


def _forced(tool_choice: Any, offer: list[ToolSpec]) -> list[ToolSpec] | None:
    """OpenAI's tool_choice on the first turn: "required" or a named function forces a call."""
    if tool_choice == "required" and offer:
        return offer
    name = _function_name(tool_choice) if isinstance(tool_choice, Mapping) else None
    named = [s for s in offer if s.name == name]
    return named or None


def _payload(base: Mapping[str, Any], messages: list[dict[str, Any]], offer: Sequence[ToolSpec],
             constrained: bool, *, force_call: bool, one_call: bool = False,
             client_format: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One model turn's body. `one_call`: the client's `parallel_tool_calls: false`, passed on to a native turn that
    offers tools (a constrained turn's grammar asks for one call anyway). `client_format`: the client's JSON
    response_format, the answer branch of a constrained turn's grammar, and a native turn's own when it offers no
    tool."""
    payload: dict[str, Any] = {**base, "stream": True, "stream_options": {"include_usage": True}}
    if constrained:
        payload["messages"] = constrained_messages(messages, offer, client_format)
        payload["response_format"] = response_format(offer, allow_answer=not force_call, client_format=client_format)
        return payload
    payload["messages"] = messages
    if client_format is not None and not offer:
        payload["response_format"] = dict(client_format)
    if offer:
        payload["tools"] = [{"type": "function", "function": {  # a forced call's grammar: refs through $id as pointers
            "name": s.name, "description": s.description,
            "parameters": localized(s.parameters) if force_call else dict(s.parameters),
            **({} if s.strict is None else {"strict": s.strict})}} for s in offer]
        payload["tool_choice"] = "required" if force_call else "auto"
        if one_call:
            payload["parallel_tool_calls"] = False
    return payload


def _openai_call(call: Call) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.raw_arguments}}


async def _model_turn(engine: Engine, payload: dict[str, Any], constrained: bool, first: bool,
                      limit: int | None = None, quiet: bool = False, silence: Quiet | None = None,
                      most: int | None = None) -> AsyncIterator[TextDelta | Turn | Rejected]:
    """One streamed model call: TextDelta for text that may be the final answer (none when `quiet`), then the Turn.
    An answer past `limit` bytes (None: no limit), or that sends reads without a data event for longer than
    `silence` allows (None: no bound), is the engine's failure, read no further (EngineStreamBroken)."""
    turn = Turn()
    native: dict[int, dict[str, Any]] = {}
    texts: list[str] = []  # the turn's content fragments, joined once the stream ends (_apply_event)
    answer = AnswerStream()
    parts: list[bytes] = []
    try:
        async with engine.open(CHAT_PATH, orjson.dumps(payload)) as upstream:
            if upstream.status >= 500:  # the engine's failure, or the client's request it could not read
                await raise_for_server_error(upstream)
            if upstream.status >= 400:
                yield Rejected(upstream.status, await read_whole(upstream.body, limit))
                return
            decoder, done, size, read = SseDecoder(), False, 0, 0
            async for chunk in upstream.body:
                read += len(chunk)
                if limit is not None and read > limit:
                    raise EngineStreamBroken(f"a model turn of the tool loop is larger than {limit} bytes, more than "
                                             "its tokens can be")
                if not done and size < 1_000_000:  # kept for an engine that answers plain JSON
                    parts.append(chunk)
                    size += len(chunk)
                events = decoder.feed(chunk)
                if silence is not None:
                    try:
                        silence.after(events)
                    except SseError as e:
                        raise EngineStreamBroken(f"a model turn of the tool loop sent {e}") from e
                for ev in events:
                    if ev.data is None or done:
                        continue
                    if ev.data == DONE:
                        done = True
                        continue
                    try:
                        event = orjson.loads(ev.data)
                    except orjson.JSONDecodeError:
                        continue  # an event we cannot read is skipped, as OpenAI clients do
                    try:
                        deltas = _apply_event(event, turn, native, most)
                    except NotAChunk as e:  # the engine's failure (a later turn's: the stream broke, no rerun)
                        raise EngineUnavailable(f"the engine sent an event that is not a chat completion chunk: {e}"
                                                ) from e
                    for delta in deltas:
                        texts.append(delta)
                        text = answer.feed(delta) if constrained else ("" if native else delta)
                        if text and not quiet:
                            yield TextDelta(text)
    except EngineUnavailable as e:
        if first:
            raise
        raise EngineStreamBroken(f"the engine failed during the tool loop: {e}") from e
    except InvalidRequest as e:  # the engine could not read a later turn (engine_refusal): the answer may have
        if first:  # started (a streamed loop's 200 is sent), so not a 400 now but a broken answer
            raise
        raise EngineStreamBroken(f"the engine could not read the tool loop's next turn: {e}") from e
    turn.content = "".join(texts)
    raw = b"".join(parts)
    if not turn.content and not native and raw.lstrip().startswith(b"{"):
        try:
            _apply_json(raw, turn, native, most)  # an engine that answered a plain chat.completion
        except NotAChunk as e:
            why = f"the engine's answer is not a chat completion: {e}"
            raise (EngineUnavailable(why) if first else EngineStreamBroken(why)) from e
    calls = [{"id": c.get("id"), "name": c.get("name"), "arguments": _joined(c.get("arguments"))}
             for _, c in sorted(native.items())]
    turn = parse_turn(turn, calls, constrained)
    if answer.value is not None and not native and all(c.error == NOT_AN_OBJECT and not c.name for c in turn.calls):
        # a JSON answer (the client's response_format) is the text AnswerStream streamed (as orjson writes it, but
        # its numbers as the model wrote them), not parse_turn's copy written out again (orjson writes 1e2 as 100.0),
        # so the stream and the answer agree (reply.sse_stream sends only what the answer adds to the stream); and it
        # stays the answer when nested too deep to be written out again (parse_turn's bad call: nothing is written
        # out again, and a streaming client has it already)
        turn.calls, turn.content = [], answer.value
    yield turn


def turn_counts(usage: Any, most: int | None = None) -> dict[str, int]:
    """A model turn's token counts as its engine reported them, or none (the turn's count unknown: _known) where they
    cannot be charged (engines/token_counts.py `count_fault`, the gateway's rule: a bool, a float, -5, past 64 bits,
    or a prompt and completion past `most`, what the turn's context holds: LoopConfig.most_turn_tokens), logged as
    the engine's fault. Until the thirty-second session only an int was asked for: a turn's -100,000 was summed into
    the loop's usage, which a loop cut after its tools acted is charged (Exchange.loop_usage): the tenant was
    refunded 99,903 tokens; and until its FX2 a turn's count was not bounded by its context: an engine's
    2**63-1 a turn was summed and charged (the tenant locked out, the sum past 64 bits)."""
    if not isinstance(usage, dict):
        return {}
    why = count_fault(usage, most)
    if why is not None:
        log.warning("an engine's model turn in a tool loop counted %s: the loop's count is unknown (charged its "
                    "reservation)", why)
        return {}
    return {k: v for k, v in usage.items() if type(v) is int}


class NotAChunk(ValueError):
    """An engine's event (or whole answer) whose parts are not of a chat completion's shape: the engine's failure
    (_model_turn). Until the thirty-sixth session such a part (`{"choices": ["x"]}`, `"tool_calls": "abc"`, an `index`
    that is no number) raised AttributeError or TypeError out of the loop: a streamed loop's later turn ended in
    uvicorn's "Exception in ASGI application" (a traceback, the client's stream cut with no error event), and a
    whole one's was "unexpected" to the proxy, which tried the next candidate: the loop from its start, its tools
    run again (EngineStreamBroken is what keeps them from running twice)."""


def _listed(value: Any, what: str) -> list[Any]:
    """`value` when it is a list (None or empty: []); NotAChunk naming `what` otherwise."""
    if not value:
        return []
    if not isinstance(value, list):
        raise NotAChunk(f"{what} is not a list")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    """`value` when it is an object (None or empty: {}); NotAChunk naming `what` otherwise."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise NotAChunk(f"{what} is not an object")
    return value


def _text(value: Any, what: str) -> str:
    """`value` when it is a string (None: ""); NotAChunk naming `what` otherwise."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NotAChunk(f"{what} is not a string")
    return value


def _call_parts(tc: Any, native: dict[int, dict[str, Any]]) -> tuple[int, str, str, str]:
    """A tool call's (index, id, name, arguments) as a chunk or a whole answer gives them; NotAChunk when one is not of
    its type."""
    call = _object(tc, "a tool call")
    index = call.get("index", len(native))
    if isinstance(index, bool) or not isinstance(index, int):
        raise NotAChunk("a tool call's index is not an integer")
    fn = _object(call.get("function"), "a tool call's function")
    return (index, _text(call.get("id"), "a tool call's id"), _text(fn.get("name"), "a tool call's name"),
            _text(fn.get("arguments"), "a tool call's arguments"))


def _apply_event(event: Any, turn: Turn, native: dict[int, dict[str, Any]], most: int | None = None) -> list[str]:
    """Merge one chat.completion.chunk into the turn; return its content fragments, which the caller keeps (the turn's
    content is their join, made once: _model_turn). A call's argument pieces are kept as a list, joined once
    (`_joined`). Each was added to a string as it came, a copy of all before it each time: an engine sending an
    answer a character an event (600,000 events, 28 MB) cost 28 s of the gateway's CPU, quadratic in the events.
    NotAChunk for a part not of its shape (a JSON event that is not an object is skipped, as one that is not JSON)."""
    out: list[str] = []
    if not isinstance(event, dict):
        return out
    if isinstance(event.get("usage"), dict):
        turn.usage = turn_counts(event["usage"], most)
    for choice in _listed(event.get("choices"), "choices"):
        delta = _object(_object(choice, "a choice").get("delta"), "a choice's delta")
        if isinstance(delta.get("content"), str) and delta["content"]:
            out.append(delta["content"])
        for tc in _listed(delta.get("tool_calls"), "a delta's tool_calls"):
            index, call_id, name, arguments = _call_parts(tc, native)
            slot = native.setdefault(index, {"id": "", "name": "", "arguments": []})
            slot["id"] = call_id or slot["id"]
            slot["name"] = slot["name"] or name
            slot["arguments"].append(arguments)
        if choice.get("finish_reason"):
            turn.finish_reason = choice["finish_reason"]
    return out


def _joined(arguments: Any) -> Any:
    """A native call's arguments: its streamed pieces joined (_apply_event), or as a whole answer gave them."""
    return "".join(arguments) if isinstance(arguments, list) else arguments


def _apply_json(raw: bytes, turn: Turn, native: dict[int, dict[str, Any]], most: int | None = None) -> None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    answer = _object(obj, "the answer")  # NotAChunk for a part not of a chat completion's shape (_apply_event)
    choices = _listed(answer.get("choices"), "choices")
    choice = _object(choices[0], "a choice") if choices else {}
    message = _object(choice.get("message"), "a choice's message")
    turn.content = _text(message.get("content"), "a message's content")
    turn.finish_reason = choice.get("finish_reason")
    turn.usage = turn_counts(answer.get("usage"), most)
    for i, tc in enumerate(_listed(message.get("tool_calls"), "a message's tool_calls")):
        _, call_id, name, arguments = _call_parts({**_object(tc, "a tool call"), "index": i}, native)
        native[i] = {"id": call_id, "name": name, "arguments": arguments}


async def _screened(step: Step, registry: ToolRegistry, screen: ScreenTexts) -> Step:
    """The step as the model will read it: its result through the firewall's choke point."""
    tool = registry.get(step.tool)
    source = tool.source if tool is not None else Source.TOOL_RESULT
    screened = await screen([ModelText(step.result, source, label=f"tool {step.tool}")])
    if not screened.verdicts:
        return step
    result = WITHHELD if screened.blocked is not None else screened.texts[0].text
    return dataclasses.replace(step, result=result, ok=step.ok and screened.blocked is None,
                               firewall=tuple(screened.verdicts))


async def _run_step(registry: ToolRegistry, call: Call, server_names: set[str], context: ToolContext,
                    config: LoopConfig, index: int, model_ms: float, clock: Callable[[], float]) -> Step:
    start = clock()
    ok = False
    if call.error is not None:
        result = f"error: {call.error}"
    elif call.name not in server_names:
        result = f"error: there is no tool named {call.name!r}"
    elif (tool := registry.get(call.name)) is None:  # its MCP server took it back since the loop started
        result = f"error: the tool {call.name!r} is no longer offered"
    else:
        try:
            result = await _detachable(asyncio.wait_for(tool.run(call.arguments or {}, context),
                                                        config.tool_timeout_s))
            ok = True
        except ToolError as e:
            result = f"error: {e}"
        except TimeoutError:  # the model is told; the operator too (a stalled MCP server, a site that never answers)
            log.warning("server-side tool %s did not finish within %ss", call.name, config.tool_timeout_s)
            result = f"error: the tool did not finish within {config.tool_timeout_s}s"
        except Exception:  # a bug in a tool must not fail the request: the model sees an error result
            log.exception("server-side tool %s failed", call.name)
            result = "error: the tool failed unexpectedly"
    if len(result) > config.max_result_chars:
        result = result[: config.max_result_chars] + "..."
    arguments = dict(call.arguments) if call.arguments is not None else call.raw_arguments
    return Step(index, call.name, arguments, result, ok, (clock() - start) * 1000, model_ms, call.id)


_DETACHED: set[asyncio.Task[str]] = set()
"""Tool runs whose loop was cancelled while they ran, finishing on their own (held here until they end)."""


async def _detachable(run: Awaitable[str]) -> str:
    """`run`'s result; when the loop is cancelled meanwhile (its client gone, a shutdown), the cancel is raised
    here at once and the tool goes on to its end in its own task, its result discarded: a tool that acts (a
    query, an MCP server's tool, a request to the web) is never cut off halfway by a cancel it was not written
    for. Its own timeout (the caller's wait_for) still bounds it."""
    task = asyncio.ensure_future(run)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _DETACHED.add(task)
            task.add_done_callback(_discarded)
        raise


def _discarded(task: asyncio.Task[str]) -> None:
    _DETACHED.discard(task)
    if not task.cancelled() and task.exception() is not None:  # retrieved: a failure nobody waits for
        log.debug("a detached tool run failed: %r", task.exception())
