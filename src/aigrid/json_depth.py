"""How deeply a request's JSON may nest.

orjson reads up to 1,024 levels but writes at most 254: a body nested deeper than that parses, then fails when
the gateway writes the engine's request (a TypeError, "Recursion limit reached"), which was taken for the
engine's failure (every candidate "failed": 502, and each engine counted a failure) or was a 500. The front
doors refuse such a body at once (400 naming the field), with room left under orjson's limit for what the
gateway wraps around a client's value (a tool's parameters inside the tool loop's answer grammar, a tool call
inside the JSON a constrained turn shows the model).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

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
    """too_deep of `value`, the JSON `raw` parsed. A body with no more brackets than `limit` cannot nest that
    deep (two counts at C speed: most chat requests stop there; an agent's tools and long history do not). A
    larger one is walked when small (under _WALKED bytes: ~0.1-0.2 ms for a 28 KB agent request), else its
    depth is read from the bytes (raw_depth: byte operations and numpy, ~15-60 ms for 4 MiB, against ~240 ms
    for walking a 4 MiB flat array and the 35-600 ms orjson spends parsing it; `scripts/bench_json_depth.py`),
    and walked only when too deep, for the path the error names."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return None
    if len(raw) >= _WALKED and raw_depth(raw, limit) <= limit:
        return None
    return too_deep(value, limit)


_WALKED = 65_536


def _brackets(raw: bytes) -> bytes:
    """The brackets of JSON `raw` outside its strings, `{}` written `[]`: escaped backslashes, then escaped
    quotes taken out, every byte but quotes and brackets dropped, then each remaining `"..."` (a string's
    quotes and the brackets it held). C-speed byte operations; the last regular expression runs over quotes
    and brackets only (one over the whole body's strings cost twice the walk it saves on a usual agent body)."""
    marks = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_SQUARE, _NOT_MARKS)
    return _QUOTED.sub(b"", marks)


_QUOTED = re.compile(rb'"[^"]*"')
_NOT_MARKS = bytes(b for b in range(256) if b not in b'"[]{}')


def raw_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """How many levels of objects and arrays valid JSON `raw` nests (brackets inside strings do not count), or
    any number over `limit` once it is known to be deeper."""
    brackets = _brackets(raw)
    if len(brackets) < _SMALL:
        # peel the innermost pairs, one level a pass: a request's few hundred brackets, a few passes
        depth = 0
        while brackets:
            if depth > limit:
                return depth
            brackets = brackets.replace(b"[]", b"")
            depth += 1
        return depth
    codes = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where(codes == ord("["), 1, -1).astype(np.int32)).max())


_SQUARE = bytes.maketrans(b"{}", b"[]")
_SMALL = 16_384
"""Below this many brackets the passes cost less than numpy's fixed cost; above, one cumulative sum."""


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
