"""json_depth: deeper_than (a bracket count, then orjson writing the value inside more levels) says what the
depth of the parsed value says, whatever its strings hold and whatever the limit; too_deep_raw, which serves the
front doors, and usage.whole_answer (an engine's answer) both use it, and a large body gets the walk's answer."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from aigrid.json_depth import MAX_DEPTH, WRITTEN_LEVELS, deeper_than, too_deep, too_deep_raw, written

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


def test_deeper_than_is_the_depth_of_the_parsed_value_whatever_its_strings_hold() -> None:
    rng = random.Random(12)
    for _ in range(2_000):
        v = value(rng, rng.randint(0, 12))
        raw = orjson.dumps(v)
        for limit in range(1, 13):
            assert deeper_than(raw, v, limit) == (depth(v) > limit), (raw, limit)


def nest(levels: int) -> Any:
    v: Any = "leaf"
    for _ in range(levels):
        v = [v]
    return v


def test_deeper_than_holds_at_the_limit_and_past_what_orjson_writes() -> None:
    """Each side of MAX_DEPTH, and values deeper than orjson writes (a body of 300 levels parses: it reads 1,024)."""
    for levels in (1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, WRITTEN_LEVELS, WRITTEN_LEVELS + 1, 300, 1_000):
        raw = b"[" * levels + b"0" + b"]" * levels
        v = orjson.loads(raw)
        assert deeper_than(raw, v) == (levels > MAX_DEPTH), levels
        assert (too_deep_raw(raw, v) is None) == (levels <= MAX_DEPTH), levels
    for limit in (0, WRITTEN_LEVELS):
        try:
            deeper_than(b"[]", [], limit)
        except ValueError:
            continue
        raise AssertionError(f"limit {limit} taken")


def test_written_is_what_orjson_writes_or_none_past_the_limit() -> None:
    rng = random.Random(13)
    for _ in range(1_000):
        v = value(rng, rng.randint(0, 12))
        for limit in range(1, 13):
            assert written(v, limit) == (orjson.dumps(v) if depth(v) <= limit else None), (v, limit)
    for levels in (MAX_DEPTH, MAX_DEPTH + 1, WRITTEN_LEVELS + 1):
        assert written(nest(levels)) == (orjson.dumps(nest(levels)) if levels <= MAX_DEPTH else None)


def test_an_answer_whose_usage_is_taken_out_is_written_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """usage.whole_answer wrote an answer whose counts cannot be charged twice: once for the depth check, once
    without its usage. Now once (and its usage alone, for the usage's depth); what it answers is the same: the answer
    without its usage, NotAnAnswer for an answer or a usage too deep, whichever holds the depth."""
    from aigrid.gateway import usage as usage_module
    from aigrid.gateway.usage import NotAnAnswer, whole_answer

    logprob = {"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "b", "logprob": -1.0}]}
    doc = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                   "logprobs": {"content": [logprob] * 200}, "finish_reason": "stop"}]}
    raw = orjson.dumps({**doc, "usage": {"prompt_tokens": -5, "completion_tokens": 1}})
    wrote: list[int] = []
    dumps = orjson.dumps

    def counted(v: Any, *args: Any) -> bytes:
        out = dumps(v, *args)
        wrote.append(len(out))
        return out
    monkeypatch.setattr(usage_module.orjson, "dumps", counted)  # orjson itself: json_depth's and usage's
    out, charged, why = whole_answer(raw, None)
    assert (orjson.loads(out), charged, why) == (doc, None, "prompt_tokens is -5")
    assert sum(wrote) < len(raw) * 1.1, wrote  # 2x before
    monkeypatch.undo()

    def deep_usage(levels: int) -> bytes:  # a usage of `levels` levels, written by hand: orjson writes 254 at most
        lists = levels - 1
        return orjson.dumps(doc)[:-1] + b',"usage":{"prompt_tokens":' + b"[" * lists + b"0" + b"]" * lists + b"}}"
    assert whole_answer(deep_usage(MAX_DEPTH - 1), None)[2] == f"prompt_tokens is {orjson.loads(deep_usage(MAX_DEPTH - 1))['usage']['prompt_tokens']!r}"
    for deep in (deep_usage(MAX_DEPTH), deep_usage(1_000), orjson.dumps({**doc, "usage": nest(MAX_DEPTH)}),
                 orjson.dumps({**doc, "choices": [{**doc["choices"][0], "x": nest(MAX_DEPTH - 2)}],  # type: ignore[index]
                               "usage": {"prompt_tokens": -1}})):
        with pytest.raises(NotAnAnswer, match="nested deeper than 128"):
            whole_answer(deep, None)


def test_a_plain_answer_is_written_only_without_its_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer of no more brackets than MAX_DEPTH (a plain chat answer: most) nests no deeper, so nothing is
    written to check its depth: its usage charged, nothing written; taken out, the answer once, without it. d77fa73d
    wrote each answer's usage inside 127 arrays to check it (a plain answer's whole_answer 3.3 -> 11.6 us), and one
    whose usage was taken out inside 126 more (3.7 -> 37 us)."""
    from aigrid.gateway import usage as usage_module
    from aigrid.gateway.usage import whole_answer

    doc = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello [{"},
                                   "finish_reason": "stop"}]}
    wrote: list[bytes] = []
    dumps = orjson.dumps

    def counted(v: Any, *args: Any) -> bytes:
        out = dumps(v, *args)
        wrote.append(out)
        return out
    charged = orjson.dumps({**doc, "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    taken_out = orjson.dumps({**doc, "usage": {"prompt_tokens": -5, "completion_tokens": 2}})
    monkeypatch.setattr(usage_module.orjson, "dumps", counted)  # orjson itself: json_depth's and usage's
    assert whole_answer(charged, None) == (charged, {"prompt_tokens": 5, "completion_tokens": 2}, None)
    assert wrote == []
    assert whole_answer(taken_out, None) == (dumps(doc), None, "prompt_tokens is -5")
    assert wrote == [dumps(doc)]


def test_an_answer_nested_too_deep_is_not_an_answer() -> None:
    """The engine's whole answer (usage.whole_answer) is judged by the same check as a request."""
    from aigrid.gateway.usage import NotAnAnswer, whole_answer

    def answer(levels: int) -> bytes:
        return orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                          "finish_reason": "stop", "logprobs": nest(levels - 3)}]})

    assert whole_answer(answer(MAX_DEPTH), None)[0] == answer(MAX_DEPTH)
    try:
        whole_answer(answer(MAX_DEPTH + 1), None)
    except NotAnAnswer as e:
        assert "nested deeper than 128" in str(e), e
    else:
        raise AssertionError("an answer of 129 levels passed")


def test_a_large_body_gets_the_walks_answer_and_path() -> None:
    """A body past what the walk once served alone (64 KiB; its bytes were read by numpy then): deeper_than first,
    the walk only for the path of one found too deep."""
    shallow = {"messages": [{"role": "user", "content": "[{" * 200}], "x": list(range(100_000))}
    raw = orjson.dumps(shallow)
    assert len(raw) > 65_536 and too_deep_raw(raw, shallow) is None
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    body = {"pad": "y" * 100_000, "tools": [{"parameters": deep}]}
    raw = orjson.dumps(body)
    assert too_deep_raw(raw, body) == too_deep(body) == ("tools", 0, "parameters", 0, 0, 0)


def test_a_models_tool_call_too_deep_to_write_back_is_kept_as_text() -> None:
    """A model (steered by an injected document) writes tool arguments nested 300 deep: Anthropic's `input`
    keeps them as `_raw` text; the parsed object could not be written by orjson (a 500 before)."""
    from aigrid.gateway.messages_translate import tool_input

    arguments = '{"a":' + "[" * 300 + "]" * 300 + "}"
    out = tool_input(arguments)
    assert out == {"_raw": arguments}
    orjson.dumps(out)
    assert tool_input('{"city": "Paris"}') == {"city": "Paris"}
