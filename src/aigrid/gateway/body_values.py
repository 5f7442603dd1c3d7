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
`schemas.MAX_PARTS` bounds messages and their parts only; `json_depth` bounds how deep, not how many.

Every value counts, numbers too: a prompt given as token ids, the one request of many numbers the OpenAI API knows, is
not served here (the firewall cannot read it: `schemas.CompletionRequest`, `embeddings.embedding_inputs`)."""

from __future__ import annotations

from typing import Any

from aigrid.errors import InvalidRequest

MAX_VALUES = 200_000
"""The most JSON values a request may hold. The largest requests other bounds allow stay below it: a Responses
history at `schemas.MAX_PARTS` (10,000 items) of function calls and their outputs, each with its id and status, is
about 130,000 values, 10,000 text parts in their messages about 60,000, OpenAI's 128 tools with schemas of a hundred
values about 13,000. This count stops at the bound (at most 200,000 steps); a body at the bound, walked by all the
gateway's readers (a few microseconds a value), is measured in docs/security.md's row."""


def _few_at_most(raw: bytes, limit: int) -> bool:
    """Can `raw` hold no more than `limit` values? Each value but the first of an array or object follows a comma,
    each key is one more: three counts in C, where every ordinary body stops; none for a body of fewer than
    `limit` / 2 bytes (each of those characters is one byte: ~100 KB at MAX_VALUES), which cannot hold more (the
    counts cost about 1 us a KB on every request: 15 us for a 16 KB chat body, its orjson.loads 11 us; review RV1)."""
    if 2 * len(raw) + 1 <= limit:
        return True
    return 2 * (raw.count(b",") + raw.count(b"{") + raw.count(b"[")) + 1 <= limit


def _past(value: Any, limit: int) -> int:
    """The values inside `value` (the value itself not counted), counting stopped once past `limit`: an object's keys
    and values, an array's items, and so on down."""
    count = 0
    stack: list[Any] = [value] if isinstance(value, (dict, list)) else []
    pop, push = stack.pop, stack.append
    while stack and count <= limit:
        node = pop()
        if isinstance(node, dict):
            count += 2 * len(node)  # its keys and values
            children: Any = node.values()
        else:
            count += len(node)
            children = node
        if count > limit:  # past it: one list of a million items is not walked (at most `limit` steps)
            break
        for child in children:
            if isinstance(child, (dict, list)):
                push(child)
    return count


def crowded_field(body: dict[str, Any], raw: bytes | None = None, limit: int = MAX_VALUES) -> str | None:
    """Where `body` (parsed from `raw`, when given) holds more than `limit` values, the top-level field of the most
    values among those counted until the count passed it (no more is counted); None where it holds no more. Not the
    field the count passed in, whatever came before it: a body's tools of 199,000 values sent before its messages
    named `messages` (review RV1)."""
    if raw is not None and _few_at_most(raw, limit):
        return None
    count = 1 + 2 * len(body)  # the body, its keys and their values
    held: dict[str, int] = {}
    for key, value in body.items():
        held[key] = _past(value, limit - count)
        count += held[key]
        if count > limit:
            return max(held, key=held.__getitem__)
    return None


def check_values(body: dict[str, Any], raw: bytes | None = None, where: str = "") -> None:
    """400 naming the field (`where` before it: `body.` of a batch's line) of a body past MAX_VALUES values."""
    field = crowded_field(body, raw)
    if field is not None:
        raise InvalidRequest(values_message(f"{where}{field}"), param=f"{where}{field}")


def values_message(field: str) -> str:
    return (f"{field}: the request holds more than {MAX_VALUES:,} JSON values (objects, arrays, keys, strings and "
            "numbers), the most one request may hold; send fewer or smaller tools, schemas or variables")
