"""What the tool loop runs when the engine does not do as it was asked (helper 132, 5 Dec 2026)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from aigrid.agents import Finished, Step, TextDelta, builtin_tools, run_tool_loop
from aigrid.agents.loop import _apply_event
from aigrid.agents.steps import Turn
from aigrid.engines.protocol import UpstreamResponse
from aigrid.errors import EngineStreamBroken, EngineUnavailable
from tests.agents.copied_text import Copied
from tests.agents.scripted_engine import ScriptedEngine, answer, call

REGISTRY = builtin_tools()
CALC = {"type": "function", "function": {"name": "calculator"}}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
HISTORY = [{"role": "user", "content": "q"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": "1"}]


@pytest.mark.parametrize("mode", ["constrained", "native"])
async def test_no_tool_runs_under_tool_choice_none_even_if_the_engine_asks(mode: str) -> None:
    # constrained, the turn is the answer-only grammar (there are tool turns in the history); an engine that
    # ignores it and writes a call as the history shows them, or a native engine that calls anyway, had the tool run
    asks = (call("calculator", expression="6*7") if mode == "constrained"
            else {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]})
    engine = ScriptedEngine([asks, answer("42")])
    body: dict[str, Any] = {"model": "m", "messages": HISTORY, "tools": [CALC, WEATHER], "tool_choice": "none",
                            "aigrid_tool_mode": mode}
    evs = [ev async for ev in run_tool_loop(engine, body, REGISTRY)]
    assert not [e for e in evs if isinstance(e, Step)]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "tool_choice_none" and fin.finish_reason == "length"
    assert fin.content == "" and fin.tool_calls == () and fin.model_calls == 1
    assert "tools" not in engine.received[0]


def test_a_turn_a_character_an_event_is_not_copied_whole_at_every_event() -> None:
    """(7 Dec 2026, thirty-sixth session, ATK5) A model turn's content and each native call's arguments were added to
    a string event by event, a copy of all before it each time: an engine sending 600,000 events of one character
    (28 MB over 127.0.0.1, within a turn's byte bound) cost 28 s of the gateway's CPU, quadratic in the events. Now
    the fragments are kept and joined once (the turn's whole answer: test_a_long_answer_in_small_pieces_is_whole)."""
    n = 20_000
    copied = Copied()
    turn, native = Turn(), {}  # type: ignore[var-annotated]
    for _ in range(n):
        _apply_event({"choices": [{"delta": {"content": copied.fragment("a"), "tool_calls": [
            {"index": 0, "function": {"arguments": copied.fragment("b")}}]}}]}, turn, native)
    assert copied.chars <= n, copied.chars  # whole: n * n / 2 for each


async def test_a_long_answer_in_small_pieces_is_whole() -> None:
    text = "".join(chr(0x61 + i % 26) for i in range(30_000))
    engine = ScriptedEngine([answer(text)])
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "q"}], "tools": [CALC]}
    evs = [ev async for ev in run_tool_loop(engine, body, REGISTRY)]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.content == text
    streamed = "".join(ev.text for ev in evs if isinstance(ev, TextDelta))
    assert streamed == text
    native = ScriptedEngine([{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+" * 5_000 + "1"}}]},
                             answer("done")])
    evs = [ev async for ev in run_tool_loop(native, {**body, "aigrid_tool_mode": "native"}, REGISTRY)]
    steps = [ev for ev in evs if isinstance(ev, Step)]
    assert steps and steps[0].arguments == {"expression": "1+" * 5_000 + "1"}


class _RawEngine(ScriptedEngine):
    """Answers each call with the next raw body of `bodies` (SSE events, or a whole JSON answer) as written."""

    def __init__(self, bodies: list[bytes]) -> None:
        super().__init__([])
        self.bodies = list(bodies)

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.received.append(orjson.loads(body))
        raw = self.bodies.pop(0)
        kind = "text/event-stream" if raw.startswith(b"data:") else "application/json"
        yield UpstreamResponse(200, {"content-type": kind}, _one(raw))


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


CALC_TURN = (b'data: {"choices":[{"delta":{"content":"{\\"tool\\": \\"calculator\\", \\"arguments\\": '
             b'{\\"expression\\": \\"1+1\\"}}"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
NOT_CHUNKS = [b'{"choices": ["x"]}', b'{"choices": {"a": 1}}', b'{"choices": [{"delta": "x"}]}',
              b'{"choices": [{"delta": {"tool_calls": "abc"}}]}',
              b'{"choices": [{"delta": {"tool_calls": [{"index": "z", "function": {"arguments": "{}"}}]}}]}',
              b'{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": 5}}]}}]}',
              b'{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]}']
NOT_ANSWERS = [b'{"choices": [{"message": {"content": ["x"]}}]}', b'{"choices": "x"}',
               b'{"choices": [{"message": {"tool_calls": [{"function": {"name": 5}}]}}]}']


@pytest.mark.parametrize("garbage", [b"data: " + c + b"\n\ndata: [DONE]\n\n" for c in NOT_CHUNKS] + NOT_ANSWERS)
async def test_an_engine_answer_not_of_a_chunks_shape_is_the_engines_failure_not_a_crash(garbage: bytes) -> None:
    """(7 Dec 2026, thirty-sixth session, ATK5) A part of an engine's event not of its shape raised AttributeError or
    TypeError out of the loop. Live on 127.0.0.1 (a scratch engine answering `{"choices": ["x"]}` to the loop's
    second turn, after a calculator step): streamed, uvicorn's "Exception in ASGI application" and a stream cut with
    no error event; whole, "unexpected" to the proxy, which tries the next candidate from the loop's start (its tools
    run again). Now it is the engine's failure: EngineUnavailable on a first turn (the next candidate may answer),
    EngineStreamBroken on a later one (no rerun)."""
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "q"}], "tools": [CALC]}
    with pytest.raises(EngineUnavailable, match="not a chat completion"):
        [ev async for ev in run_tool_loop(_RawEngine([garbage]), body, REGISTRY)]
    with pytest.raises(EngineStreamBroken, match="not a chat completion"):
        [ev async for ev in run_tool_loop(_RawEngine([CALC_TURN, garbage]), body, REGISTRY)]


def test_a_replayed_calls_wide_shallow_arguments_are_not_walked_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replayed call's arguments with many brackets but little depth (`[[0], [0], ...]`: 40,000 arrays two levels
    deep) are judged by orjson's write (json_depth.too_deep_raw, C speed), not by a walk of every value on the event
    loop (LOOP, thirty-sixth session: the walk was part of the ~1 s such arguments held the loop); arguments too
    deep are still refused, naming where."""
    import aigrid.json_depth as json_depth
    from aigrid.agents import loop
    from aigrid.errors import InvalidRequest

    walked: list[int] = []
    real = json_depth.too_deep

    def counted(value: Any, limit: int = json_depth.MAX_DEPTH) -> json_depth.Path | None:
        walked.append(1)
        return real(value, limit)

    monkeypatch.setattr(json_depth, "too_deep", counted)
    monkeypatch.setattr(loop, "too_deep", counted, raising=False)  # where the loop imported it by name (before)
    where = ("messages", 1, "tool_calls", 0, "function", "arguments")  # the field's parts (FIX10; a string before)
    loop._shallow_arguments(orjson.dumps([[0]] * 40_000).decode(), where)
    assert walked == []
    deep = "[" * 300 + "]" * 300
    with pytest.raises(InvalidRequest) as info:
        loop._shallow_arguments(deep, where)
    assert info.value.param == "messages[1].tool_calls[0].function.arguments" and info.value.field == where
    assert info.value.message.startswith("messages[1].tool_calls[0].function.arguments at 0.0.0.0.0.0: nested deeper")
    assert walked == [1]
