"""A client's JSON `response_format` beside tools (what the OpenAI Agents SDK sends for an agent with an output type
and tools): the tool loop holds the final answer to it. Constrained mode: the grammar's answer branch is the
client's schema; native mode: a turn that offers no tools carries the format, a turn that offers tools does not
(vLLM would decode the whole turn under it: no tool call) and its prose answer is asked for again under it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aigrid.agents import Finished, Step, TextDelta, builtin_tools, run_tool_loop
from tests.agents.scripted_engine import ScriptedEngine, call

REGISTRY = builtin_tools()
CALC = {"type": "function", "function": {"name": "calculator"}}
SCHEMA = {"type": "object", "properties": {"value": {"type": "integer"}, "unit": {"type": "string", "enum": ["kg"]}},
          "required": ["value", "unit"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weight", "strict": True, "schema": SCHEMA}}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "6 x 7 kg?"}], "tools": [CALC], **extra}


def structured_answer(value: Any) -> dict[str, Any]:
    return {"content": orjson.dumps({"answer": value}).decode()}


async def events(engine: ScriptedEngine, body: dict[str, Any]) -> list[Any]:
    return [ev async for ev in run_tool_loop(engine, body, REGISTRY)]


def _answer_branch(sent: dict[str, Any]) -> Any:
    schema = sent["response_format"]["json_schema"]["schema"]
    options = schema.get("anyOf", [schema])
    return next(o["properties"]["answer"] for o in options if "answer" in o["properties"])


async def test_constrained_grammar_answers_in_the_clients_schema() -> None:
    engine = ScriptedEngine([call("calculator", expression="6*7"), structured_answer({"value": 42, "unit": "kg"})])
    evs = await events(engine, chat(response_format=JSON_SCHEMA))
    assert [_answer_branch(s) for s in engine.received] == [SCHEMA, SCHEMA]  # each turn's answer is the schema
    assert [s.result for s in evs if isinstance(s, Step)] == ["42"]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "answer" and fin.finish_reason == "stop"
    assert orjson.loads(fin.content) == {"value": 42, "unit": "kg"}  # the JSON of the schema, not {"answer": ...}
    assert "A JSON OBJECT in the requested format" in engine.received[0]["messages"][0]["content"]


async def test_constrained_json_object_answers_any_object_and_text_stays_text() -> None:
    engine = ScriptedEngine([structured_answer({"any": ["thing"]})])
    fin = (await events(engine, chat(response_format={"type": "json_object"})))[-1]
    assert _answer_branch(engine.received[0]) == {"type": "object"}
    assert isinstance(fin, Finished) and orjson.loads(fin.content) == {"any": ["thing"]}
    engine = ScriptedEngine([structured_answer("plain")])
    fin = (await events(engine, chat(response_format={"type": "text"})))[-1]
    assert _answer_branch(engine.received[0])["type"] == "string" and fin.content == "plain"


async def test_native_turns_without_tools_carry_the_format_and_a_prose_answer_is_asked_again() -> None:
    engine = ScriptedEngine([{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                             {"content": "It is 42 kg."}, {"content": '{"value": 42, "unit": "kg"}'}])
    evs = await events(engine, chat(response_format=JSON_SCHEMA, aigrid_tool_mode="native"))
    first, second, third = engine.received
    assert "response_format" not in first and "response_format" not in second  # turns offering tools
    assert third["response_format"] == JSON_SCHEMA and "tools" not in third
    assert third["messages"] == second["messages"]  # the prose answer is not in the conversation
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "answer" and fin.model_calls == 3
    assert orjson.loads(fin.content) == {"value": 42, "unit": "kg"}
    assert "It is 42" not in "".join(e.text for e in evs if isinstance(e, TextDelta))  # the prose never streamed


async def test_the_step_limits_answer_only_turn_answers_in_the_schema() -> None:
    engine = ScriptedEngine([call("calculator", expression="6*7"), structured_answer({"value": 42, "unit": "kg"})])
    fin = (await events(engine, chat(response_format=JSON_SCHEMA, aigrid_max_steps=1)))[-1]
    assert engine.received[1]["response_format"]["json_schema"]["schema"] == {
        "type": "object", "properties": {"answer": SCHEMA}, "required": ["answer"], "additionalProperties": False}
    assert isinstance(fin, Finished) and fin.stop == "step_limit" and orjson.loads(fin.content)["value"] == 42


@pytest.mark.parametrize("mode", ["constrained", "native"])
async def test_tool_choice_none_sends_the_format(mode: str) -> None:
    """No tool offered and no tool turn in the history: an ordinary chat turn, under the client's format."""
    engine = ScriptedEngine([{"content": '{"value": 1, "unit": "kg"}'}])
    fin = (await events(engine, chat(response_format=JSON_SCHEMA, tool_choice="none", aigrid_tool_mode=mode)))[-1]
    assert engine.received[0]["response_format"] == JSON_SCHEMA and "tools" not in engine.received[0]
    assert isinstance(fin, Finished) and fin.content == '{"value": 1, "unit": "kg"}' and fin.model_calls == 1
