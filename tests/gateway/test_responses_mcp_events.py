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
from tests.parity.sdk_strict import needs_mcp_error_objects

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


async def _scripted_stream(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> tuple[list[Any], Any]:
    """_script's two grid tool runs (the second fails: its error an object, needs_mcp_error_objects) streamed through
    the SDK's helper: its events and the response it accumulates."""
    needs_mcp_error_objects()
    oai, engine = scripted
    _script(engine)
    async with oai.responses.stream(model="smollm2-135m", input="1234*5678?", tools=TOOLS) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    return events, final


async def test_a_server_side_tool_run_streams_openais_mcp_call_events_and_the_sdk_accumulates_them(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    events, final = await _scripted_stream(scripted)
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


async def test_the_grid_tools_are_listed_in_an_mcp_list_tools_item_before_the_first_run(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """OpenAI's Response lists an MCP server's tools in an `mcp_list_tools` item before its first `mcp_call`
    (openai SDK: McpListTools), streamed as output_item.added without its tools, response.mcp_list_tools.in_progress
    and .completed, then output_item.done with them. The grid's tool runs (server_label "aigrid") get one too, listing
    the grid's tools the request offered, and every later item's output_index is one more. The SDK's stream helper
    accumulates the same output as the non-streamed answer. Until the thirty-seventh session there was none."""
    oai, engine = scripted
    events, final = await _scripted_stream(scripted)
    assert [i.type for i in final.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"], final.output
    listed = final.output[0]
    assert listed.server_label == "aigrid" == final.output[1].server_label  # type: ignore[union-attr]
    assert [t.name for t in listed.tools] == ["calculator"]  # type: ignore[union-attr]
    assert listed.tools[0].description and listed.tools[0].input_schema["type"] == "object"  # type: ignore[union-attr,index]
    mine = [e for e in events if getattr(e, "output_index", None) == 0]
    assert [e.type for e in mine] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                                      "response.mcp_list_tools.completed", "response.output_item.done"], mine
    assert mine[0].item.tools == [] and mine[-1].item == listed  # type: ignore[union-attr]
    assert all(e.item_id == listed.id for e in mine[1:3])  # type: ignore[union-attr]
    assert [getattr(e, "output_index", None) for e in events if e.type == "response.mcp_call.in_progress"] == [1, 2]
    _script(engine)
    whole = await oai.responses.create(model="smollm2-135m", input="1234*5678?", tools=TOOLS)
    assert _shown(final.output) == _shown(whole.output)
    # the output sent back as input (as agents replay it) is read: the list adds nothing the model reads
    engine.replies.append(answer("Done."))
    again = await oai.responses.create(model="smollm2-135m", tools=TOOLS, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "1234*5678?"}, *[i.model_dump(exclude_none=True) for i in whole.output],
        {"role": "user", "content": "Thanks."}])
    assert again.output_text == "Done."
    assert "mcp_list_tools" not in orjson.dumps(engine.received[-1]["messages"]).decode()


async def test_the_grid_tools_are_listed_when_first_given_whether_or_not_one_runs(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """OpenAI's Response lists an MCP server's tools when the tool is first given, before the model's output, whether
    or not the model then calls one ("When you specify a remote MCP server in the tools parameter, the API will
    attempt to get a list of tools from the server", its remote MCP guide). Until the thirty-eighth session no tool
    run meant no mcp_list_tools item. Streamed or not; a request offering only its own function tools lists none."""
    oai, engine = scripted
    engine.replies += [answer("Hello."), answer("Hello."), answer("Hello.")]
    whole = await oai.responses.create(model="smollm2-135m", input="Hi", tools=TOOLS)
    async with oai.responses.stream(model="smollm2-135m", input="Hi", tools=TOOLS) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    assert [i.type for i in whole.output] == [i.type for i in final.output] == ["mcp_list_tools", "message"]
    assert [t.name for t in whole.output[0].tools] == ["calculator"]  # type: ignore[union-attr]
    assert [e.type for e in events][2:6] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                                             "response.mcp_list_tools.completed", "response.output_item.done"]
    own: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    mine = await oai.responses.create(model="smollm2-135m", input="Hi", tools=own)
    assert [i.type for i in mine.output] == ["message"]


async def test_a_conversation_that_holds_the_list_gets_none_again(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """OpenAI lists a server's tools no more in a later response whose context holds its mcp_list_tools item ("As long
    as the mcp_list_tools item is present in the context of an API request, the API will not fetch a list of tools
    from the MCP server again", its remote MCP guide): a previous_response_id chain (the turn before, or one further
    back), a conversation's items, or the output replayed as input. A tool not listed yet (regex here) lists the
    offered tools again. Until the thirty-eighth session every response that ran a grid tool listed them again. The
    stored list, replayed into the engine's history, is dropped there: no list, no duplicate message."""
    oai, engine = scripted
    engine.replies += [call("calculator", expression="2 + 2"), answer("4")]
    first = await oai.responses.create(model="smollm2-135m", input="2+2?", tools=TOOLS)
    assert [i.type for i in first.output] == ["mcp_list_tools", "mcp_call", "message"]
    engine.replies += [call("calculator", expression="3 * 3"), answer("9")]
    async with oai.responses.stream(model="smollm2-135m", input="3*3?", tools=TOOLS,
                                    previous_response_id=first.id) as stream:
        events = [e async for e in stream]
        second = await stream.get_final_response()
    assert [i.type for i in second.output] == ["mcp_call", "message"]
    assert not [e for e in events if e.type.startswith("response.mcp_list_tools")]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = [e.output_index for e in events if e.type == "response.output_item.added"]  # type: ignore[union-attr]
    assert added == [0, 1], added
    history = engine.received[-1]["messages"]
    assert "mcp_list_tools" not in orjson.dumps(history).decode()
    said = [m.get("content") for m in history if m.get("role") == "user"]
    assert said.count("2+2?") == 1 and said.count("3*3?") == 1, history
    engine.replies += [answer("Fine."), answer("Fine.")]
    third = await oai.responses.create(model="smollm2-135m", input="And?", tools=TOOLS, previous_response_id=second.id)
    assert [i.type for i in third.output] == ["message"]  # the list two turns back is still in the context
    both: Any = [*TOOLS, {"type": "function", "name": "regex"}]
    more = await oai.responses.create(model="smollm2-135m", input="And?", tools=both, previous_response_id=third.id)
    assert [i.type for i in more.output] == ["mcp_list_tools", "message"]
    assert [t.name for t in more.output[0].tools] == ["calculator", "regex"]  # type: ignore[union-attr]

    conv = await oai.conversations.create()
    engine.replies += [answer("Hi."), answer("Hi again.")]
    opened = await oai.responses.create(model="smollm2-135m", input="Hi", tools=TOOLS, conversation=conv.id)
    again = await oai.responses.create(model="smollm2-135m", input="Hi", tools=TOOLS, conversation=conv.id)
    assert [i.type for i in opened.output] == ["mcp_list_tools", "message"]
    assert [i.type for i in again.output] == ["message"]

    engine.replies += [answer("Replayed.")]  # a client that keeps the context itself, sending the output back
    replayed: Any = [{"role": "user", "content": "Hi"}, *[i.model_dump(exclude_none=True) for i in opened.output],
                     {"role": "user", "content": "More?"}]
    kept = await oai.responses.create(model="smollm2-135m", input=replayed, tools=TOOLS, store=False)
    assert [i.type for i in kept.output] == ["message"]


async def test_aigrid_max_steps_bounds_the_tool_runs_at_the_responses_door(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """The loop's `aigrid_max_steps` (docs/agents.md) is read at the Responses door as on chat: past it the answer
    is `incomplete`, `aigrid_stop` `step_limit` (docs/responses-api.md), and a value out of range is the 400 naming
    it. Until review RV2 of the thirty-seventh session the door left it out of the chat body: every run ran."""
    oai, engine = scripted
    engine.replies += [call("calculator", expression="1 + 1"), call("calculator", expression="2 + 2"), answer("4")]
    capped = await oai.responses.create(model="smollm2-135m", input="q", tools=TOOLS,
                                        extra_body={"aigrid_max_steps": 1})
    assert [i.type for i in capped.output if i.type == "mcp_call"] == ["mcp_call"], capped.output
    assert capped.status == "incomplete" and capped.incomplete_details is not None
    assert capped.incomplete_details.model_dump().get("aigrid_stop") == "step_limit", capped.incomplete_details
    engine.replies.clear()
    try:
        await oai.responses.create(model="smollm2-135m", input="q", tools=TOOLS, extra_body={"aigrid_max_steps": 0})
    except openai.BadRequestError as e:
        assert e.body["param"] == "aigrid_max_steps", e.body  # type: ignore[index]
    else:
        raise AssertionError("aigrid_max_steps 0 was accepted")
    assert len(engine.received) == 2  # the two turns of the capped answer; the refused request reached no engine
