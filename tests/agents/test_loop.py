"""The tool loop's mechanics on a scripted engine: constrained and native turns, the step record,
client tools passed back, the step limit, streaming, failures, and the Engine adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from aigrid.agents import (
    Finished,
    LoopConfig,
    Step,
    TextDelta,
    ToolContext,
    ToolLoopEngine,
    builtin_tools,
    run_tool_loop,
    validate_tool_request,
    wants_server_tools,
)
from aigrid.agents.graph import graph_from_edges
from aigrid.agents.loop import first_turn, turn_counts
from aigrid.agents.steps import MANY_CALLS
from aigrid.errors import EngineStreamBroken, EngineUnavailable, InvalidRequest
from tests.agents.scripted_engine import ScriptedEngine, answer, call

REGISTRY = builtin_tools(graphs={"rail": graph_from_edges([["Lyon", "Paris", 465], ["Paris", "Frankfurt", 570]])})
CALC = {"type": "function", "function": {"name": "calculator"}}
PATH = {"type": "function", "function": {"name": "shortest_path"}}
WEATHER = {"type": "function", "function": {"name": "weather", "description": "the client's own tool",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def chat(*tools: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "q"}], "tools": list(tools), **extra}


async def events(engine: ScriptedEngine, body: dict[str, Any], **kw: Any) -> list[Any]:
    return [ev async for ev in run_tool_loop(engine, body, REGISTRY, **kw)]


def test_wants_server_tools() -> None:
    assert wants_server_tools(chat(CALC), REGISTRY)
    assert wants_server_tools(chat(WEATHER, PATH), REGISTRY)
    assert not wants_server_tools(chat(WEATHER), REGISTRY)
    assert not wants_server_tools({"model": "m", "messages": []}, REGISTRY)
    assert not wants_server_tools({"tools": "calculator"}, REGISTRY)


async def test_constrained_two_tools_then_answer() -> None:
    engine = ScriptedEngine([call("calculator", expression="1234 * 5678"),
                             call("shortest_path", source="Lyon", target="Frankfurt"),
                             answer('7006652; Lyon -> Paris -> Frankfurt "ok"')])
    evs = await events(engine, chat(CALC, PATH))
    steps = [e for e in evs if isinstance(e, Step)]
    assert [(s.tool, s.result, s.ok) for s in steps] == [
        ("calculator", "7006652", True), ("shortest_path", "Lyon -> Paris -> Frankfurt (total 1035)", True)]
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "answer" and fin.model_calls == 3
    assert fin.content == '7006652; Lyon -> Paris -> Frankfurt "ok"'
    assert "".join(e.text for e in evs if isinstance(e, TextDelta)) == fin.content  # streamed from the JSON
    assert fin.usage == {"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45}
    first, second, third = engine.received
    # constrained: no `tools` sent; a schema offering both tools; spent tools are not offered again
    assert "tools" not in first and first["stream"] is True
    offered = [o["properties"].get("tool", {}).get("const") for o in first["response_format"]["json_schema"]["schema"]["anyOf"]]
    assert offered == ["calculator", "shortest_path", None]
    assert second["response_format"]["json_schema"]["schema"]["anyOf"][0]["properties"]["tool"]["const"] == "shortest_path"
    assert "answer" in third["response_format"]["json_schema"]["schema"]["properties"]
    assert "calculator" in first["messages"][0]["content"] and first["messages"][0]["role"] == "system"
    assert '{"answer": TEXT}' in third["messages"][0]["content"]
    assert {"role": "user", "content": "calculator result: 7006652"} in third["messages"]


async def test_native_tool_calls_and_client_tools_are_returned() -> None:
    engine = ScriptedEngine([{"tool_calls": [{"name": "calculator", "arguments": {"expression": "2**10"}}]},
                             {"tool_calls": [{"name": "weather", "arguments": {"city": "Lyon"}}]}])
    evs = await events(engine, chat(CALC, WEATHER, aigrid_tool_mode="native"))
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "client_tool" and fin.finish_reason == "tool_calls"
    assert [s.result for s in fin.steps] == ["1024"]
    assert fin.tool_calls[0]["function"] == {"name": "weather", "arguments": '{"city":"Lyon"}'}
    first, second = engine.received
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator", "weather"]
    assert first["tools"][0]["function"]["parameters"] == dict(REGISTRY["calculator"].parameters)  # filled in
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_0", "content": "1024"}
    assert "aigrid_tool_mode" not in first


async def test_tool_errors_are_steps_and_the_step_limit_forces_an_answer() -> None:
    engine = ScriptedEngine([call("calculator", expression="9**9**9"), call("calculator", expression="1+1"),
                             answer("done")])
    evs = await events(engine, chat(CALC, aigrid_max_steps=2), config=LoopConfig(reuse_tools=True))
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "step_limit" and fin.content == "done"
    assert [(s.ok, s.result) for s in fin.steps] == [(False, "error: the result is larger than 10000 bits"),
                                                      (True, "2")]
    assert list(engine.received[2]["response_format"]["json_schema"]["schema"]["properties"]) == ["answer"]


async def test_tool_choice_required_forces_a_call_on_the_first_turn() -> None:
    engine = ScriptedEngine([call("calculator", expression="1"), answer("1")])
    await events(engine, chat(CALC, tool_choice="required"))
    schema = engine.received[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["tool"]["const"] == "calculator"  # no answer option


async def test_logprobs_are_refused_where_the_loop_runs_before_routing_where_it_surely_does() -> None:
    """The loop's answer carries no log-probabilities: `logprobs: true` is a 400 naming it, before routing when a
    server-side tool is offered (the loop runs on any model), at the loop's start otherwise (a client tool alone
    runs in the loop only on a constrained model), before any turn is sent."""
    with pytest.raises(InvalidRequest, match="logprobs are not served") as info:
        validate_tool_request(chat(CALC, WEATHER, logprobs=True), REGISTRY)
    assert info.value.param == "logprobs"
    validate_tool_request(chat(WEATHER, logprobs=True), REGISTRY)  # a native model serves these as they came
    validate_tool_request(chat(CALC, logprobs=False), REGISTRY)
    engine = ScriptedEngine([answer("4")])
    with pytest.raises(InvalidRequest, match="logprobs are not served"):
        await events(engine, chat(WEATHER, logprobs=True))
    assert engine.received == []
    assert isinstance((await events(engine, chat(CALC, top_logprobs=None)))[-1], Finished)


async def test_bad_extensions_and_engine_failures() -> None:
    with pytest.raises(InvalidRequest, match="aigrid_max_steps"):
        await events(ScriptedEngine([]), chat(CALC, aigrid_max_steps=100))
    with pytest.raises(InvalidRequest, match="aigrid_tool_mode"):
        await events(ScriptedEngine([]), chat(CALC, aigrid_tool_mode="magic"))
    down = ScriptedEngine([])
    down.down = True
    with pytest.raises(EngineUnavailable):
        await events(down, chat(CALC))
    later = ScriptedEngine([call("calculator", expression="1")])
    with pytest.raises(EngineStreamBroken):
        async for ev in run_tool_loop(later, chat(CALC), REGISTRY):
            if isinstance(ev, Step):
                later.down = True


async def test_engine_adapter_non_streaming() -> None:
    inner = ScriptedEngine([call("calculator", expression="6*7"), answer("42")])
    engine = ToolLoopEngine(inner, REGISTRY, context=ToolContext("fra", "acme"), wall_clock=lambda: 1000.0)
    async with engine.open("/v1/chat/completions", orjson.dumps(chat(CALC))) as up:
        assert up.status == 200
        doc = orjson.loads(b"".join([c async for c in up.body]))
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "42"}
    assert doc["created"] == 1000 and doc["object"] == "chat.completion"
    assert doc["aigrid_steps"][0]["tool"] == "calculator" and doc["aigrid_steps"][0]["result"] == "42"
    assert doc["aigrid_loop"]["steps"] == 1 and doc["aigrid_loop"]["model_calls"] == 2


async def test_engine_adapter_streaming_and_4xx_passthrough() -> None:
    inner = ScriptedEngine([call("calculator", expression="6*7"), answer("forty two")])
    engine = ToolLoopEngine(inner, REGISTRY)
    body = chat(CALC, stream=True, stream_options={"include_usage": True})
    async with engine.open("/v1/chat/completions", orjson.dumps(body)) as up:
        assert up.status == 200 and up.headers["content-type"] == "text/event-stream"
        raw = b"".join([c async for c in up.body])
    lines = raw.split(b"\n\n")
    assert lines[1].startswith(b": aigrid-step ") and orjson.loads(lines[1][14:])["result"] == "42"
    data = [orjson.loads(x[6:]) for x in lines if x.startswith(b"data: {")]
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
    assert text == "forty two"
    last = [d for d in data if d["choices"]][-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["aigrid_steps"][0]["tool"] == "calculator"
    assert data[-1]["usage"]["total_tokens"] == 30 and raw.endswith(b"data: [DONE]\n\n")

    refusing = ScriptedEngine([])
    refusing.status = 400
    async with ToolLoopEngine(refusing, REGISTRY).open("/v1/chat/completions", orjson.dumps(body)) as up:
        assert up.status == 400


async def test_no_tool_runs_past_the_limit_even_if_the_engine_asks() -> None:
    engine = ScriptedEngine([{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]}] * 5)
    evs = await events(engine, chat(CALC, aigrid_max_steps=2, aigrid_tool_mode="native"))
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "step_limit" and fin.finish_reason == "length"
    assert len(fin.steps) == 2 and fin.model_calls == 3 and fin.content == ""
    assert "tools" not in engine.received[2]  # the last turn offered no tool


@pytest.mark.parametrize("mode", ["native", "constrained"])
async def test_one_turn_asking_for_many_calls_runs_no_more_than_the_steps_left(mode: str) -> None:
    many = {"tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i}+1"}} for i in range(40)]}
    engine = ScriptedEngine([many, answer("done") if mode == "constrained" else {"content": "done"}])
    evs = await events(engine, chat(CALC, aigrid_max_steps=3, aigrid_tool_mode=mode), config=LoopConfig(reuse_tools=True))
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.stop == "step_limit" and fin.content == "done"
    assert [s.result for s in fin.steps] == ["1", "2", "3"]  # 40 asked for in one turn, 3 run (the limit)
    replayed = engine.received[1]["messages"]
    if mode == "native":  # the turn as the model reads it back holds the calls that ran, each answered
        assert [c["id"] for c in replayed[-4]["tool_calls"]] == ["call_0", "call_1", "call_2"]
        assert [m["role"] for m in replayed[-3:]] == ["tool"] * 3


@pytest.mark.parametrize("tools", [(WEATHER,), (CALC,)], ids=["client tool", "server tool"])
async def test_a_tool_call_cut_off_by_max_tokens_ends_the_loop(tools: tuple[dict[str, Any], ...]) -> None:
    """The next turn has the same max_tokens and is cut off again: the answer ends at once with finish "length",
    as OpenAI ends a reply cut by max_tokens (before, the loop retried to its step limit: 7 model calls and
    7x the client's max_tokens on make run for a request with one client tool and max_tokens 8)."""
    cut = {"content": '{"tool": "weath', "finish": "length"}
    engine = ScriptedEngine([cut] * 8)
    fin = (await events(engine, chat(*tools, max_tokens=8)))[-1]
    assert isinstance(fin, Finished) and (fin.stop, fin.finish_reason, fin.content) == ("max_tokens", "length", "")
    assert fin.model_calls == 1 and len(engine.received) == 1 and fin.steps == ()


async def test_a_turn_that_surely_overflows_the_context_ends_the_loop() -> None:
    """The first turn is the gateway's to check (400 before routing); a later one whose messages surely
    exceed the model's context ends the loop with what it has (finish "length") and is never sent."""
    engine = ScriptedEngine([call("calculator", expression="1234 * 5678"), answer("7006652")])
    evs = await events(engine, chat(CALC), config=LoopConfig(max_prompt_chars=10))
    fin = evs[-1]
    assert isinstance(fin, Finished) and (fin.stop, fin.finish_reason, fin.content) == ("context_limit", "length", "")
    assert [s.result for s in fin.steps] == ["7006652"] and len(engine.received) == 1
    roomy = ScriptedEngine([call("calculator", expression="1234 * 5678"), answer("7006652")])
    done = (await events(roomy, chat(CALC), config=LoopConfig(max_prompt_chars=100_000)))[-1]
    assert done.stop == "answer" and len(roomy.received) == 2


def two_weather_calls(asked: str, said: Any) -> list[dict[str, Any]]:
    """A history: the user's question, an assistant turn saying `said` with two weather calls, their two results."""
    turn = {"role": "assistant", "content": said, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Lyon"}'}}]}
    return [{"role": "user", "content": asked}, turn, {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "rain"}]


@pytest.mark.parametrize("said", ["Let me check.", [{"type": "output_text", "text": "Let me check."}]])
async def test_a_constrained_turn_keeps_the_text_beside_an_earlier_call(said: Any) -> None:
    """An assistant turn of text and a tool call in the history (a chat turn, a Messages turn of text and tool_use,
    a Responses message + function_call replayed): in constrained mode its text was dropped, only the call's JSON
    shown. It is kept now, before the call's JSON in the same assistant message (one turn, roles alternating)."""
    engine = ScriptedEngine([answer("Sunny.")])
    history = two_weather_calls("Weather in Paris and Lyon?", said)
    fin = (await events(engine, {**chat(WEATHER, CALC), "messages": history}))[-1]
    assert isinstance(fin, Finished) and fin.content == "Sunny."
    assert engine.received[0]["messages"][1:] == [
        history[0],
        {"role": "assistant", "content": 'Let me check.\n{"tool":"weather","arguments":{"city":"Paris"}}\n'
                                         '{"tool":"weather","arguments":{"city":"Lyon"}}'},
        {"role": "user", "content": "weather result: sunny\n\nweather result: rain"}]


async def test_a_constrained_turn_of_several_calls_is_one_assistant_and_one_user_message() -> None:
    """A turn of several tool calls was shown as several assistant messages in a row, then its results as several
    user messages in a row: a template that requires alternating roles (Gemma, Mistral) refuses that. Now one
    assistant message holds every call's JSON (one a line, in order) and one user message every result (in order),
    and the system prompt says a reply is still ONE call (the grammar and parse_turn read one); the next turn, one
    call, is parsed as before."""
    engine = ScriptedEngine([call("calculator", expression="2*3"), answer("6, sunny, rain.")])
    history = two_weather_calls("Weather in Paris and Lyon, and 2*3?", None)
    done = await events(engine, {**chat(WEATHER, CALC), "messages": history})
    fin = done[-1]
    assert isinstance(fin, Finished) and fin.content == "6, sunny, rain." and [s.tool for s in fin.steps] == [
        "calculator"]
    first, second = (r["messages"] for r in engine.received)
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user"]
    assert first[2:4] == [
        {"role": "assistant", "content": '{"tool":"weather","arguments":{"city":"Paris"}}\n'
                                         '{"tool":"weather","arguments":{"city":"Lyon"}}'},
        {"role": "user", "content": "weather result: sunny\n\nweather result: rain"}]
    assert MANY_CALLS in first[0]["content"]
    assert second[4:] == [{"role": "assistant", "content": '{"tool":"calculator","arguments":{"expression":"2*3"}}'},
                          {"role": "user", "content": "calculator result: 6"}]


async def test_a_history_of_single_calls_does_not_mention_several() -> None:
    """The note on several calls a turn is only in a prompt whose history shows such a turn."""
    engine = ScriptedEngine([answer("Sunny.")])
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    await events(engine, {**chat(WEATHER, CALC), "messages": history})
    sent = engine.received[0]["messages"]
    assert MANY_CALLS not in sent[0]["content"] and [m["role"] for m in sent] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize("after", ["In Celsius?", [{"type": "text", "text": "In"}, {"type": "text", "text": "Celsius?"}]])
async def test_a_user_s_text_after_tool_results_joins_their_user_message(after: Any) -> None:
    """Review (R1b): a user message right after the results (a Messages turn of tool_result and text blocks; a chat
    tool message, then a user one) stayed a second user message in a row, which Gemma's and Mistral's templates
    refuse, as they did the several results 1e4d623 joined. It now ends the results' user message; one with an
    image part (which the constrained prompt's text would drop) is left as it is."""
    engine = ScriptedEngine([answer("Sunny.")])
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "sunny"}, {"role": "user", "content": after}]
    await events(engine, {**chat(WEATHER, CALC), "messages": history})
    sent = engine.received[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[-1]["content"] == "weather result: sunny\n\n" + ("In Celsius?" if isinstance(after, str) else "In\nCelsius?")
    image = [{"type": "text", "text": "This?"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    engine = ScriptedEngine([answer("Sunny.")])
    await events(engine, {**chat(WEATHER, CALC), "messages": [*history[:3], {"role": "user", "content": image}]})
    assert engine.received[0]["messages"][-1] == {"role": "user", "content": image}


def test_tool_results_may_answer_consecutive_assistant_turns() -> None:
    """The Messages API merges consecutive assistant turns: results after them answer the calls of either."""
    from aigrid.agents.loop import check_tool_results

    def turn(cid: str) -> dict:
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": cid, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}

    results = [{"role": "tool", "tool_call_id": "t1", "content": "a"},
               {"role": "tool", "tool_call_id": "t2", "content": "b"}]
    check_tool_results([{"role": "user", "content": "q"}, turn("t1"), turn("t2"), *results])  # not refused
    # the control: a user turn between the two assistant turns ends the first, and its call is answered by nothing
    # (since the thirty-sixth session the 400 names that unanswered call, at the user turn that ends its turn)
    with pytest.raises(InvalidRequest, match="did not have response messages: t1$"):
        check_tool_results([{"role": "user", "content": "q"}, turn("t1"), {"role": "user", "content": "more"},
                            turn("t2"), *results])


async def test_a_tool_taken_back_while_the_loop_runs_is_an_error_result_not_a_crash() -> None:
    from aigrid.agents.loop import LoopConfig, _run_step
    from aigrid.agents.steps import Call
    from aigrid.agents.tool import NO_CONTEXT, ToolRegistry

    call = Call(id="c1", name="gone", arguments={}, raw_arguments="{}")
    step = await _run_step(ToolRegistry(), call, {"gone"}, NO_CONTEXT, LoopConfig(), 0, 0.0, lambda: 0.0)
    assert not step.ok and "no longer offered" in step.result


async def test_a_tool_past_its_timeout_is_an_error_result_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    from aigrid.agents.loop import _run_step
    from aigrid.agents.steps import Call
    from aigrid.agents.tool import NO_CONTEXT, ToolRegistry
    from aigrid.security.firewall.texts import Source

    class Stalled:
        name, description, source = "stalled", "never answers", Source.MCP_RESULT
        parameters: dict[str, Any] = {"type": "object"}

        async def run(self, arguments: Any, context: Any) -> str:
            await asyncio.sleep(10)
            return "late"

    call = Call(id="c1", name="stalled", arguments={}, raw_arguments="{}")
    with caplog.at_level(logging.WARNING, logger="aigrid.agents.loop"):
        step = await _run_step(ToolRegistry([Stalled()]), call, {"stalled"}, NO_CONTEXT,
                               LoopConfig(tool_timeout_s=0.05), 0, 0.0, lambda: 0.0)
    assert not step.ok and step.result == "error: the tool did not finish within 0.05s"
    assert [r.getMessage() for r in caplog.records] == ["server-side tool stalled did not finish within 0.05s"]


DEEP_ARGUMENTS = '{"expression": "1+1", "x": ' + "[" * 300 + "]" * 300 + "}"
"""A model's arguments nested 301 levels: orjson reads them (1,024) but writes at most 254."""


@pytest.mark.parametrize("mode", ["native", "constrained"])
async def test_arguments_nested_deeper_than_can_be_written_again_are_a_bad_call(mode: str) -> None:
    """They were taken as a dict and written out again (the client's answer, the next turn's JSON): orjson's
    TypeError failed the attempt as the engine's failure (counted against its circuit, the whole loop run again at
    the next candidate)."""
    from aigrid.agents.reply import completion

    if mode == "native":
        first = {"tool_calls": [{"name": "calculator", "arguments": orjson.Fragment(DEEP_ARGUMENTS.encode())}]}
    else:
        first = {"content": '{"tool": "calculator", "arguments": ' + DEEP_ARGUMENTS + "}"}
    engine = ScriptedEngine([first, answer("2") if mode == "constrained" else {"content": "2"}])
    evs = await events(engine, chat(CALC, aigrid_tool_mode=mode))
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.content == "2" and len(engine.received) == 2
    (step,) = fin.steps
    assert not step.ok and step.result == "error: the arguments are not a JSON object (of at most 128 levels)"
    assert isinstance(step.arguments, str)
    orjson.dumps(completion(fin, "m", created=0, response_id="r"))  # the client's answer can be written


async def test_a_turn_the_quota_gives_fewer_output_tokens_is_sent_with_them() -> None:
    """before_turn answers how many output tokens each turn may write (the gateway's quota: Guard.extend): fewer
    than its max_tokens, it is sent with them, and an answer they cut off ends the loop with stop "token_budget"
    (before, the gate answered only yes or no, for later turns, and each was sent with its whole max_tokens)."""
    asked: list[int | None] = []

    def gate(*grants: int | None) -> Any:
        left = list(grants)

        async def room_for(payload: Any) -> int | None:
            asked.append(payload.get("max_tokens"))
            return left.pop(0)
        return room_for

    engine = ScriptedEngine([call("calculator", expression="2 + 2"), {"content": '{"answer": "fo', "finish": "length"}])
    fin = (await events(engine, chat(CALC, max_tokens=200), before_turn=gate(100, 24)))[-1]
    assert isinstance(fin, Finished) and (fin.stop, fin.finish_reason) == ("token_budget", "length"), fin
    assert asked == [200, 200] and [r["max_tokens"] for r in engine.received] == [100, 24]
    whole = ScriptedEngine([call("calculator", expression="2 + 2"), answer("4")])
    done = (await events(whole, chat(CALC, max_tokens=200), before_turn=gate(200, 200)))[-1]
    assert done.stop == "answer" and [r["max_tokens"] for r in whole.received] == [200, 200]
    spent = ScriptedEngine([call("calculator", expression="2 + 2"), answer("4")])
    none = (await events(spent, chat(CALC, max_tokens=200), before_turn=gate(200, None)))[-1]
    assert (none.stop, none.finish_reason) == ("token_budget", "length") and len(spent.received) == 1


@pytest.mark.parametrize("mode", ["constrained", "native"])
@pytest.mark.parametrize("extra", [{}, {"max_tokens": 50, "tool_choice": "required"}, {"tool_choice": "none"}])
async def test_the_first_turn_the_gateway_reserves_is_the_one_the_loop_sends(mode: str, extra: dict[str, Any]) -> None:
    """first_turn (what admission reserves for a request with server-side tools) is the loop's first model turn's
    body, the tools' instructions or definitions and its max_tokens with it."""
    body = chat(CALC, WEATHER, **extra)
    engine = ScriptedEngine([answer("4") if mode == "constrained" else {"content": "4"}])
    await events(engine, body, config=LoopConfig(mode=mode))
    assert first_turn(body, REGISTRY, LoopConfig(mode=mode)) == engine.received[0]


@pytest.mark.parametrize("limits", [{"max_tokens": None}, {"max_tokens": None, "max_completion_tokens": None}])
async def test_a_null_max_tokens_is_no_max_tokens_to_the_loop(limits: dict[str, Any]) -> None:
    """`max_tokens: null` (OpenAI's "not set") was sent on to each turn as null, where no max_tokens gets the loop's
    step_max_tokens: each turn wrote as much as its engine would, and a turn the quota gave fewer output tokens (the
    gateway reserved those, output_limit reading null as none) was sent with null all the same, uncapped."""
    engine = ScriptedEngine([call("calculator", expression="2 + 2"), answer("4")])

    async def room_for(payload: Any) -> int:
        return 24 if engine.received else LoopConfig().step_max_tokens

    await events(engine, chat(CALC, **limits), before_turn=room_for)
    assert [r.get("max_tokens") for r in engine.received] == [LoopConfig().step_max_tokens, 24]
    assert all(r.get("max_completion_tokens") is None for r in engine.received)
    assert first_turn(chat(CALC, **limits), REGISTRY)["max_tokens"] == LoopConfig().step_max_tokens


async def test_a_loop_whose_engine_counts_nothing_answers_usage_null_not_an_empty_object() -> None:
    """A turn without the engine's count makes what the loop spent unknown (Finished.usage {}, charged its
    reservation). The answer said `"usage": {}`, an object without OpenAI's required counts (an SDK builds a usage
    whose prompt_tokens is missing); unknown is null, as the schema allows, whole and in the streamed usage chunk."""
    from aigrid.agents.reply import completion, sse_stream

    engine = ScriptedEngine([{**call("calculator", expression="1 + 1"), "usage": {}}, {"content": "2", "usage": {}}])
    evs = await events(engine, chat(CALC))
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.content == "2" and fin.usage == {}
    assert completion(fin, "m", created=0, response_id="r")["usage"] is None

    async def replay() -> Any:
        for ev in evs:
            yield ev

    chunks = [orjson.loads(part[6:]) async for out in sse_stream(replay(), "m", include_usage=True, created=0,
                                                               response_id="r")
              for part in out.decode().split("\n") if part.startswith("data: {")]
    assert chunks[-1] == {"id": "r", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
                          "usage": None}


class _KeepAlives(ScriptedEngine):
    """Its first model turn: `: keep-alive` reads, one a (fake) second, `tokens` of them with a token between each
    (none: keep-alives only), up to 1000 reads, then its scripted reply."""

    def __init__(self, replies: list[dict[str, Any]], now: list[float], every: int | None) -> None:
        super().__init__(replies)
        self.now, self.every, self.reads = now, every, 0

    async def _sse(self, reply: dict[str, Any]) -> AsyncIterator[bytes]:
        if len(self.received) == 1:
            for i in range(1000):
                self.now[0] += 1.0
                self.reads += 1
                if self.every is not None and i % self.every == 0:
                    yield b'data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]}\n\n'
                else:
                    yield b": keep-alive\n\n"
        async for chunk in super()._sse(reply):
            yield chunk


@pytest.mark.parametrize("every", [None, 20])
async def test_a_model_turn_of_keep_alives_is_the_engines_silence(every: int | None) -> None:
    """A tool loop's model turn read its engine's stream without the relay's bound on reads without a data event
    (gateway.stream_idle_s): a turn of keep-alives lasted to the loop's own ceiling. Now past `quiet_s` of them
    the turn is the engine's failure (EngineStreamBroken); a slow turn with data events between passes."""
    now = [0.0]
    engine = _KeepAlives([answer("done")], now, every)
    run = run_tool_loop(engine, chat(CALC), REGISTRY, config=LoopConfig(quiet_s=30.0), clock=lambda: now[0])
    if every is None:
        with pytest.raises(EngineStreamBroken, match="no data event for 30 s"):
            _ = [ev async for ev in run]
        assert engine.reads <= 32  # before: all 1000 read
    else:
        evs = [ev async for ev in run]
        assert isinstance(evs[-1], Finished) and evs[-1].content == "done" and engine.reads == 1000


@pytest.mark.parametrize("usage", [{"prompt_tokens": -5, "completion_tokens": 3}, {"prompt_tokens": 5.0},
                                   {"completion_tokens": True}, {"total_tokens": 1 << 70}, "12"],
                         ids=["below-zero", "float", "bool", "past-64-bits", "not-an-object"])
def test_a_turns_counts_that_cannot_be_charged_are_unknown(usage: object) -> None:
    """Only a whole number (until the thirty-second session any int, -5 too) is a count: else the turn has none."""
    assert turn_counts(usage) == {}


def test_a_turns_counts_are_kept() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10, "prompt_tokens_details": {"x": 1}}
    assert turn_counts(usage) == {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}


async def test_a_loops_summed_counts_past_64_bits_are_unknown(caplog: pytest.LogCaptureFixture) -> None:
    """Each turn's count within 64 bits (its context not known: no bound), their sum past 2**63-1: it was summed as
    it came (3 x 2**62, past what the audit record and a metric hold, and charged to a loop cut after its tools
    acted: Exchange.loop_usage). Now the loop's count is unknown (logged), as any count that cannot be charged."""
    big = {"prompt_tokens": 1 << 62, "completion_tokens": 0, "total_tokens": 1 << 62}
    engine = ScriptedEngine([{**call("calculator", expression="1+1"), "usage": big},
                             {**call("calculator", expression="2+2"), "usage": big},
                             {**answer("4"), "usage": big}])
    seen: list[dict[str, int]] = []
    evs = await events(engine, chat(CALC, aigrid_max_steps=3), config=LoopConfig(reuse_tools=True),
                       on_usage=lambda so_far, _: seen.append(dict(so_far)))
    fin = evs[-1]
    assert isinstance(fin, Finished) and fin.content == "4" and fin.model_calls == 3
    assert fin.usage == {}
    assert all(v <= (1 << 63) - 1 for u in seen for v in u.values()), seen
    assert seen[-1] == {} and seen[0] == {"prompt_tokens": 1 << 62, "completion_tokens": 0, "total_tokens": 1 << 62}
    assert "past 9223372036854775807" in caplog.text


async def test_a_turns_count_past_its_context_is_unknown(caplog: pytest.LogCaptureFixture) -> None:
    """LoopConfig.most_turn_tokens (the model's context, the gateway's) bounds each turn's count, as the front
    door bounds an answer's (token_counts.count_fault): a turn that counts more is the engine's fault, unknown."""
    usage = {"prompt_tokens": 8_000, "completion_tokens": 193, "total_tokens": 8_193}
    assert turn_counts(usage, 8_192) == {} and "8193 tokens, more than the 8192" in caplog.text
    assert turn_counts(usage, 8_193) == usage and turn_counts(usage) == usage
    engine = ScriptedEngine([{**call("calculator", expression="1+1"), "usage": usage}, answer("2")])
    evs = await events(engine, chat(CALC), config=LoopConfig(most_turn_tokens=8_192))
    assert isinstance(evs[-1], Finished) and evs[-1].content == "2" and evs[-1].usage == {}


async def test_a_client_tools_strict_flag_reaches_a_native_turn_of_the_loop() -> None:
    """(7 Dec 2026, thirty-fourth session) A native turn of the loop (server-side tools beside the client's) wrote
    each tool anew from its ToolSpec and dropped the client's function `strict` (OpenAI's, Anthropic's strict tool
    use as the Messages door carries it): the engine never saw it. Now carried as the client sent it; a server-side
    tool's definition is the registry's, with none. A `strict` that is not a boolean is a 400 naming it."""
    strict_weather = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    engine = ScriptedEngine([{"content": "done"}])
    await events(engine, chat(CALC, strict_weather, aigrid_tool_mode="native"))
    sent = [t["function"] for t in engine.received[0]["tools"]]
    assert [fn["name"] for fn in sent] == ["calculator", "weather"]
    assert "strict" not in sent[0] and sent[1]["strict"] is True, sent
    with pytest.raises(InvalidRequest) as bad:
        validate_tool_request(chat(CALC, {"type": "function", "function": {**WEATHER["function"], "strict": "yes"}}),
                              REGISTRY)
    assert bad.value.param == "tools[1].function.strict"
