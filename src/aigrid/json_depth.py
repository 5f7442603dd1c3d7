"""How deeply a request's JSON may nest.

orjson reads up to 1,024 levels but writes at most 254: a body nested deeper than that parses, then fails when
the gateway writes the engine's request (a TypeError, "Recursion limit reached"), which was taken for the
engine's failure (every candidate "failed": 502, and each engine counted a failure) or was a 500. The front
doors refuse such a body at once (400 naming the field), with room left under orjson's limit for what the
gateway wraps around a client's value (a tool's parameters inside the tool loop's answer grammar, a tool call
inside the JSON a constrained turn shows the model).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 128
"""The most levels of objects and arrays a request may nest (OpenAI's structured outputs allow 10 of a schema;
a body of 128 levels leaves over 120 for what the gateway wraps around it)."""

SHOWN = 6
"""How many keys of a too-deep value's path an error names (the whole path would be over MAX_DEPTH long)."""


def too_deep(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """The path (`a.0.b`, its first SHOWN keys, "" for the value itself) of a value nested deeper than `limit`
    levels of objects and arrays, or None. Walked with a stack: no recursion, whatever the depth."""
    if not isinstance(value, (dict, list)):
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return _path_to(value, limit)
        for child in children:
            if isinstance(child, (dict, list)):
                push((child, depth + 1))
    return None


def too_deep_raw(raw: bytes, value: Any, limit: int = MAX_DEPTH) -> str | None:
    """too_deep of `value`, the JSON `raw` parsed: walked only when `raw` holds enough brackets to nest that
    deep (counted at C speed), so a usual request costs no walk."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return None
    return too_deep(value, limit)


def _path_to(value: Any, limit: int) -> str:
    """The path of the first value found deeper than `limit` (found again, now keeping paths: only on refusal)."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return ".".join(path[:SHOWN])
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1, path + (str(key),) if len(path) < SHOWN else path))
    return ""


def depth_message(where: str, limit: int = MAX_DEPTH) -> str:
    return f"{where or 'the body'}: nested deeper than {limit} levels of objects and arrays"
