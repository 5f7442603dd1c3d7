"""Parallel tool calls whose argument pieces an engine interleaves, read through the other doors' streams.

OpenAI's chat stream names each piece's call by `index`, so the pieces of several calls may come interleaved
(`{"city": ` of call 0, `{"zone": ` of call 1, `"Paris"}` of call 0, ...). Until the thirtieth session the
Messages and Responses doors' streams dropped a piece of a call that was no longer the one open: each call's
arguments reached the client cut (call 0's `{}`, or half of each). The Messages door (one content block open at a
time) holds a later call's pieces until the block before it is whole; the Responses door keeps several
function_call items open, each delta naming its item and output_index. Read with the official SDKs' stream helpers
(anthropic's messages.stream, openai's responses.stream) over a scripted engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from aigrid.gateway.app import build_app
from aigrid.gateway.chat_events import ArgsScan, ChatEvent, StreamError, ToolArgs, ToolStart
from aigrid.gateway.responses_schema import ResponsesRequest
from aigrid.gateway.responses_stream import responses_stream
from tests.agents.scripted_engine import USAGE, ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import anthropic_client, openai_client
from tests.gateway.test_messages_cut import sent

MODEL = "smollm2-135m"
ASK = "Weather in Paris and the time in Tokyo?"
WEATHER = {"city": "Paris", "unit": "celsius"}
TIME = {"zone": "Asia/Tokyo"}


def _call(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if name is not None:
        call.update(id=f"call_{name}", type="function")
        call["function"]["name"] = name
    return call


INTERLEAVED = [  # each delta's tool_calls: the calls begun, then their arguments' pieces in turn (one delta holds two)
    [_call(0, "", "get_weather")],
    [_call(1, "", "get_time")],
    [_call(0, '{"city": ')],
    [_call(1, '{"zone"')],
    [_call(0, '"Paris", "un'), _call(1, ': "Asia/')],
    [_call(1, 'Tokyo"}')],
    [_call(0, 'it": "celsius"}')],
]
FIRST_WHOLE_LATE = [  # call 1 begun (with arguments) while call 0's are half written: call 0 ends first, 1 goes on
    [_call(0, '{"city": "Paris", ', "get_weather")],
    [_call(1, '{"zone": ', "get_time")],
    [_call(0, '"unit": "celsius"}')],
    [_call(1, '"Asia/')],
    [_call(1, 'Tokyo"}')],
]
ONE_AFTER_ANOTHER = [  # as vLLM and OpenAI stream parallel calls: each call's pieces whole before the next begins
    [_call(0, '{"city": ', "get_weather")],
    [_call(0, '"Paris", "unit": "celsius"}')],
    [_call(1, '{"zone": ', "get_time")],
    [_call(1, '"Asia/Tokyo"}')],
]
SCRIPTS = {"interleaved": INTERLEAVED, "first_whole_late": FIRST_WHOLE_LATE, "one_after_another": ONE_AFTER_ANOTHER}


class PiecesEngine(ScriptedEngine):
    """A scripted engine whose streamed reply is given piece by piece: each reply a list of deltas' tool_calls."""

    async def _sse(self, reply: Any) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            ev = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(ev) + b"\n\n"

        yield chunk({"role": "assistant", "content": None})
        for calls in reply:
            yield chunk({"tool_calls": calls})
        yield chunk({}, "tool_calls")
        yield b"data: " + orjson.dumps({"choices": [], "usage": USAGE}) + b"\n\ndata: [DONE]\n\n"


async def _gateway(tmp_path: Path, script: str) -> Any:
    return build_app(await scripted_gateway(tmp_path, PiecesEngine([SCRIPTS[script]]), "native"))


ANTHROPIC_TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}},
                   {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
OPENAI_TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}},
                {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize("script", list(SCRIPTS))
async def test_the_messages_stream_gives_each_calls_arguments_whole(tmp_path: Path, script: str) -> None:
    claude = anthropic_client(await _gateway(tmp_path, script))
    try:
        async with claude.messages.stream(model=MODEL, max_tokens=64, tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
                                          messages=[{"role": "user", "content": ASK}]) as stream:
            events = [e async for e in stream]
            final = await stream.get_final_message()
    finally:
        await claude.close()
    assert final.stop_reason == "tool_use"
    uses = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert uses == [("call_get_weather", "get_weather", WEATHER), ("call_get_time", "get_time", TIME)]
    stopped = {e.index: e.content_block for e in events if e.type == "content_block_stop"}
    assert [(b.name, b.input) for b in stopped.values()] == [("get_weather", WEATHER), ("get_time", TIME)]
    for index, block in stopped.items():  # each block's own pieces, joined, are its arguments as the engine wrote them
        sent = "".join(e.delta.partial_json for e in events
                       if e.type == "content_block_delta" and e.index == index and e.delta.type == "input_json_delta")
        assert orjson.loads(sent) == block.input
    kinds = [(e.type, getattr(e, "index", None)) for e in events if e.type.startswith("content_block")]
    assert kinds.index(("content_block_stop", 0)) < kinds.index(("content_block_start", 1))  # one block at a time
    if script != "interleaved":  # call 1 goes on live once call 0 is whole: its last piece is a delta of its own
        assert kinds[-2:] == [("content_block_delta", 1), ("content_block_stop", 1)]
        assert kinds.count(("content_block_delta", 1)) == (2 if script == "one_after_another" else 3)


@pytest.mark.parametrize("script", list(SCRIPTS))
async def test_the_responses_stream_gives_each_calls_arguments_whole(tmp_path: Path, script: str) -> None:
    oai = openai_client(await _gateway(tmp_path, script))
    try:
        async with oai.responses.stream(model=MODEL, input=ASK, tools=OPENAI_TOOLS) as stream:  # type: ignore[arg-type]
            events = [e async for e in stream]
            final = await stream.get_final_response()
        stored = await oai.responses.retrieve(final.id)
    finally:
        await oai.close()
    assert events[-1].type == "response.completed" and final.status == "completed"
    calls = [(i.call_id, i.name, orjson.loads(i.arguments), i.status) for i in final.output if i.type == "function_call"]
    assert calls == [("call_get_weather", "get_weather", WEATHER, "completed"),
                     ("call_get_time", "get_time", TIME, "completed")]
    assert [(i.call_id, i.arguments) for i in stored.output if i.type == "function_call"] == [
        (i.call_id, i.arguments) for i in final.output if i.type == "function_call"]
    done = {e.output_index: e.item for e in events if e.type == "response.output_item.done"}
    assert sorted(done) == [0, 1]
    for index, item in done.items():  # each item's own deltas, joined, are its arguments whole
        assert item.type == "function_call"
        deltas = "".join(e.delta for e in events
                         if e.type == "response.function_call_arguments.delta" and e.output_index == index)
        [args_done] = [e for e in events if e.type == "response.function_call_arguments.done" and e.output_index == index]
        assert orjson.loads(deltas) == orjson.loads(item.arguments) == orjson.loads(args_done.arguments)
        assert {e.item_id for e in events if getattr(e, "output_index", None) == index and hasattr(e, "item_id")} \
            == {item.id}


CUT_INTERLEAVED: list[ChatEvent] = [ToolStart(0, "call_w", "get_weather"), ToolArgs(0, '{"city": '),
                                    ToolStart(1, "call_t", "get_time"), ToolArgs(1, '{"zone": "Asia/Tokyo"}'),
                                    ToolArgs(0, '"Par'), StreamError("the answer was interrupted", "stream_interrupted")]


async def test_interleaved_calls_cut_by_a_failure_end_the_messages_stream_with_the_first_block_open() -> None:
    """The failure cut call 0's arguments: its block is left open (not stopped) and call 1's, waiting behind it, never
    starts; the stream ends with the error."""
    pairs = await sent(*CUT_INTERLEAVED)
    assert [k for k, _ in pairs if k.startswith("content_block")] == ["content_block_start"] + ["content_block_delta"] * 2
    assert pairs[-1][0] == "error"
    assert "".join(d["delta"]["partial_json"] for k, d in pairs if k == "content_block_delta") == '{"city": "Par'


async def test_interleaved_calls_cut_by_a_failure_are_both_incomplete_in_the_responses_stream() -> None:
    async def events() -> AsyncIterator[ChatEvent]:
        for e in CUT_INTERLEAVED:
            yield e

    async def kept(final: dict[str, Any]) -> None:
        raise AssertionError("a failed answer is not stored")

    req = ResponsesRequest(model=MODEL, input=ASK, stream=True)
    out = b"".join([b async for b in responses_stream(events(), req, "resp_1", kept)])
    got = [orjson.loads(line[6:]) for line in out.decode().splitlines() if line.startswith("data: ")]
    assert got[-1]["type"] == "response.failed"
    # call 1's arguments were whole, but it began after call 0, which was still open: both were written when cut
    assert [(i["call_id"], i["arguments"], i["status"]) for i in got[-1]["response"]["output"]] == [
        ("call_w", '{"city": "Par', "incomplete"), ("call_t", '{"zone": "Asia/Tokyo"}', "incomplete")]


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every parse of a call's arguments (chat_events' orjson.loads) counted."""
    import aigrid.gateway.chat_events as ce

    parsed: list[int] = []

    def counted(text: str) -> Any:
        parsed.append(len(text))
        return orjson.loads(text)

    monkeypatch.setattr(ce, "orjson", SimpleNamespace(loads=counted, JSONDecodeError=orjson.JSONDecodeError))
    return parsed


def _calls(*indexes: int) -> Any:
    """chat_events' calls, `indexes` started (each call's ArgsScan is there: ToolArgs.whole)."""
    import aigrid.gateway.chat_events as ce

    calls = ce._Calls()
    for i in indexes:
        calls.pending[i] = [f"call_{i}", "f"]
        calls._start(i)
    return calls


def _args(calls: Any, index: int, piece: str) -> ToolArgs:
    [ev] = list(calls.args(index, piece))
    return ev


def test_a_call_begun_parses_only_the_last_call_begun_not_every_call_left_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine's many calls left open (arguments ending with '}' but not whole): each call begun parsed every open
    call's arguments again (2,000 calls: 2 million parses, 40 s of the event loop, RV9). Only the last call begun can
    be whole (args_delta closes an earlier one once it is), and its arguments are read as they come."""
    import aigrid.gateway.responses_stream as rs

    parsed = _count_parses(monkeypatch)
    out = rs._Output(lambda kind, **kw: b"")  # type: ignore[arg-type]
    n = 300
    calls = _calls(*range(n))
    for i in range(n):
        out.start_call(i, f"call_{i}", "f")
        out.args_delta(i, '{"a": {}', _args(calls, i, '{"a": {}').whole)
    assert len(out.open) == n  # none whole: all still open
    assert parsed == []  # none came back to depth 0: none parsed
    out.args_delta(0, "}", _args(calls, 0, "}").whole)  # call 0 whole, another began after it: done
    assert ("call", 0) not in out.open and len(out.open) == n - 1
    assert len(parsed) == 1


NESTED = '{"a": ' + '{"b": ' * 500 + "1" + "}" * 500 + ', "s": "} { \\" }"}'
"""Arguments of 500 nested objects (and a string holding braces and an escaped quote): 501 of their characters
are a '}', each a piece ending the way a whole object does."""


def test_the_messages_door_parses_a_calls_arguments_once_not_at_each_closing_brace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One character a piece: until the thirtieth session each piece ending with '}' parsed the call's arguments
    so far again (review RV9: 120 KB of nested objects, 20,001 such pieces, 26 s of the event loop). Now each piece
    is scanned once, and the arguments parsed once, when the object closes; a later call waiting then starts."""
    import aigrid.gateway.messages_stream as ms

    parsed = _count_parses(monkeypatch)
    blocks = ms._Blocks()
    blocks.tool(0, {"type": "tool_use", "id": "call_a", "name": "f", "input": {}})
    blocks.tool(1, {"type": "tool_use", "id": "call_b", "name": "g", "input": {}})  # waits: call 0 not whole
    calls = _calls(0, 1)
    for ch in NESTED[:-1]:
        blocks.tool_args(0, ch, _args(calls, 0, ch).whole)
        assert blocks.waiting  # not whole yet
    assert parsed == []
    blocks.tool_args(0, NESTED[-1], _args(calls, 0, NESTED[-1]).whole)
    assert not blocks.waiting and blocks.open == ("tool", 1)  # whole: call 1's block started
    assert parsed == [len(NESTED)]
    assert orjson.loads(NESTED)["s"] == '} { " }'


def test_the_responses_door_parses_a_calls_arguments_once_not_at_each_closing_brace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import aigrid.gateway.responses_stream as rs

    parsed = _count_parses(monkeypatch)
    out = rs._Output(lambda kind, **kw: b"")  # type: ignore[arg-type]
    out.start_call(0, "call_a", "f")
    out.start_call(1, "call_b", "g")
    calls = _calls(0, 1)
    for ch in NESTED[:-1]:
        out.args_delta(0, ch, _args(calls, 0, ch).whole)
    assert ("call", 0) in out.open and parsed == []
    out.args_delta(0, NESTED[-1], _args(calls, 0, NESTED[-1]).whole)
    assert ("call", 0) not in out.open  # whole, and another began after it: done
    assert out.items[0]["arguments"] == NESTED and parsed == [len(NESTED)]


def test_each_door_holds_a_calls_many_small_pieces_joined() -> None:
    """Final review F1 (thirty-first session): review RV13 bounded 2-character pieces held apart (about 70 bytes each,
    290 MiB at MAX_TOOL_ARGS_CHARS) by joining them every JOIN_EVERY pieces, in ArgsScan's list, which the Responses
    item held too; since 1af68f0a each door held its own plain list: one Responses call of 4,194,299 such pieces
    grew the process by 289 MiB again. A Responses call's pieces and a waiting Messages block's are joined as they
    come, and sent whole."""
    import aigrid.gateway.messages_stream as ms
    import aigrid.gateway.responses_stream as rs
    from aigrid.gateway.chat_events import JOIN_EVERY

    pieces = ['{"a": "', *(f"{i % 100:02d}" for i in range(5 * JOIN_EVERY)), '"}']
    out = rs._Output(lambda kind, **kw: b"")  # type: ignore[arg-type]
    out.start_call(0, "call_a", "f")
    blocks = ms._Blocks()
    blocks.tool(0, {"type": "tool_use", "id": "call_a", "name": "f", "input": {}})
    blocks.tool(1, {"type": "tool_use", "id": "call_b", "name": "g", "input": {}})  # waits: call 0 not whole
    for p in pieces[:-1]:
        out.args_delta(0, p, False)
        blocks.tool_args(1, p, False)
        assert len(out.open[("call", 0)].parts) <= 5 + JOIN_EVERY and len(blocks.waiting[1][1]) <= 5 + JOIN_EVERY
    sent = blocks.tool_args(0, "{}", True)  # call 0 whole: call 1's block starts with its pieces so far as one delta
    assert blocks.open == ("tool", 1) and sent.count(orjson.dumps("".join(pieces[:-1]))[1:-1]) == 1
    out.args_delta(0, pieces[-1], True)
    assert "".join(out.open[("call", 0)].parts) == "".join(pieces)


@pytest.mark.parametrize(("pieces", "whole"), [
    (['{"a": 1}'], True), (["  {", '"a"', ": [1, {}]", "}  \n"], True), (["{}"], True),
    (['{"a": "}"'], False), (['{"a": "\\"}"'], False), (['{"a": "\\\\"}'], True),
    (['{"a": 1}', "x"], False), (['{"a": 1}', " ", "{}"], False), (["[1]"], False), (['"s"'], False),
    (["x{}"], False), (["{]"], False), (["{", "}}"], False), (['{"a" 1}'], False), ([], False), ([""], False),
])
def test_the_scan_says_whole_as_a_parse_of_the_pieces_joined_does(pieces: list[str], whole: bool) -> None:
    scan = ArgsScan()
    for piece in pieces:
        scan.feed(piece)
    assert scan.whole is whole
    try:
        parsed = isinstance(orjson.loads("".join(pieces)), dict)
    except orjson.JSONDecodeError:
        parsed = False
    assert parsed is whole
