"""What the tool loop runs when the engine does not do as it was asked (helper 132, 5 Dec 2026)."""

from __future__ import annotations

from typing import Any

import pytest

from aigrid.agents import Finished, Step, builtin_tools, run_tool_loop
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
