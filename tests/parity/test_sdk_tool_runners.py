"""The official SDKs' tool runners through the gateway: anthropic's `beta.messages.tool_runner` (whole and
streamed) and openai's Responses runner (`openai.lib.responses_tool_runner`, whole and streamed, stored and
`store: false`). Each runs the client's own tool with the arguments the model gave, sends its result back and
ends on the model's answer; the engine (SCRIPTED, calling tools natively) is read back for the result turn."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pydantic
import pytest

from tests.agents.scripted_engine import ScriptedEngine
from tests.parity.sdk_strict import needs

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALL = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
ANSWER = {"content": "Sunny."}


class City(pydantic.BaseModel):
    city: str


Clients = tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic, ScriptedEngine]


def _result_turn(engine: ScriptedEngine) -> list[dict[str, Any]]:
    """The last chat call's messages after the user's: the model's call and the tool's result."""
    sent: list[dict[str, Any]] = engine.received[-1]["messages"]
    assert sent[0] == ASK[0]
    return [{"role": m["role"], "call": [c["function"] for c in m.get("tool_calls") or []],
             "content": m["content"]} for m in sent[1:]]


RESULT = [{"role": "assistant", "call": [{"name": "get_weather", "arguments": '{"city":"Paris"}'}], "content": None},
          {"role": "tool", "call": [], "content": "sunny in Paris"}]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_anthropic_tool_runner_runs_the_tool_and_answers(native: Clients, stream: bool) -> None:
    _, claude, engine = native
    runner_of = needs(claude, "beta", "messages", "tool_runner")
    ran: list[str] = []

    @anthropic.beta_async_tool
    async def get_weather(city: str) -> str:
        """Weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    engine.replies += [CALL, ANSWER]
    runner = runner_of(model=MODEL, max_tokens=64, messages=ASK, tools=[get_weather], stream=stream)
    if stream:
        turns = [[e.type async for e in s] async for s in runner]
        assert [t.count("input_json") > 0 for t in turns] == [True, False] and "text" in turns[1]
    else:
        assert [(m.stop_reason, [b.type for b in m.content]) async for m in runner] == [
            ("tool_use", ["tool_use"]), ("end_turn", ["text"])]
    final = await runner.until_done()
    assert ran == ["Paris"] and final.content[0].text == "Sunny."
    assert _result_turn(engine) == RESULT


@pytest.mark.parametrize(("stream", "store"), [(False, True), (True, True), (False, False)])
async def test_the_openai_responses_tool_runner_runs_the_tool_and_answers(native: Clients, stream: bool,
                                                                         store: bool) -> None:
    oai, _, engine = native
    lib = pytest.importorskip("openai.lib.responses_tool_runner")
    tools = pytest.importorskip("openai.lib._tools")
    ran: list[City] = []

    async def get_weather(args: City) -> str:
        ran.append(args)
        return f"sunny in {args.city}"

    fn = lib.AsyncRegisteredFunction.from_tool(tools.pydantic_responses_function_tool(City, name="get_weather"),
                                               execute=get_weather)
    events: list[str] = []

    async def on_event(e: Any) -> None:
        events.append(e.type)

    engine.replies += [CALL, ANSWER]
    done = await lib.AsyncResponsesToolRunner(functions=[fn]).run(
        oai, {"model": MODEL, "input": ASK, "store": store}, stream=stream, on_event=on_event if stream else None)
    assert ran == [City(city="Paris")] and done.output_text == "Sunny." and done.status == "completed"
    assert _result_turn(engine) == RESULT
    if stream:
        assert events.count("response.completed") == 2 and "response.function_call_arguments.done" in events
