"""A tool call's name arriving in pieces while the engine interleaves another call's pieces, under a tenant whose
answers are redacted (output_filter.OutputFilter._call_names). A name not known whole is held back until the call's
arguments begin; until the thirty-sixth session another call's piece released it as if whole ("lookup_123-45"), and
the name's next piece ("-6789") then cut the stream ("more of a tool call's name after the name went out"). The other
call's pieces now wait behind the held one and go out after it, in the order they came: the openai SDK's stream
accumulator (ChatCompletionStreamState, under `client.chat.completions.stream`) reads each call whole."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from aigrid.gateway.output_filter import MAX_WAITING, OutputFilter
from tests.gateway import hostile_engine as H
from tests.gateway.translating_grid import chunk, grid


def _piece(index: int, *, name: str | None = None, arguments: str | None = None,
           call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {}}
    if call_id is not None:
        call.update(id=call_id, type="function")
    if name is not None:
        call["function"]["name"] = name
    if arguments is not None:
        call["function"]["arguments"] = arguments
    return call


INTERLEAVED = [  # call 0's name in two pieces, call 1 (an offered name) begun and argued between them
    [_piece(0, name="lookup_123-45", call_id="c0")],
    [_piece(1, name="get_time", arguments="", call_id="c1")],
    [_piece(1, arguments='{"zone": ')],
    [_piece(0, name="-6789")],
    [_piece(0, arguments='{"a": 1}')],
    [_piece(1, arguments='"UTC"}')],
]
WANT = {"c0": ("lookup_REDACTED_SSN", {"a": 1}), "c1": ("get_time", {"zone": "UTC"})}


def _filtered(script: list[list[dict[str, Any]]], end: str = "finish") -> list[dict[str, Any]]:
    f = OutputFilter(True, strip_usage=False, tools=frozenset({"get_time", "lookup"}))
    sent = [f.event(chunk({"role": "assistant", "content": None}))]
    sent += [f.event(chunk({"tool_calls": calls})) for calls in script]
    sent.append(f.event(chunk({}, "tool_calls")) if end == "finish" else f.flush_event())
    return [e for e in sent if e is not None]


def _sdk_calls(events: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """The calls as the openai SDK's stream helper accumulates them: id -> (name, arguments parsed)."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for e in events:
        for _ in state.handle_chunk(ChatCompletionChunk.model_validate({"id": "chatcmpl-h", "created": 1, "model": "m",
                                                                        "object": "chat.completion.chunk", **e})):
            pass
    calls = state.current_completion_snapshot.choices[0].message.tool_calls or []
    return {c.id: (c.function.name, json.loads(c.function.arguments)) for c in calls}


@pytest.mark.parametrize("end", ["finish", "the stream's end"])
def test_a_name_in_pieces_around_another_calls_pieces_goes_out_whole_before_them(end: str) -> None:
    events = _filtered(INTERLEAVED, end)
    assert b"123-45" not in orjson.dumps(events), events
    firsts = [call["index"] for e in events for call in e["choices"][0]["delta"].get("tool_calls") or ()]
    assert firsts[0] == 0  # call 1 waited: its first piece goes out after call 0's
    assert _sdk_calls(events) == WANT


def test_a_held_name_ended_by_the_choices_end_sends_the_pieces_waiting_behind_it() -> None:
    """Call 0's name never gets arguments: it goes out at the finish with call 1's pieces, in order."""
    script = [[_piece(0, name="lookup_123-45", call_id="c0")], [_piece(0, name="-6789")],
              [_piece(1, name="get_time", arguments='{"zone": "UTC"}', call_id="c1")]]
    events = _filtered(script)
    assert all("tool_calls" not in e["choices"][0]["delta"] for e in events[:-1])
    calls = events[-1]["choices"][0]["delta"]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1] and calls[0]["function"]["name"] == "lookup_REDACTED_SSN"


def test_a_cut_leaves_the_held_call_out_and_sends_the_pieces_behind_it() -> None:
    f = OutputFilter(True, strip_usage=False, tools=frozenset({"get_time"}))
    for calls in INTERLEAVED[:3]:
        f.event(chunk({"tool_calls": calls}))
    held = f.cut_event()
    assert held is not None
    calls = held["choices"][0]["delta"]["tool_calls"]
    assert [(c["index"], c["function"].get("arguments")) for c in calls] == [(1, ""), (1, '{"zone": ')]


def test_the_pieces_waiting_behind_a_held_name_are_bounded() -> None:
    """Past MAX_WAITING pieces the held name goes out as it is (as any other call's piece released it before), and
    more of it then cuts the stream as before."""
    f = OutputFilter(True, strip_usage=False, tools=frozenset({"get_time"}))
    f.event(chunk({"tool_calls": [_piece(0, name="lookup_1", call_id="c0")]}))
    out = [f.event(chunk({"tool_calls": [_piece(1, name="get_time", arguments="{", call_id="c1")]}))]
    out += [f.event(chunk({"tool_calls": [_piece(1, arguments=" ")]})) for _ in range(MAX_WAITING)]
    sent = [c for e in out if e for c in e["choices"][0]["delta"].get("tool_calls") or ()]
    assert [c["index"] for c in sent[:2]] == [0, 1] and len(sent) == MAX_WAITING + 2


def _interleaving_engine(path: str, req: dict) -> H.Script:
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"tool_calls": calls}) for calls in INTERLEAVED]
    events.append(chunk({}, "tool_calls"))
    return H.stream(*H.sse(*[json.dumps(e).encode() for e in events]))


async def test_the_gateway_streams_the_interleaved_calls_whole_to_a_redacting_tenant(tmp_path) -> None:
    async for g in grid(tmp_path, _interleaving_engine, redacting=True):
        spec = g.gw.spec  # the engine's own tool calls, as they came
        g.gw.spec = spec.model_copy(update={"models": {
            name: m.model_copy(update={"tool_calls": "native"}) for name, m in spec.models.items()}})
        r = await g.post("chat", True, tools=[{"type": "function", "function": {"name": "get_time"}},
                                              {"type": "function", "function": {"name": "lookup"}}])
        assert r.status_code == 200, r.text
        data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]" and b"123-45" not in r.content, r.text
        events = [orjson.loads(d) for d in data[:-1]]
        assert not [e for e in events if "error" in e], r.text
        assert _sdk_calls([e for e in events if e.get("choices")]) == WANT
