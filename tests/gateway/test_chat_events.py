"""chat_events: a streamed chat answer's tool calls as the Messages and Responses doors read them. A call's name is
every name piece joined (an engine may send it in pieces: Gemini's OpenAI-compatible endpoint); a call starts with its
arguments, another call, or the answer's end, never before its name is whole, and never once the answer is cut."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigrid.gateway.chat_events import (
    TRUNCATED,
    ArgsScan,
    ChatEvent,
    Finish,
    StreamError,
    ToolArgs,
    ToolStart,
    chat_events,
)
from aigrid.gateway.output_filter import MAX_NAME_CHARS
from tests.gateway import hostile_engine as H
from tests.gateway import hostile_grid as T


def piece(index: int, name: str | None = None, arguments: str | None = None, call_id: str | None = None) -> bytes:
    fn: dict[str, Any] = {} if name is None else {"name": name}
    if arguments is not None:
        fn["arguments"] = arguments
    call: dict[str, Any] = {"index": index, "function": fn} | ({"id": call_id, "type": "function"} if call_id else {})
    return event({"tool_calls": [call]})


def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"


async def read(*blocks: bytes) -> list[ChatEvent]:
    async def each() -> AsyncIterator[bytes]:
        for b in blocks:
            yield b
    return [e async for e in chat_events(each())]


FINISH = event({}, "tool_calls")
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize("end", [[FINISH, DONE], [DONE], [FINISH]], ids=["finish", "done", "finish-only"])
async def test_a_name_sent_in_pieces_is_the_calls_whole_name(end: list[bytes]) -> None:
    """Until the thirtieth session the first piece's name was the call's: "get_wea"."""
    got = await read(piece(0, "get_wea", call_id="call_1"), piece(0, "ther", ""), piece(0, None, '{"city": "Oslo"}'),
                     *end)
    assert got[:2] == [ToolStart(0, "call_1", "get_weather"), ToolArgs(0, '{"city": "Oslo"}', True)], got
    got = await read(piece(0, "get_wea", call_id="call_1"), piece(0, "ther"), *end)  # no arguments: at the end
    assert got[0] == ToolStart(0, "call_1", "get_weather"), got


async def test_a_name_repeated_whole_in_each_piece_is_one_name() -> None:
    got = await read(piece(0, "f", "", "c"), piece(0, "f", '{"x"'), piece(0, "f", ": 2}"), FINISH, DONE)
    assert got == [ToolStart(0, "c", "f"), ToolArgs(0, '{"x"'), ToolArgs(0, ": 2}", True), Finish("tool_calls")], got


async def test_another_call_starts_those_before_it_in_order() -> None:
    got = await read(piece(0, "look", call_id="a"), piece(0, "up"), piece(1, "find", '{}', "b"), FINISH, DONE)
    assert [e for e in got if isinstance(e, ToolStart)] == [ToolStart(0, "a", "lookup"), ToolStart(1, "b", "find")]


@pytest.mark.parametrize("cut", [[], [b'data: {"error": {"message": "boom", "code": "stream_interrupted"}}\n\n']],
                         ids=["truncated", "error-event"])
async def test_a_call_whose_name_may_go_on_never_starts_when_the_answer_is_cut(cut: list[bytes]) -> None:
    got = await read(event({"content": "Let me look. "}), piece(0, "get_wea", call_id="call_1"), *cut)
    assert not any(isinstance(e, ToolStart) for e in got), got
    assert isinstance(got[-1], StreamError) and (cut or got[-1] == TRUNCATED), got


def split_name(path: str, req: dict) -> H.Script:
    """An engine (as Gemini's endpoint) that sends a call's name in two pieces, then its arguments, whole."""
    events = [{**H.token(None), "choices": [{"index": 0, "delta": d, "finish_reason": f}]} for d, f in (
        ({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_wea"}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"name": "ther", "arguments": ""}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Oslo"}'}}]}, None),
        ({}, "tool_calls"))]
    return H.stream(*H.sse(*events))


WEATHER = {"messages": {"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]},
           "responses": {"tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]}}


@pytest.mark.parametrize(("door", "call"), [("messages", '"type":"tool_use","id":"call_1","name":"get_weather"'),
                                            ("responses", '"type":"function_call"')])
async def test_the_doors_name_a_call_sent_in_pieces_by_its_whole_name(tmp_path, door: str, call: str) -> None:
    """A tenant whose answers are not redacted (nothing joins the pieces before chat_events): the Messages door's
    tool_use block and the Responses door's function_call name `get_weather`, never `get_wea`."""
    async for g in T.grid(tmp_path, split_name, good=split_name):
        spec = g.gw.spec  # the engine's own tool calls, as they come (no constrained-mode loop)
        g.gw.spec = spec.model_copy(update={"models": {
            name: m.model_copy(update={"tool_calls": "native"}) for name, m in spec.models.items()}})
        r = await g.post(door, True, **WEATHER[door])
        assert r.status_code == 200 and call in r.text, r.text
        assert '"get_wea"' not in r.text and '"name":"get_weather"' in r.text, r.text


async def test_a_name_in_pieces_is_bounded() -> None:
    """Pieces joined past output_filter.MAX_NAME_CHARS end the answer as a malformed one (the door's error), as on a
    redacted stream: no name held without end."""
    got = await read(*[piece(0, "ab" if i % 2 else "cd") for i in range(MAX_NAME_CHARS // 2 + 2)], FINISH, DONE)
    first = next(i for i, e in enumerate(got) if isinstance(e, StreamError))  # where each door ends the answer
    assert got[first].code == "engine_malformed" and not any(isinstance(e, ToolStart) for e in got[:first]), got[:3]


_JSON_TEXT = st.text(alphabet=st.sampled_from('{}[]":,\\ \n/ue\u00e9\u2028\U0001f600'), max_size=8) | st.text(max_size=4)
_JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_TEXT, inner, max_size=4), max_leaves=12)


@st.composite
def _argument_texts(draw: st.DrawFn) -> str:
    """A call's arguments as an engine may send them: an object (escaped quotes and backslashes, unicode escapes,
    braces inside strings), another value at the top, either with whitespace or junk after, or JSON-ish noise."""
    if draw(st.integers(0, 3)):
        value = draw(st.dictionaries(_JSON_TEXT, _JSON_VALUE, max_size=5) | _JSON_VALUE)
        text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2])))
        return " " * draw(st.integers(0, 2)) + text + draw(st.sampled_from(["", " ", "\n\t", "}", "{}", "x", ' "']))
    return draw(st.text(alphabet=st.sampled_from('{}[]":,\\ u0a1\n'), max_size=30))


@given(_argument_texts(), st.data())
@settings(max_examples=400, deadline=None)
def test_the_args_scan_says_whole_as_a_parse_of_each_prefix_does(text: str, data: st.DataObject) -> None:
    """Review RV13 of 0d4b1e57: ArgsScan, fed a call's arguments cut anywhere (a backslash or a unicode escape split
    between pieces), says whole after each piece exactly when the pieces so far parse as a JSON object."""
    cuts = data.draw(st.sets(st.integers(1, max(len(text) - 1, 1)), max_size=8))
    if data.draw(st.booleans()):  # a piece ending with each backslash (the escape goes on in the next piece)
        cuts |= {i + 1 for i, ch in enumerate(text[:-1]) if ch == "\\"}
    at = sorted(cuts)
    pieces = [text[a:b] for a, b in zip([0, *at], [*at, len(text)], strict=True)]
    scan = ArgsScan()
    for k, piece_ in enumerate(pieces, 1):
        scan.feed(piece_)
        try:
            parsed = isinstance(orjson.loads("".join(pieces[:k])), dict)
        except orjson.JSONDecodeError:
            parsed = False
        assert scan.whole is parsed, pieces[:k]


def test_a_calls_many_small_pieces_are_held_joined() -> None:
    """Review RV13 of 5f91c5b3: MAX_TOOL_ARGS_CHARS bounds an answer's argument characters, but 2-character pieces
    held apart cost about 70 bytes each (290 MiB at the bound): ArgsScan joins them every JOIN_EVERY pieces, in the
    same list (responses_stream._Open.parts is it), its verdict unchanged."""
    from aigrid.gateway.chat_events import JOIN_EVERY

    scan = ArgsScan()
    held = scan.parts
    pieces = ['{"a": "', *(f"{i % 100:02d}" for i in range(5 * JOIN_EVERY)), '"}']
    for p in pieces:
        scan.feed(p)
        assert len(scan.parts) <= 5 + JOIN_EVERY
    assert scan.parts is held and "".join(held) == "".join(pieces) and scan.whole
