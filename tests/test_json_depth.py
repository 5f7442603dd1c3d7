"""json_depth: the depth read from the bytes (raw_depth) is the depth of the parsed value, whatever its strings
hold; a large body is judged from its bytes, a small one by the walk, with the same answer."""

from __future__ import annotations

import random
from typing import Any

import orjson

from aigrid.json_depth import MAX_DEPTH, raw_depth, too_deep, too_deep_raw

NASTY = ['"', "\\", "\\\"", "[", "]", "{", "}", "\\\\", "[[[{{", "\"]}", "é", "\u2028", "x"]


def depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def value(rng: random.Random, levels: int) -> Any:
    if levels == 0 or rng.random() < 0.2:
        return "".join(rng.choice(NASTY) for _ in range(rng.randint(0, 6))) if rng.random() < 0.7 else rng.random()
    if rng.random() < 0.5:
        return [value(rng, levels - 1) for _ in range(rng.randint(0, 3))]
    return {"".join(rng.choice(NASTY) for _ in range(3)) + str(i): value(rng, levels - 1) for i in range(rng.randint(0, 3))}


def test_raw_depth_is_the_depth_of_the_parsed_value_whatever_its_strings_hold() -> None:
    rng = random.Random(12)
    for _ in range(2_000):
        v = value(rng, rng.randint(0, 12))
        raw = orjson.dumps(v)
        assert raw_depth(raw) == depth(v), raw


def test_a_large_body_is_judged_from_its_bytes_with_the_walks_answer() -> None:
    shallow = {"messages": [{"role": "user", "content": "[{" * 200}], "x": list(range(100_000))}
    raw = orjson.dumps(shallow)
    assert len(raw) > 65_536 and too_deep_raw(raw, shallow) is None
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    body = {"pad": "y" * 100_000, "tools": [{"parameters": deep}]}
    raw = orjson.dumps(body)
    assert too_deep_raw(raw, body) == too_deep(body) == "tools.0.parameters.0.0.0"


def test_a_models_tool_call_too_deep_to_write_back_is_kept_as_text() -> None:
    """A model (steered by an injected document) writes tool arguments nested 300 deep: Anthropic's `input`
    keeps them as `_raw` text; the parsed object could not be written by orjson (a 500 before)."""
    from aigrid.gateway.messages_translate import tool_input

    arguments = '{"a":' + "[" * 300 + "]" * 300 + "}"
    out = tool_input(arguments)
    assert out == {"_raw": arguments}
    orjson.dumps(out)
    assert tool_input('{"city": "Paris"}') == {"city": "Paris"}
