"""The client's own function tools on a model that gets tool calls by constrained output (the default, and
what llama.cpp without a tool-calling template needs: it ignores `tools` and answers in prose). The gateway's
loop decodes the turn under the tools' grammar and hands the call back OpenAI's way; a SCRIPTED engine
(tests/agents/scripted_engine.py) plays the model and records what it was sent."""

from __future__ import annotations

from pathlib import Path

import openai
import orjson
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway import scripted_client
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import openai_client

scripted = scripted_client.scripted  # its fixture

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.mark.parametrize("stream", [False, True])
async def test_required_tool_choice_gets_a_call_decoded_under_the_tools_grammar(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine], stream: bool) -> None:
    oai, engine = scripted
    engine.replies.append({"content": '{"tool": "get_weather", "arguments": {"city": "Paris"}}'})
    if stream:
        chunks = [c async for c in await oai.chat.completions.create(
            model="smollm2-135m", messages=ASK, tools=[WEATHER], tool_choice="required", stream=True)]
        finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        name, arguments = deltas[0].function.name, "".join(d.function.arguments or "" for d in deltas)
        assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # no JSON leaks out
    else:
        reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER],
                                                  tool_choice="required")
        finish, call = reply.choices[0].finish_reason, reply.choices[0].message.tool_calls[0]
        assert not reply.choices[0].message.content  # the call's JSON is not shown as text
        name, arguments = call.function.name, call.function.arguments
    assert (finish, name, orjson.loads(arguments)) == ("tool_calls", "get_weather", {"city": "Paris"})
    sent = engine.received[-1]
    assert "tools" not in sent and "tool_choice" not in sent  # an engine without a tool template: grammar only
    grammar = orjson.dumps(sent["response_format"]).decode()
    assert "get_weather" in grammar and '"answer"' not in grammar  # "required": no way to answer in prose
    assert "get_weather" in sent["messages"][0]["content"]  # the tool described in the system turn


async def test_auto_may_answer_and_none_offers_no_tool(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    engine.replies += [{"content": '{"answer": "I cannot know the weather."}'}, {"content": "Hello."}]
    reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER])
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content == "I cannot know the weather."
    assert '"answer"' in orjson.dumps(engine.received[-1]["response_format"]).decode()
    # "none" without tool turns: an ordinary chat turn, the client's own messages, no grammar and no tool prompt
    reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER], tool_choice="none")
    assert reply.choices[0].message.content == "Hello."
    sent = engine.received[-1]
    assert "response_format" not in sent and "tools" not in sent and sent["messages"] == ASK


async def test_none_after_tool_turns_keeps_the_answer_grammar(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """With the client's earlier tool call and result in the conversation (shown to the model as JSON in
    constrained mode), "none" still answers under the answer-only grammar, so the model cannot imitate a call."""
    oai, engine = scripted
    engine.replies += [{"content": '{"answer": "Sunny in Paris."}'}]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}]
    reply = await oai.chat.completions.create(model="smollm2-135m", messages=history, tools=[WEATHER],
                                              tool_choice="none")
    assert reply.choices[0].message.content == "Sunny in Paris."
    grammar = orjson.dumps(engine.received[-1]["response_format"]).decode()
    assert '"answer"' in grammar and "get_weather" not in grammar


async def test_a_malformed_client_tool_is_the_clients_400(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    bad = {"type": "function", "function": {"name": "get_weather", "parameters": "a city"}}
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[bad])
    assert info.value.body["param"] == "tools[0].function.parameters"  # type: ignore[index]
    assert engine.received == []


@pytest.mark.parametrize(("tools", "choice", "says"), [
    ([WEATHER], {"type": "function", "function": {"name": "get_time"}}, "get_time"),
    (None, "required", "only allowed when 'tools' are specified"),
    (None, {"type": "function", "function": {"name": "get_weather"}}, "only allowed when 'tools' are specified"),
    ([WEATHER], "always", "'always'"),
], ids=["a function not offered", "required, no tools", "a function, no tools", "an unknown mode"])
async def test_a_tool_choice_that_cannot_be_met_is_the_clients_400(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine], tools: list | None, choice: object, says: str) -> None:
    """OpenAI answers 400 naming tool_choice; the loop ran up to its step limit before (a named function not
    offered), or the engine was asked to call a tool it was never given."""
    oai, engine = scripted
    extra = {"tools": tools} if tools else {}
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tool_choice=choice, **extra)
    body = info.value.body
    assert body["param"] == "tool_choice" and says in body["message"], body  # type: ignore[index]
    assert engine.received == []


@pytest.mark.parametrize(("choice", "param", "says"), [
    ({"type": "function"}, "tool_choice.function.name", "Missing required parameter"),
    ({"type": "function", "function": {}}, "tool_choice.function.name", "Missing required parameter"),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}, "tool_choice.type", "'allowed_tools' is not served"),
    ({"type": "custom", "custom": {"name": "get_weather"}}, "tool_choice.type", "'custom' is not served"),
], ids=["a function without its name", "an empty function", "allowed_tools", "a custom tool"])
async def test_a_tool_choice_object_that_names_no_function_is_the_clients_400(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine], choice: dict, param: str, says: str) -> None:
    """OpenAI refuses a function choice without its name; the loop read it, and OpenAI's `allowed_tools` (mode
    "required": a call of one of them) and a custom tool's choice, as "auto": the model was free not to call,
    or to call any tool, while the client believed the choice applied. The Responses front door already refused
    them (responses_translate._tool_choice)."""
    oai, engine = scripted
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER], tool_choice=choice)
    body = info.value.body
    assert body["param"] == param and says in body["message"], body  # type: ignore[index]
    if says == "Missing required parameter":  # OpenAI's code and full stop (review RV4, thirty-seventh session)
        assert body["code"] == "missing_required_parameter" and body["message"].endswith("'."), body  # type: ignore[index]
    assert engine.received == []


async def test_auto_and_none_without_tools_are_accepted(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """Lenient where nothing is asked of the model (OpenAI refuses these too; OpenAI-compatible servers do not)."""
    oai, engine = scripted
    for choice in ("auto", "none"):
        engine.replies.append({"content": "Sunny."})
        reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tool_choice=choice,
                                                  extra_body={"stream": False})
        assert reply.choices[0].message.content == "Sunny."


async def test_a_chat_tool_message_that_answers_no_call_is_the_clients_400(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """OpenAI refuses a `tool` message that answers no tool call of the assistant turn before it (the engine
    would read a result of nothing); so does the chat route now, naming the message, before any engine."""
    oai, engine = scripted
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    orphans = [
        [*ASK, {"role": "tool", "tool_call_id": "c1", "content": "Sunny."}],
        [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
         {"role": "tool", "tool_call_id": "c9", "content": "Sunny."}],
    ]
    said = ("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
            "'tool_calls'.", "Invalid parameter: 'tool_call_id' of 'c9' not found in 'tool_calls' of previous message.")
    for messages, param, words in zip(orphans, ("messages[1].role", "messages[2].tool_call_id"), said, strict=True):
        with pytest.raises(openai.BadRequestError) as info:
            await oai.chat.completions.create(model="smollm2-135m", messages=messages, tools=[WEATHER])
        assert info.value.body["param"] == param, info.value.body  # type: ignore[index]
        assert info.value.body["message"] == words, info.value.body  # type: ignore[index]  (OpenAI's own words)
    assert engine.received == []
    engine.replies.append({"content": "Sunny, 21 C."})
    ok = await oai.chat.completions.create(
        model="smollm2-135m", tools=[WEATHER], extra_body={"stream": False},
        messages=[*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": "c1", "content": "Sunny."}])
    assert ok.choices[0].message.content == "Sunny, 21 C."


async def test_a_tool_call_id_that_is_not_a_string_is_a_400_not_a_500(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="smollm2-135m", tools=[WEATHER], messages=[
            *ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": ["c1"], "content": "Sunny."}])  # type: ignore[list-item]
    # the schema names it, as it names messages.N.name
    assert info.value.body["param"] == "messages[2].tool_call_id"  # type: ignore[index]
    assert engine.received == []


async def test_a_streamed_tool_call_turn_has_null_content_as_the_whole_answer_and_openai(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """OpenAI sends no content (null) on a turn that ends in tool calls, streamed or not; a streamed text answer opens
    with content "". Until the thirty-third session the loop's stream opened with "" always, so the SDK's accumulated
    tool-call message had content "" (the openai-agents SDK makes an empty message item of it) where the whole answer
    had null."""
    oai, engine = scripted
    call = {"content": '{"tool": "get_weather", "arguments": {"city": "Paris"}}'}
    engine.replies += [dict(call), dict(call)]
    whole = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER], tool_choice="required")
    async with oai.chat.completions.stream(model="smollm2-135m", messages=ASK, tools=[WEATHER],
                                           tool_choice="required") as stream:
        deltas = [e.chunk.choices[0].delta async for e in stream if e.type == "chunk" and e.chunk.choices]
        streamed = await stream.get_final_completion()
    assert whole.choices[0].message.content is None and streamed.choices[0].message.content is None
    assert streamed.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
    assert deltas[0].role == "assistant" and all(d.content is None for d in deltas)
    engine.replies.append({"content": '{"answer": "Sunny in Paris."}'})
    chunks = [c async for c in await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER],
                                                                 stream=True)]
    texts = [c.choices[0].delta.content for c in chunks if c.choices]
    assert texts[0] == "" and "".join(t or "" for t in texts) == "Sunny in Paris."


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_with_tools_the_loop_runs_is_a_400_naming_logprobs(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine], stream: bool) -> None:
    """The loop's answer has no log-probabilities (a constrained turn's tokens are the step's JSON, not the answer's):
    until the thirty-third session it asked every turn for them and answered without them, without a word. Refused
    before any engine turn: the client's own tools on a constrained model, and a server-side tool (before routing)."""
    oai, engine = scripted
    engine.replies.append({"content": '{"tool": "get_weather", "arguments": {"city": "Paris"}}'})
    for tools in ([WEATHER], [{"type": "function", "function": {"name": "calculator"}}]):
        with pytest.raises(openai.BadRequestError) as info:
            await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=tools,  # type: ignore[call-overload]
                                              logprobs=True, stream=stream)
        assert info.value.param == "logprobs" and "not served with tools" in info.value.message, info.value.body
    # the Responses door's include of them, named as its own field
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"], "strict": False}
    with pytest.raises(openai.BadRequestError) as info:
        await oai.responses.create(model="smollm2-135m", input="Weather in Paris?", tools=[tool],  # type: ignore[list-item]
                                   include=["message.output_text.logprobs"], stream=stream)
    assert info.value.param == "include" and "not served with tools" in info.value.message, info.value.body
    assert engine.received == []
    # without logprobs (or logprobs: false) the same request is served
    reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER], logprobs=False)
    assert reply.choices[0].message.tool_calls


async def test_logprobs_with_the_clients_tools_on_a_native_model_still_reach_its_engine(tmp_path: Path) -> None:
    """On a `native` model the client's tools alone are passed to its engine as they came: its logprobs too."""
    engine = ScriptedEngine([{"content": "Sunny."}])
    oai = openai_client(build_app(await scripted_gateway(tmp_path, engine, tool_calls="native")))
    try:
        reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER], logprobs=True)
    finally:
        await oai.close()
    assert reply.choices[0].message.content == "Sunny." and engine.received[-1]["logprobs"] is True


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_forced_by_a_named_tool_choice_finishes_with_stop_as_openai_and_vllm(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine], stream: bool) -> None:
    """OpenAI ends a call forced by a named tool_choice with finish_reason "stop" (its function-calling guide), as
    vLLM does (vllm-project/vllm#49496: "Named calls now return stop, while auto and required calls continue to
    return tool_calls"). Until the thirty-sixth session the loop said "tool_calls"; the SDK's stream helper
    accumulates the same call either way."""
    oai, engine = scripted
    engine.replies.append({"content": '{"tool": "get_weather", "arguments": {"city": "Paris"}}'})
    named = {"type": "function", "function": {"name": "get_weather"}}
    if stream:
        async with oai.chat.completions.stream(model="smollm2-135m", messages=ASK, tools=[WEATHER],
                                               tool_choice=named) as s:
            reply = await s.get_final_completion()
    else:
        reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, tools=[WEATHER],
                                                  tool_choice=named)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls[0].function.name == "get_weather"  # type: ignore[index, union-attr]
    assert orjson.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[index, union-attr]
