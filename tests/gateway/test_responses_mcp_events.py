"""A server-side tool run streamed at the Responses door as OpenAI streams a remote MCP call: the mcp_call item added
in progress, response.mcp_call.in_progress, response.mcp_call_arguments.delta and .done, response.mcp_call.completed
(or .failed for a run that failed), then the item done, each naming its item and output_index, every event's
sequence_number one more than the last. Until the thirty-sixth session the item was added and done at once with no
mcp_call event. The openai SDK's stream helper (`client.responses.stream`) is the client: its final response is the
non-streamed one."""

from __future__ import annotations

from typing import Any

import openai
import orjson

from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway import scripted_client

scripted = scripted_client.scripted  # its fixture

TOOLS: Any = [{"type": "function", "name": "calculator"}]
MCP_EVENTS = ["response.output_item.added", "response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
              "response.mcp_call_arguments.done"]


def _script(engine: ScriptedEngine) -> None:
    engine.replies += [call("calculator", expression="1234 * 5678"), call("calculator", expression="1 +"),
                       answer("7006652")]


_LEFT_OUT = ("id", "call_id", "parsed", "parsed_arguments")
"""Each answer's own ids, and the fields the SDK's stream helper adds to what it accumulates (its Parsed* types)."""


def _shown(value: Any) -> Any:
    """Output items as plain data, without _LEFT_OUT."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items() if k not in _LEFT_OUT}
    return [_shown(v) for v in value] if isinstance(value, list) else value


async def test_a_server_side_tool_run_streams_openais_mcp_call_events_and_the_sdk_accumulates_them(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    _script(engine)
    async with oai.responses.stream(model="smollm2-135m", input="1234*5678?", tools=TOOLS) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    runs = [item for item in final.output if item.type == "mcp_call"]
    assert [(r.status, r.output) for r in runs] == [("completed", "7006652"), ("failed", None)], runs
    for run, ended in zip(runs, ("response.mcp_call.completed", "response.mcp_call.failed"), strict=True):
        index = final.output.index(run)
        mine = [e for e in events if getattr(e, "output_index", None) == index]
        assert [e.type for e in mine] == [*MCP_EVENTS, ended, "response.output_item.done"], [e.type for e in mine]
        assert all(e.item_id == run.id for e in mine if hasattr(e, "item_id"))
        added, delta, done, item_done = mine[0], mine[2], mine[3], mine[-1]
        assert added.item.status == "in_progress" and added.item.output is None  # type: ignore[union-attr]
        assert delta.delta == done.arguments == run.arguments  # type: ignore[union-attr]
        assert item_done.item == run  # type: ignore[union-attr]
    assert final.output_text == "7006652"
    _script(engine)
    whole = await oai.responses.create(model="smollm2-135m", input="1234*5678?", tools=TOOLS)
    assert _shown(final.output) == _shown(whole.output)


async def test_the_sdk_stream_helper_over_a_client_tool_call_is_the_whole_answer(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """The client's own function call, streamed and accumulated by the SDK, equals the non-streamed answer."""
    oai, engine = scripted
    weather: Any = [{"type": "function", "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    engine.replies += [call("get_weather", city="Paris"), call("get_weather", city="Paris")]
    async with oai.responses.stream(model="smollm2-135m", input="Weather in Paris?", tools=weather,
                                    tool_choice="required") as stream:
        final = await stream.get_final_response()
    whole = await oai.responses.create(model="smollm2-135m", input="Weather in Paris?", tools=weather,
                                       tool_choice="required")
    shown = _shown(final.output)
    assert shown == _shown(whole.output) and [i["type"] for i in shown] == ["function_call"], shown
    assert orjson.loads(shown[0]["arguments"]) == {"city": "Paris"} and shown[0]["status"] == "completed"
