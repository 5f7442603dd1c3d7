"""The Responses API's `max_tool_calls`, OpenAI's "maximum number of total calls to built-in tools that can be processed
in a response ... Any further attempts to call a tool by the model will be ignored": here the grid's server-side tools
the tool loop runs. At the limit the model is offered no tool and answers with what it has, as at the loop's step limit
(agents/loop.py). Until the thirty-eighth session the field was accepted and ignored as any unlisted one. The openai
SDK is the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway import scripted_client
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import openai_client

scripted = scripted_client.scripted  # its fixture

TOOLS: Any = [{"type": "function", "name": "calculator"}]


def _offers_a_tool(payload: dict[str, Any]) -> bool:
    """Does a constrained model turn's grammar let the model call a tool (not only answer)?"""
    return '"tool"' in str(payload.get("response_format")).replace("'", '"')


async def test_max_tool_calls_stops_the_grid_tools_at_the_limit_and_the_model_answers(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    engine.replies += [call("calculator", expression="2 + 2"), answer("4")]
    one = await oai.responses.create(model="smollm2-135m", input="2+2, then 3+3?", tools=TOOLS, max_tool_calls=1)
    assert [i.type for i in one.output] == ["mcp_list_tools", "mcp_call", "message"], one.output
    assert one.status == "completed" and one.output_text == "4" and one.max_tool_calls == 1
    assert [_offers_a_tool(p) for p in engine.received] == [True, False]  # the second turn may only answer
    engine.received.clear()
    engine.replies += [answer("I may not compute.")]
    none = await oai.responses.create(model="smollm2-135m", input="2+2?", tools=TOOLS, max_tool_calls=0)
    assert [i.type for i in none.output] == ["mcp_list_tools", "message"] and none.max_tool_calls == 0
    assert [_offers_a_tool(p) for p in engine.received] == [False]
    engine.received.clear()
    engine.replies += [call("calculator", expression="2 + 2"), answer("4")]  # the control: no limit asked
    free = await oai.responses.create(model="smollm2-135m", input="2+2?", tools=TOOLS)
    assert [_offers_a_tool(p) for p in engine.received][0] and free.max_tool_calls is None


async def test_a_call_past_the_limit_is_not_run(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """A model that asks for a tool once no more may run (an engine that ignores the answer-only grammar) has its call
    ignored: nothing runs, and the answer ends there, incomplete (aigrid_stop step_limit), as at the step limit."""
    oai, engine = scripted
    engine.replies += [call("calculator", expression="2 + 2"), call("calculator", expression="3 + 3")]
    r = await oai.responses.create(model="smollm2-135m", input="2+2?", tools=TOOLS, max_tool_calls=1)
    assert [i.type for i in r.output] == ["mcp_list_tools", "mcp_call"], r.output
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.model_dump().get("aigrid_stop") == "step_limit"


@pytest.mark.parametrize("bad", [-1, "2", True, 1.5])
async def test_a_bad_max_tool_calls_is_a_400_naming_it(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine],
                                                       bad: Any) -> None:
    oai, engine = scripted
    with pytest.raises(openai.BadRequestError) as info:
        await oai.responses.create(model="smollm2-135m", input="2+2?", tools=TOOLS, extra_body={"max_tool_calls": bad})
    assert info.value.body["param"] == "max_tool_calls", info.value.body  # type: ignore[index]
    assert engine.received == []


async def test_max_tool_calls_is_not_sent_to_an_engine_where_no_grid_tool_is_offered(tmp_path: Path) -> None:
    """It counts the grid's tools only: a request offering none, which a native model's engine answers as written (no
    tool loop), is sent to it without the loop's extension, which an engine that refuses unknown fields would
    refuse."""
    engine = ScriptedEngine([{"content": "Hi."}])
    oai = openai_client(build_app(await scripted_gateway(tmp_path, engine, "native")))
    own: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    r = await oai.responses.create(model="smollm2-135m", input="Hi", tools=own, max_tool_calls=2)
    assert r.max_tool_calls == 2
    assert not any("max_tool_calls" in k for p in engine.received for k in p), engine.received
    await oai.close()


@pytest.mark.parametrize("tool_calls", ["native", "constrained"])
async def test_the_loop_extensions_are_not_sent_to_an_engine_where_no_loop_runs(tmp_path: Path, tool_calls: str) -> None:
    """The tool loop's extensions (`aigrid_max_steps`, `aigrid_tool_mode`) are the gateway's, "removed before the body
    reaches the engine" (docs/agents.md): where no tool loop runs (no tool offered; on a native model, the client's
    own tools alone) they reached the engine as written, which an engine that refuses unknown fields would refuse
    (until review RV1 of the thirty-eighth session). Where the loop runs they still hold: the control, a constrained
    model's loop of the client's tool in the native mode the request asks for (the turn sent the tool's definition)."""
    engine = ScriptedEngine([{"content": "Hi."}] * 3)
    oai = openai_client(build_app(await scripted_gateway(tmp_path, engine, tool_calls)))
    own: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    asked = {"aigrid_max_steps": 3, "aigrid_tool_mode": "native"}
    await oai.responses.create(model="smollm2-135m", input="Hi", extra_body=asked)
    await oai.responses.create(model="smollm2-135m", input="Hi", tools=own, extra_body=asked)
    await oai.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}],
                                      extra_body=asked)
    assert len(engine.received) == 3
    assert not [k for p in engine.received for k in p if k.startswith("aigrid_")], engine.received
    assert [p.get("tools") is not None for p in engine.received] == [False, True, False]  # the native turn's tools
    assert "response_format" not in engine.received[1]  # a constrained turn's grammar: the asked mode was not held
    await oai.close()


async def test_the_clients_own_tools_are_offered_past_the_limit(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """OpenAI's `max_tool_calls` counts "calls to built-in tools" (the grid's tools here), not the client's function
    tools, whose calls come back to the client: past the limit the model may still call one (until review RV1 of the
    thirty-eighth session the limit withheld every tool, and the call ended the Response incomplete, step_limit)."""
    oai, engine = scripted
    weather: Any = {"type": "function", "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    engine.replies += [call("get_weather", city="Paris")]
    r = await oai.responses.create(model="smollm2-135m", input="Weather?", tools=[*TOOLS, weather], max_tool_calls=0)
    assert [i.type for i in r.output] == ["mcp_list_tools", "function_call"], r.output
    assert r.status == "completed"
    offered = str(engine.received[0].get("response_format"))
    assert "get_weather" in offered and "calculator" not in offered, offered
    engine.received.clear()
    engine.replies += [call("calculator", expression="2 + 2"), call("get_weather", city="Paris")]
    r = await oai.responses.create(model="smollm2-135m", input="2+2, then weather?", tools=[*TOOLS, weather],
                                   max_tool_calls=1)
    assert [i.type for i in r.output] == ["mcp_list_tools", "mcp_call", "function_call"], r.output
    offered = str(engine.received[1].get("response_format"))
    assert "get_weather" in offered and "calculator" not in offered, offered
