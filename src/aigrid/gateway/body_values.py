"""How many JSON values a request may hold: its objects, arrays, keys, strings and numbers, counted on the parsed body
before any of it is validated or read (every door's body: routes.read_json, the Responses WebSocket's create, a
batch's line, a message batch's request).

The gateway walks a request's structured fields value by value in Python, on the event loop: the schema check of a
tool's or a response format's JSON schema (`schemas.schema_patterns`), the firewall's reading of tool definitions,
template variables and documents (`model_texts`, `firewall.texts.tool_text`), pydantic's validation, the front
doors' translations. Each costs a few microseconds a value, and a value costs a client 2 or 3 bytes (`[],`): until
the thirty-sixth session a 3.9 MB body whose one tool's schema held `"enum": [[], [], ...]` (1.3 M empty arrays)
held the event loop 6 s on chat and 8.4 s on Anthropic's door (`/livez` of a live gateway, 2 loaded cores), the same
list as `chat_template_kwargs` or a `response_format` schema 8.3-8.7 s, 70,000 small tools 4.9 s, and each was
served (the counts of a prompt's tokens do not see empty arrays), at will, every tenant waiting (ATK4).
`schemas.MAX_PARTS` bounds messages and their parts only; `json_depth` bounds how deep, not how many. A body at
MAX_VALUES in those fields still held the loop 1.2-1.7 s (review RV1): the fields other than the conversation's hold
MAX_OPTION_VALUES (20,000) together.

Every value counts, numbers too: a prompt given as token ids, the one request of many numbers the OpenAI API knows, is
not served here (the firewall cannot read it: `schemas.CompletionRequest`, `embeddings.embedding_inputs`)."""

from __future__ import annotations

from typing import Any

import orjson

from aigrid.errors import InvalidRequest

MAX_VALUES = 200_000
"""The most JSON values a request may hold. The largest requests other bounds allow stay below it: a Responses
history at `schemas.MAX_PARTS` (10,000 items) of function calls and their outputs, each with its id and status, is
about 130,000 values, 10,000 text parts in their messages about 60,000. This count stops at the bound (at most
200,000 steps)."""

CONVERSATION = frozenset({"messages", "input", "prompt", "system", "items"})
"""The top-level fields that carry a conversation (chat's and Anthropic's `messages` and `system`, the Responses API's
and embeddings' `input`, completions' `prompt`, a conversation's `items`): they may hold up to MAX_VALUES."""

MAX_OPTION_VALUES = 20_000
"""The most JSON values all of a request's other fields together may hold: its tools and their schemas, a response
format's schema, template variables, metadata, sampling options. These are walked value by value on the event loop by
several readers (the schema check, the firewall's tool and variable texts, the tool loop's prompt): at MAX_VALUES a
body of 199,800 empty arrays in one tool's schema held the loop 1.2-1.7 s, served (review RV1). Real clients stay far
below: OpenAI takes at most 128 tools a request, 128 tools of a hundred values each are about 13,000; a response
format's schema or template variables are a few hundred. A body at this bound holds the loop about a tenth as long
(docs/security.md's row, `scripts/loop_hold_values.py`)."""


MAX_ARGUMENT_VALUES = 60_000
"""The most JSON values the tool calls' arguments of a request's conversation may hold together (a JSON text parsed,
`_call_arguments`): walked like the tools (the firewall's texts, the tool loop), so bounded apart from the rest of the
conversation, but a history is long: 5,000 calls and their outputs (schemas.MAX_PARTS items) of a dozen values of
arguments each fit (review RV1 follow-up)."""


OFF_LOOP_BYTES = 32 * 1024
"""A body whose JSON is longer is parsed, depth-checked and counted (`routes.read_json`, the Responses WebSocket's message: json_object) and has the
firewall's texts collected (`model_texts.collected`) on a thread, not on the event loop: each is a walk of its values
in Python, or a parse whose many containers set off the garbage collector, and at the bounds above (a message's own
key of 199,800 empty arrays, tool calls' arguments of 60,000) they held the loop 0.4-1.2 s, served (thirty-sixth
session, LOOP2: scripts/loop_hold_values.py). A body this short holds at most about 16,000 values, a few tens of
milliseconds of walking; an ordinary chat body (a few KB) stays on the loop, spared a thread's hop."""


def _few_at_most(raw: bytes, limit: int) -> bool:
    """Can `raw` hold no more than `limit` values? Each value but the first of an array or object follows a comma,
    each key is one more: three counts in C, where every ordinary body stops; none for a body of fewer than
    `limit` / 2 bytes (each of those characters is one byte: 10 KB at MAX_OPTION_VALUES), which cannot hold more (the
    counts cost about 1 us a KB: 15 us for a 16 KB chat body, its orjson.loads 11 us; review RV1)."""
    if 2 * len(raw) + 1 <= limit:
        return True
    return 2 * (raw.count(b",") + raw.count(b"{") + raw.count(b"[")) + 1 <= limit


def _past(value: Any, limit: int, calls: list[int] | None = None) -> int:
    """The values inside `value` (the value itself not counted), counting stopped once past `limit`: an object's keys
    and values, an array's items, and so on down; a tool call's arguments (`_call_arguments`) too, and where `calls`
    is given ([values in arguments so far, the most they may hold]) those are added to its first item as well, their
    count stopped once past the second."""
    count = 0
    stack: list[Any] = [value] if isinstance(value, (dict, list)) else []
    pop, push = stack.pop, stack.append
    while stack and count <= limit:
        node = pop()
        if isinstance(node, dict):
            count += 2 * len(node)  # its keys and values
            children: Any = node.values()
            arguments = _call_arguments(node)
            if arguments is not None:
                if calls is None:
                    push(arguments)
                else:
                    held = _past(arguments, min(limit - count, calls[1] - calls[0]))
                    count += held
                    calls[0] += held
                    if calls[0] > calls[1]:
                        break
                    children = [v for v in children if v is not arguments]
        else:
            count += len(node)
            children = node
        if count > limit:  # past it: one list of a million items is not walked (at most `limit` steps)
            break
        for child in children:
            if isinstance(child, (dict, list)):
                push(child)
    return count


def _call_arguments(node: dict[str, Any]) -> Any:
    """A tool call's arguments, walked by the firewall and the tool loop as the body is (model_texts, agents.loop):
    `arguments` written as a JSON object or array in a string (OpenAI's form), parsed; `arguments` as the object
    itself (Ollama's), or a `tool_use` block's `input` (Anthropic's). A chat call's 0.6 MB of arguments of 200,000
    empty arrays held the loop 3.0 s, 3 MB of a million over 5 s, each served: a string was one value (review RV1
    follow-up). None for anything else."""
    arguments = node.get("arguments")
    if arguments is None and node.get("type") in _TOOL_USES:
        arguments = node.get("input")
    if isinstance(arguments, (dict, list)):
        return arguments
    if not isinstance(arguments, str) or arguments[:1] not in ("{", "["):
        return None
    try:
        decoded = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, (dict, list)) else None


_TOOL_USES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
"""Anthropic's content blocks whose `input` is a call's arguments."""


def crowding(body: dict[str, Any], raw: bytes | None = None) -> tuple[str, int] | None:
    """Where `body` (parsed from `raw`, when given) holds more values than a request may, the top-level field to name
    and the bound passed: MAX_OPTION_VALUES, in the fields outside CONVERSATION together (the one holding the most
    is named), MAX_ARGUMENT_VALUES, in the conversation's tool calls' arguments together, or MAX_VALUES, in the whole (the field of the most values
    among those counted until the count passed it, whatever came before it: a body's tools sent before its messages
    named `messages`, review RV1). None where it holds no more. A body whose raw counts say it cannot hold more than
    MAX_OPTION_VALUES is not walked."""
    if raw is not None and _few_at_most(raw, MAX_OPTION_VALUES):
        return None
    count = 1 + 2 * len(body)  # the body, its keys and their values
    options = 0
    calls = [0, MAX_ARGUMENT_VALUES]  # the values of the conversation's tool calls' arguments, and their bound
    held: dict[str, int] = {}
    optional: dict[str, int] = {}  # each field's values counted against MAX_OPTION_VALUES
    argued: dict[str, int] = {}  # each conversation field's values of arguments
    for key, value in body.items():
        if key in CONVERSATION:
            before = calls[0]
            held[key] = _past(value, MAX_VALUES - count, calls)
            argued[key] = calls[0] - before
            if calls[0] > MAX_ARGUMENT_VALUES:
                return max(argued, key=argued.__getitem__), MAX_ARGUMENT_VALUES
        else:
            held[key] = optional[key] = _past(value, min(MAX_OPTION_VALUES - options, MAX_VALUES - count))
            options += held[key]
            if options > MAX_OPTION_VALUES:
                return max(optional, key=optional.__getitem__), MAX_OPTION_VALUES
        count += held[key]
        if count > MAX_VALUES:
            return max(held, key=held.__getitem__), MAX_VALUES
    return None


def crowded_field(body: dict[str, Any], raw: bytes | None = None) -> str | None:
    """The top-level field `crowding` names, or None."""
    crowded = crowding(body, raw)
    return None if crowded is None else crowded[0]


def check_values(body: dict[str, Any], raw: bytes | None = None, where: str = "") -> None:
    """400 naming the field (`where` before it: `body.` of a batch's line) of a body holding more values than a
    request may."""
    crowded = crowding(body, raw)
    if crowded is not None:
        raise InvalidRequest(values_message(f"{where}{crowded[0]}", crowded[1]), param=f"{where}{crowded[0]}")


def values_message(field: str, bound: int) -> str:
    if bound == MAX_OPTION_VALUES:
        return (f"{field}: the request holds more than {MAX_OPTION_VALUES:,} JSON values (objects, arrays, keys, "
                "strings and numbers) in its tools, schemas and options (every field but "
                f"{', '.join(sorted(CONVERSATION))}), the most these may hold together; send fewer or smaller tools, "
                "schemas or variables")
    if bound == MAX_ARGUMENT_VALUES:
        return (f"{field}: the request's tool calls' arguments hold more than {MAX_ARGUMENT_VALUES:,} JSON values "
                "(objects, arrays, keys, strings and numbers) together, the most they may; send fewer or smaller "
                "arguments")
    return (f"{field}: the request holds more than {MAX_VALUES:,} JSON values (objects, arrays, keys, strings and "
            "numbers), the most one request may hold; send fewer or smaller tools, schemas or variables")
