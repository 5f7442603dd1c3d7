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

import orjson

MAX_DEPTH = 128
"""The most levels of objects and arrays a request may nest (OpenAI's structured outputs allow 10 of a schema;
a body of 128 levels leaves over 120 for what the gateway wraps around it)."""

SHOWN = 6
"""How many keys of a too-deep value's path an error names (the whole path would be over MAX_DEPTH long)."""

Path = tuple[int | str, ...]
"""A value's path inside the body: an object's keys (str) and an array's indices (int), which each door writes in
its own API's form (gateway/envelope.field_name: OpenAI's `messages[0].content`, Anthropic's `messages.0.content`)."""


def too_deep(value: Any, limit: int = MAX_DEPTH) -> Path | None:
    """The path (its first SHOWN keys and indices, () for the value itself) of a value nested deeper than `limit`
    levels of objects and arrays, or None. Walked with a stack: no recursion, whatever the depth. Parts, not a
    string: until the thirty-eighth session it was joined with dots (`messages.0.content`) on every door, where the
    OpenAI doors name a field `messages[0].content`."""
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


def too_deep_raw(raw: bytes, value: Any, limit: int = MAX_DEPTH) -> Path | None:
    """too_deep of `value`, the JSON `raw` parsed: `deeper_than` first (C speed), and the walk only for a value it
    finds too deep, for the path the error names (the walk has the last word: None for a value orjson could not
    write for another reason)."""
    if not deeper_than(raw, value, limit):
        return None
    return too_deep(value, limit)


WRITTEN_LEVELS = 254
"""The most levels of objects and arrays orjson writes."""


def deeper_than(raw: bytes, value: Any, limit: int = MAX_DEPTH) -> bool:
    """Does `value` (the JSON `raw` parsed) nest more than `limit` levels of objects and arrays (or hold what orjson
    cannot write)? The one depth check of a whole body, a request's (too_deep_raw) or an engine's answer
    (usage.whole_answer; `written` where it writes the answer anyway). A body with no more brackets than `limit`
    cannot (two counts: most chat requests stop there); else `value` is written inside WRITTEN_LEVELS - `limit`
    more levels, which orjson refuses exactly when it is deeper. Best of 15, `scripts/bench_json_depth.py` (load ~4.7): a 28 KB agent request 0.04 ms (the walk
    that served requests took 0.15), a 0.9 MB answer of log-probabilities 2.5 ms (bytes and numpy: 23), 4 MiB of
    empty arrays 39 ms (110); a 4 MiB flat array of numbers 58 ms (27), where orjson's parse took 113."""
    if not 0 < limit < WRITTEN_LEVELS:
        raise ValueError(f"limit {limit}: orjson writes 1 to {WRITTEN_LEVELS} levels")
    if few_brackets(raw, limit):
        return False
    return _written_within(value, limit) is None


def few_brackets(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Has `raw` no more brackets (`{` and `[`, those inside strings too) than `limit`? Then no value in it nests
    deeper: deeper_than's first count, where most bodies stop (usage.whole_answer's, which then writes nothing to
    check)."""
    return raw.count(b"{") + raw.count(b"[") <= limit


def written(value: Any, limit: int = MAX_DEPTH) -> bytes | None:
    """`value` as orjson writes it, or None when it nests more than `limit` levels of objects and arrays: the depth
    check and the write in one (deeper_than's write, the wrapping levels cut off the bytes), for a value the caller
    writes anyway (usage.whole_answer's answer without its usage)."""
    if not 0 < limit < WRITTEN_LEVELS:
        raise ValueError(f"limit {limit}: orjson writes 1 to {WRITTEN_LEVELS} levels")
    out = _written_within(value, limit)
    levels = WRITTEN_LEVELS - limit
    return None if out is None else out[levels:len(out) - levels]


def _written_within(value: Any, limit: int) -> bytes | None:
    """`value` written inside WRITTEN_LEVELS - `limit` arrays (no spaces: `[[...value...]]`), or None where orjson
    refuses it, which is exactly when `value` nests more than `limit` levels."""
    wrapped = value
    for _ in range(WRITTEN_LEVELS - limit):
        wrapped = [wrapped]
    try:
        return orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return None


def _path_to(value: Any, limit: int) -> Path:
    """The path of the first value found deeper than `limit` (found again, now keeping paths: only on refusal)."""
    stack: list[tuple[Any, int, Path]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return path[:SHOWN]
        items: Any = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1, (*path, key) if len(path) < SHOWN else path))
    return ()


def depth_message(where: str, limit: int = MAX_DEPTH) -> str:
    """The 400's sentence for a value nested too deep at the field `where` (written in the door's form; "" for the
    body itself)."""
    return f"{where or 'the body'}: nested deeper than {limit} levels of objects and arrays"
