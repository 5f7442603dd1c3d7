"""No door hands its client a tool call whose arguments were cut (chat_events._Calls).

An engine may write a piece of a call's arguments after text, or after the call's JSON object was whole. The chat door
passes every piece through as the engine sent it. The Messages door cannot reopen a tool_use block it stopped, nor the
Responses door a function_call item it marked done: until the thirty-first session both ended the open call at text
and dropped its later pieces with a log line, so the client got `{"city": ` as the call's arguments in an answer that
looked whole. Now text that comes while a call's arguments are not whole waits for them (the call ends whole, then the
text), and a piece after a call's arguments were whole (no object can go on: they would no longer parse) ends the
answer with the door's error, the engine charged a failure. Whitespace after a whole object changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.gateway import hostile_grid as T
from tests.gateway.metered_gateway import inflight, the_one_record
from tests.gateway.translating_grid import chunk, engine, grid


def _args(arguments: str, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
    if name is not None:
        call.update(id="call_w", type="function")
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


TEXT_MID_CALL = [_args('{"city": ', "get_weather"), chunk({"content": "Let me see."}), _args('"Paris"}'),
                 chunk({}, "tool_calls")]
"""Text between two pieces of a call's arguments."""
AFTER_WHOLE = [_args('{"city": "Paris"}', "get_weather"), _args('{"city": "Oslo"}'), chunk({}, "tool_calls")]
"""A piece after the call's arguments were a whole object (they no longer parse)."""
SPACE_AFTER_WHOLE = [_args('{"city": "Paris"}', "get_weather"), _args(" \n"), chunk({"content": "Done."}),
                     _args("\n"), chunk({}, "tool_calls")]


def _data(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


def _messages_calls(body: bytes) -> tuple[list[str], str]:
    """Each tool_use block's input_json_delta pieces joined, and the text blocks' text."""
    events = _data(body)
    kinds = {e["index"]: e["content_block"]["type"] for e in events if e["type"] == "content_block_start"}
    args: dict[int, str] = {i: "" for i, k in kinds.items() if k == "tool_use"}
    text = ""
    for e in events:
        if e["type"] == "content_block_delta":
            if e["delta"]["type"] == "input_json_delta":
                args[e["index"]] += e["delta"]["partial_json"]
            else:
                text += e["delta"]["text"]
    return [args[i] for i in sorted(args)], text


def _responses_calls(body: bytes) -> tuple[list[str], str]:
    """Each function_call item's arguments as done, and the messages' text."""
    done = [e["item"] for e in _data(body) if e["type"] == "response.output_item.done"]
    text = "".join(c["text"] for i in done if i["type"] == "message" for c in i["content"])
    return [i["arguments"] for i in done if i["type"] == "function_call"], text


def _chat_calls(body: bytes) -> tuple[list[str], str]:
    args, text = "", ""
    for e in _data(body):
        for c in e.get("choices") or ():
            text += c["delta"].get("content") or ""
            for call in c["delta"].get("tool_calls") or ():
                args += call["function"].get("arguments") or ""
    return [args], text


READ = {"chat": _chat_calls, "messages": _messages_calls, "responses": _responses_calls}
AFTER_END = b"tool call 0's arguments went on after they ended"
"""What the door's error says of call 0 (chat_events.ArgsAfterEnd)."""


async def ended_malformed(g: Any, door: str, r: httpx.Response, says: bytes) -> None:
    """The answer `r` ended with the door's in-stream error saying `says`: audited interrupted,
    the engine charged one failure, nothing left in flight."""
    assert r.status_code == 200 and T.ENDS[door] in r.content, r.text[-500:]
    assert says in r.content
    assert (await the_one_record(g.gw))["outcome"] == "interrupted"
    assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


@pytest.mark.parametrize("door", ["chat", "messages", "responses"])
async def test_text_between_a_calls_pieces_waits_for_its_arguments_whole(tmp_path, door: str) -> None:
    """Until the thirty-first session the Messages and Responses doors gave the call `{"city": `."""
    async for g in grid(tmp_path, engine(events=TEXT_MID_CALL)):
        r = await g.post(door, True)
        assert r.status_code == 200 and b"event: error" not in r.content and b"response.failed" not in r.content
        assert READ[door](r.content) == (['{"city": "Paris"}'], "Let me see.")
        assert (await the_one_record(g.gw))["outcome"] == "ok"


@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_a_piece_after_a_calls_whole_object_ends_the_answer_with_the_doors_error(tmp_path, door: str) -> None:
    """Until the thirty-first session the Messages door wrote it into the open block (an input that does not parse)
    or dropped it (a block stopped), the Responses door into its open item or dropped it: an answer that looked
    whole, its call's arguments not the engine's."""
    async for g in grid(tmp_path, engine(events=AFTER_WHOLE)):
        await ended_malformed(g, door, await g.post(door, True), AFTER_END)


async def test_the_chat_door_passes_a_piece_after_a_whole_object_as_sent(tmp_path) -> None:
    async for g in grid(tmp_path, engine(events=AFTER_WHOLE)):
        r = await g.post("chat", True)
        assert r.status_code == 200 and _chat_calls(r.content) == (['{"city": "Paris"}{"city": "Oslo"}'], "")


@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_whitespace_after_a_whole_object_is_no_error(tmp_path, door: str) -> None:
    async for g in grid(tmp_path, engine(events=SPACE_AFTER_WHOLE)):
        r = await g.post(door, True)
        assert r.status_code == 200 and T.ENDS[door] not in r.content
        calls, text = READ[door](r.content)
        assert [orjson.loads(a) for a in calls] == [{"city": "Paris"}] and text == "Done."
        assert (await the_one_record(g.gw))["outcome"] == "ok"


def _logprobs(n: int) -> dict[str, Any]:
    """A chunk's log-probabilities of `n` tokens with 20 alternatives each (about 2.4 KB a token as JSON)."""
    top = [{"token": "b" * 50, "logprob": -1.0, "bytes": [98] * 50}] * 20
    return {"content": [{"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": top}] * n}


HEAVY = chunk({"content": "a"})
HEAVY["choices"][0]["logprobs"] = _logprobs(100)  # about 240 KB of JSON for one character of text
HEAVY_MID_CALL = [_args('{"city": ', "get_weather"), *[HEAVY] * 40, _args('"Paris"}'), chunk({}, "tool_calls")]
"""40 chunks of one character each, 9.6 MB of log-probabilities held behind a call not whole."""


@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_text_held_behind_a_call_counts_its_log_probabilities(tmp_path, door: str) -> None:
    """Held text was bounded by its characters only (review RV1): 2,000 such chunks held 1.58 GB, counted 2,000
    characters. Now each held piece counts its chunk where it carries log-probabilities: past MAX_TOOL_ARGS_CHARS
    the answer ends with the door's error, the engine charged a failure."""
    async for g in grid(tmp_path, engine(events=HEAVY_MID_CALL)):
        await ended_malformed(g, door, await g.post(door, True),
                              b"characters of text (and its log-probabilities) while a tool call")


def test_one_character_pieces_held_are_bounded_by_their_count() -> None:
    """8 million one-character pieces (MAX_TOOL_ARGS_CHARS) held about 450 MB; each counts HELD_PIECE_CHARS too."""
    from aigrid.gateway.chat_events import (
        HELD_PIECE_CHARS,
        MAX_TOOL_ARGS_CHARS,
        HeldTooMuch,
        TextPiece,
        _Calls,
    )

    calls = _Calls()
    calls.pending[0] = ["call_0", "f"]
    calls._start(0)
    assert [type(e).__name__ for e in calls.args(0, '{"a": ')] == ["ToolArgs"]  # not whole: text is held
    with pytest.raises(HeldTooMuch):  # of 200,000 pieces: about 7 MB held (129,055 of 56 bytes), not 450 MB
        for _ in range(200_000):
            assert list(calls.text_piece(TextPiece("a", ()), 1)) == []
    assert len(calls.text) == MAX_TOOL_ARGS_CHARS // (1 + HELD_PIECE_CHARS)


def _last(arguments: str, finish: str = "tool_calls") -> dict[str, Any]:
    """vLLM's last chunk: a piece of call 0's arguments with the finish_reason."""
    return chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}, finish)


XLAM = [_args('{"city": ', "get_weather"), _args('"Paris", "unit": '), _args('"celsius"}'),
        _last('{"city": "Paris", "unit": "celsius"}')]
"""vLLM's xlam tool parser (vllm-project/vllm#51697): the arguments in pieces, then the whole object again in the
last chunk, with the finish_reason (its end-of-stream flush never saw what it had streamed)."""
XLAM_RESPACED = [_args('{"city":"Paris",', "get_weather"), _args('"unit":"celsius"}'), _args(' {"unit": "celsius", '),
                 _args('"city": "Paris"}\n'), chunk({}, "tool_calls")]
"""The same value again in two pieces, written with other spacing and key order (json.dumps after compact text)."""
XLAM_BRACE = [_args("{", "get_weather"), _last('{"city": "Paris", "unit": "celsius"}')]
"""xlam's other shape: only the opening brace streamed, then the whole object in the last chunk (`{{"city": ...}`)."""
XLAM_BRACE_PIECES = [_args("{", "get_weather"), _args(" \n"), _args(' {"city": "Paris", '), _args('"unit": "celsius"}'),
                     chunk({}, "tool_calls")]
"""The same, the object after the brace (and whitespace) in two pieces."""
NOT_AGAIN = [[_args('{"city": "Paris"}', "get_weather"), _args('{"city": '), chunk({}, "tool_calls")],
             [_args('{"city": "Paris"}', "get_weather"), _args('{"city": "Paris"'), _args(', "x": 1}'),
              chunk({}, "tool_calls")],
             [_args('{"city": "Paris"}', "get_weather"), _args('{"city": "Paris"}{"city": "Paris"}'),
              chunk({}, "tool_calls")],
             [_args('{"city": "Paris"}', "get_weather"), _args('{"city": "Paris"'), chunk({"content": "x"}),
              _args(" " * 200), chunk({}, "tool_calls")]]
"""Late pieces that are not the call's object again: its start only (then the finish), another object, the object
twice, pieces past twice the call's length."""


@pytest.mark.parametrize("events", [XLAM, XLAM_RESPACED, XLAM_BRACE, XLAM_BRACE_PIECES],
                         ids=["xlam", "respaced", "brace-then-object", "brace-then-pieces"])
@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_a_calls_whole_arguments_sent_again_are_left_out(tmp_path, door: str, events: list[Any]) -> None:
    """Since 1af68f0a (until review RV1 of it) every such vLLM answer ended with engine_malformed, the engine charged
    a failure: now the repeat is dropped and the answer is whole, the call's input the object once. The object after
    a lone '{' (until the thirty-second session) reached the client as `{{"city": ...}`, which no JSON reader reads."""
    async for g in grid(tmp_path, engine(events=events)):
        r = await g.post(door, True)
        assert r.status_code == 200 and T.ENDS[door] not in r.content, r.text[-500:]
        calls, text = READ[door](r.content)
        assert [orjson.loads(a) for a in calls] == [{"city": "Paris", "unit": "celsius"}] and text == ""
        assert (await the_one_record(g.gw))["outcome"] == "ok"
        assert g.failures("nrt-smollm2") == 0 and inflight(g.gw) == 0


@pytest.mark.parametrize("events", NOT_AGAIN, ids=["start-only", "another", "twice", "too-long"])
@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_late_pieces_not_the_object_again_still_end_the_answer(tmp_path, door: str, events: list[Any]) -> None:
    async for g in grid(tmp_path, engine(events=events)):
        await ended_malformed(g, door, await g.post(door, True), AFTER_END)


def test_text_behind_a_call_never_whole_is_written_at_once() -> None:
    """A call whose arguments start '[' can never be a whole object: text behind it was held to the answer's
    finish (review RV1). Now it is written at once, and the call ends there as at text after a whole one."""
    from aigrid.gateway.chat_events import ArgsAfterEnd, TextPiece, ToolArgs, _Calls

    calls = _Calls()
    calls.pending[0] = ["call_0", "f"]
    calls._start(0)
    assert list(calls.args(0, '["a", ')) == [ToolArgs(0, '["a", ')]
    assert list(calls.args(0, '"b"]')) == [ToolArgs(0, '"b"]')]  # its pieces go on until text comes
    assert list(calls.text_piece(TextPiece("Hi"), 2)) == [TextPiece("Hi")]
    with pytest.raises(ArgsAfterEnd):
        list(calls.args(0, "1"))


def test_only_a_brace_before_an_object_is_left_out() -> None:
    """The object after a call's lone opening brace loses its own brace; an object as a value is read as sent."""
    from aigrid.gateway.chat_events import ToolArgs, _Calls

    calls = _Calls()
    for index in (0, 1, 2):
        calls.pending[index] = [f"call_{index}", "f"]
        calls._start(index)
    assert list(calls.args(0, "{")) == [ToolArgs(0, "{")]
    assert list(calls.args(0, ' {"b": 1}')) == [ToolArgs(0, '"b": 1}', True)]
    assert list(calls.args(1, '{"a": ')) == [ToolArgs(1, '{"a": ')]
    assert list(calls.args(1, '{"b": 1}}')) == [ToolArgs(1, '{"b": 1}}', True)]
    assert list(calls.args(2, "{")) == [ToolArgs(2, "{")]
    assert list(calls.args(2, '"x": {')) == [ToolArgs(2, '"x": {')]
    assert list(calls.args(2, "}}")) == [ToolArgs(2, "}}", True)]
    assert calls.whole == {0: '{"b": 1}', 1: '{"a": {"b": 1}}', 2: '{"x": {}}'}


def test_a_brace_sent_again_is_left_out_once_a_call() -> None:
    """(Review RV1 of 0d3c3cd7) The xlam repair left out every further lone '{' after the opening one: `{`, `{`, `{`,
    `{"a": 1}` (`{{{{"a": 1}`, no object) reached the Messages and Responses clients as the object `{"a": 1}`. Only
    the object's own brace after the opening one is left out; the rest are the arguments as sent, never whole."""
    from aigrid.gateway.chat_events import ToolArgs, _Calls

    calls = _Calls()
    calls.pending[0] = ["call_0", "f"]
    calls._start(0)
    events = [event for piece in ("{", "{", "{", '{"a": 1}') for event in calls.args(0, piece)]
    assert events == [ToolArgs(0, "{"), ToolArgs(0, "{"), ToolArgs(0, '{"a": 1}')]
    assert calls.whole == {} and 0 in calls.scans
