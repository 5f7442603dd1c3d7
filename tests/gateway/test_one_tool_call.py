"""`parallel_tool_calls: false` (chat, Responses) and Anthropic's `tool_choice.disable_parallel_tool_use: true`
(Messages) held by the gateway: the answer its client reads holds at most one tool call, whatever the engine answered
(gateway/one_call.py). Until the thirty-fifth session the flag was passed to the engine only: vLLM drops the calls past
the first itself (vllm-project/vllm#26233), SGLang answers them (sgl-project/sglang#9696), so an agent framework that
runs one call a turn got two where the router chose an SGLang site. Read with the official SDKs over a SCRIPTED engine
that answers two calls, whole and streamed, on each door; and the gateway's own tool loop runs one call a turn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from aigrid.gateway.app import build_app
from aigrid.gateway.one_call import first_call_only
from aigrid.gateway.output_filter import OutputFilter
from aigrid.gateway.relay import EventPipe
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import anthropic_client, openai_client

MODEL = "smollm2-135m"
ASK = "Weather in Paris and the time in Tokyo?"
TWO = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                      {"name": "get_time", "arguments": {"zone": "Asia/Tokyo"}}]}
OBJECT = {"type": "object", "properties": {}}
CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": OBJECT}},
              {"type": "function", "function": {"name": "get_time", "parameters": OBJECT}}]
RESPONSES_TOOLS = [{"type": "function", "name": "get_weather", "parameters": OBJECT, "strict": False},
                   {"type": "function", "name": "get_time", "parameters": OBJECT, "strict": False}]
MESSAGES_TOOLS = [{"name": "get_weather", "input_schema": OBJECT}, {"name": "get_time", "input_schema": OBJECT}]


async def _app(tmp_path: Path, *replies: dict[str, Any], tool_calls: str = "native") -> tuple[Any, ScriptedEngine]:
    engine = ScriptedEngine(list(replies))
    return build_app(await scripted_gateway(tmp_path, engine, tool_calls)), engine


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("one", [True, False])
async def test_chat_answers_one_call_where_the_request_allows_one(tmp_path: Path, stream: bool, one: bool) -> None:
    app, engine = await _app(tmp_path, TWO)
    oai = openai_client(app)
    ask: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": ASK}], "tools": CHAT_TOOLS}
    if one:
        ask["parallel_tool_calls"] = False
    try:
        if stream:
            chunks = [c async for c in await oai.chat.completions.create(**ask, stream=True,
                                                                        stream_options={"include_usage": True})]
            indexes = {tc.index for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or ()}
            finish = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
            usage = [c.usage for c in chunks if c.usage is not None]
            engine.replies.append(TWO)
            async with oai.chat.completions.stream(**ask) as s:  # the SDK's helper, calls accumulated
                message = (await s.get_final_completion()).choices[0].message
            assert indexes == ({0} if one else {0, 1})
            assert finish == ["tool_calls"] and len(usage) == 1 and usage[0].completion_tokens == 5
        else:
            reply = await oai.chat.completions.create(**ask)
            message = reply.choices[0].message
            assert reply.choices[0].finish_reason == "tool_calls" and reply.usage and reply.usage.completion_tokens == 5
    finally:
        await oai.close()
    assert engine.received[0].get("parallel_tool_calls") is (False if one else None)  # still passed to the engine
    calls = [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in message.tool_calls or ()]
    expected = [("call_0", "get_weather", {"city": "Paris"}), ("call_1", "get_time", {"zone": "Asia/Tokyo"})]
    assert calls == (expected[:1] if one else expected)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_responses_door_answers_one_function_call(tmp_path: Path, stream: bool) -> None:
    app, _ = await _app(tmp_path, TWO)
    oai = openai_client(app)
    ask: dict[str, Any] = {"model": MODEL, "input": ASK, "tools": RESPONSES_TOOLS, "parallel_tool_calls": False}
    try:
        if stream:
            async with oai.responses.stream(**ask) as s:
                events = [e async for e in s]
                final = await s.get_final_response()
            assert {e.output_index for e in events if e.type == "response.output_item.added"} == {0}
            assert not [e for e in events if e.type == "response.function_call_arguments.delta" and e.output_index]
        else:
            final = await oai.responses.create(**ask)
        stored = await oai.responses.retrieve(final.id)
    finally:
        await oai.close()
    assert final.status == "completed" and final.parallel_tool_calls is False
    for r in (final, stored):
        assert [(i.type, getattr(i, "call_id", None), getattr(i, "name", None)) for i in r.output] == [
            ("function_call", "call_0", "get_weather")]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_messages_door_answers_one_tool_use_block(tmp_path: Path, stream: bool) -> None:
    app, engine = await _app(tmp_path, TWO)
    claude = anthropic_client(app)
    ask: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "tools": MESSAGES_TOOLS,
                           "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
                           "messages": [{"role": "user", "content": ASK}]}
    try:
        if stream:
            async with claude.messages.stream(**ask) as s:
                events = [e async for e in s]
                message = await s.get_final_message()
            assert {e.index for e in events if e.type == "content_block_start"} == {0}
        else:
            message = await claude.messages.create(**ask)
    finally:
        await claude.close()
    assert engine.received[0]["parallel_tool_calls"] is False
    assert [(b.type, b.id, b.name, b.input) for b in message.content] == [  # type: ignore[union-attr]
        ("tool_use", "call_0", "get_weather", {"city": "Paris"})]
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_the_gateways_tool_loop_runs_one_call_a_turn(tmp_path: Path, stream: bool) -> None:
    """Server-side tools: a native turn that asks for two calculator runs runs the first; the next turn reads back
    that one call and its result (no call left unanswered)."""
    two = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}},
                          {"name": "calculator", "arguments": {"expression": "1+1"}}]}
    app, engine = await _app(tmp_path, two, {"content": "42."})
    oai = openai_client(app)
    ask: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "6*7 and 1+1?"}],
                           "tools": [{"type": "function", "function": {"name": "calculator"}}],
                           "parallel_tool_calls": False}
    try:
        if stream:
            text = "".join([c.choices[0].delta.content or "" async for c in
                            await oai.chat.completions.create(**ask, stream=True) if c.choices])
        else:
            text = (await oai.chat.completions.create(**ask)).choices[0].message.content or ""
    finally:
        await oai.close()
    assert text == "42."
    assert engine.received[0]["parallel_tool_calls"] is False
    second = engine.received[1]["messages"]
    assert [len(m["tool_calls"]) for m in second if m.get("tool_calls")] == [1]
    assert [(m["tool_call_id"], m["content"]) for m in second if m["role"] == "tool"] == [("call_0", "42")]


def _chunk(choice: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": choice, "delta": {"tool_calls": calls}, "finish_reason": None}]}


def _piece(k: int, arguments: str, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": k, "function": {"arguments": arguments}}
    if name is not None:
        call.update(id=f"call_{name}", type="function")
        call["function"]["name"] = name
    return call


@pytest.mark.parametrize("redacts", [False, True])
def test_interleaved_pieces_keep_the_first_call_each_choice_opened(redacts: bool,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Calls whose pieces an engine interleaves (one piece holding two calls), in two choices (`n`): each choice
    keeps the first call index it opened (sent as index 0), under a redaction too; a piece left with no call loses its
    `tool_calls`."""
    out = OutputFilter(redacts=redacts, strip_usage=False, tools=frozenset({"f", "g"}), one_call=True)
    assert out.reads(b'"tool_calls"') and out.reads(b'"\\u0041"') and out.reads(b"x") is redacts
    stream = [_chunk(0, [_piece(1, "", "g")]), _chunk(1, [_piece(0, '{"a": 1}', "f")]),
              _chunk(0, [_piece(0, '{"b": ', "f")]), _chunk(0, [_piece(1, '{"c"'), _piece(0, "")]),
              _chunk(1, [_piece(1, "{}", "g"), _piece(0, "")]), _chunk(0, [_piece(0, "2}"), _piece(1, ": 3}")])]
    kept: dict[int, list[tuple[int, str]]] = {0: [], 1: []}
    with caplog.at_level(logging.INFO, "aigrid.proxy"):
        for ev in stream:
            got = out.event(ev)
            assert got is not None
            for choice in got["choices"]:
                kept[choice["index"]] += [(c["index"], c["function"].get("arguments", ""))
                                          for c in choice.get("delta", {}).get("tool_calls", ())]
    assert {k: {i for i, _ in pieces} for k, pieces in kept.items()} == {0: {0}, 1: {0}}  # (its one call: index 0)
    if not redacts:  # (a redaction holds back the end of each text until the choice ends)
        assert kept == {0: [(0, ""), (0, '{"c"'), (0, ": 3}")], 1: [(0, '{"a": 1}'), (0, "")]}  # choice 0: call 1's
    assert sum("only the first is sent" in r.message for r in caplog.records) == 1
    assert not OutputFilter(redacts=False, strip_usage=True).reads(b'"tool_calls"')  # an ordinary stream: lean path


@pytest.mark.parametrize("track", [False, True])
def test_a_stream_that_asks_parses_only_the_reads_that_may_hold_a_call(track: bool) -> None:
    """A text token's read goes out as the engine's bytes (the relay's lean path, nothing parsed); a read holding a
    call is read, a later call's piece left out, its key written with an escape too."""
    pipe = EventPipe(OutputFilter(False, strip_usage=False, one_call=True), sse=True, track=track)
    text = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
    assert pipe.feed(text) is text
    first = b"data: " + orjson.dumps(_chunk(0, [_piece(0, "{}", "f")])) + b"\n\n"
    later = b"data: " + orjson.dumps(_chunk(0, [_piece(1, "{}", "g")])) + b"\n\n"
    escaped = later.replace(b"tool_calls", b"tool\\u005fcalls")
    out = pipe.feed(first) + pipe.feed(later) + pipe.feed(escaped) + pipe.feed(text)
    assert b'"f"' in out and b'"g"' not in out and out.endswith(text)
    if track:  # what a continuation reads of it: the engine's text as delivered
        assert pipe.delivered.sent_text() == "HiHi" and pipe.delivered.tool_calls


@pytest.mark.parametrize("redacts", [False, True])
def test_a_stream_that_opens_call_1_first_sends_its_one_call_as_index_0(redacts: bool) -> None:
    """An engine that opens call index 1 before call 0: the client's one call is that first one, at index 0, so the
    openai SDK's stream helper accumulates it (with index 1 alone it raised an IndexError)."""
    pipe = EventPipe(OutputFilter(redacts, strip_usage=False, tools=frozenset({"f", "g"}), one_call=True),
                     sse=True, track=False)
    end = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {},
                                                                      "finish_reason": "tool_calls"}]}
    stream = [_chunk(0, [_piece(1, "", "g")]), _chunk(0, [_piece(0, "", "f")]), _chunk(0, [_piece(1, '{"c": 3}')]),
              _chunk(0, [_piece(0, "{}")]), end]
    out = b"".join(pipe.feed(b"data: " + orjson.dumps(c) + b"\n\n") for c in stream) + pipe.feed(b"data: [DONE]\n\n")
    state = ChatCompletionStreamState()
    for line in out.split(b"\n\n"):
        if line.startswith(b"data: {"):
            state.handle_chunk(ChatCompletionChunk.model_validate({"created": 1, "model": MODEL,
                                                                   **orjson.loads(line[6:])}))
    calls = state.get_final_completion().choices[0].message.tool_calls or []
    assert [(c.index, c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[attr-defined]
        (0, "call_g", "g", '{"c": 3}')]


def test_a_whole_answer_keeps_each_choices_first_call_and_passes_others_as_the_engine_wrote_them() -> None:
    def call(name: str) -> dict[str, Any]:
        return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": "{}"}}

    def choice(i: int, *names: str) -> dict[str, Any]:
        return {"index": i, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call(n) for n in names]}}

    usage = {"prompt_tokens": 9, "completion_tokens": 30, "total_tokens": 39}
    two = orjson.dumps({"id": "c", "object": "chat.completion", "usage": usage,
                        "choices": [choice(0, "f", "g"), choice(1, "g", "f", "h")]})
    got = orjson.loads(first_call_only(two))
    assert [[c["function"]["name"] for c in ch["message"]["tool_calls"]] for ch in got["choices"]] == [["f"], ["g"]]
    assert [ch["finish_reason"] for ch in got["choices"]] == ["tool_calls"] * 2 and got["usage"] == usage
    one = b'{"choices": [{"index": 0, "message": {"tool_calls": [{"id": "a"}]}}]}'
    refusal = b'{"error": {"message": "bad request", "type": "invalid_request_error"}}'
    for answer in (one, refusal, b"not json", b"[]"):  # the engine's own bytes
        assert first_call_only(answer) is answer
