"""An assistant turn's tool call with no result after it is each door's own 400, naming the call and its field,
before any engine reads the conversation (thirty-sixth session: it was accepted on all three doors, and the engine
read a call without its result). OpenAI's chat answers "An assistant message with 'tool_calls' must be followed by
tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ...",
Anthropic's Messages API "messages.N: `tool_use` ids were found without `tool_result` blocks immediately after:
...", the Responses API "No tool output found for function call ...". The official SDKs are the clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import anthropic_client, openai_client

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = {"role": "user", "content": "Weather in Paris and Rome?"}


def _call(cid: str) -> dict:
    return {"id": cid, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


async def test_chat_refuses_a_tool_call_without_its_tool_message(tmp_path: Path) -> None:
    engine = ScriptedEngine([])
    oai = openai_client(build_app(await scripted_gateway(tmp_path, engine)))
    calls = {"role": "assistant", "content": None, "tool_calls": [_call("c1"), _call("c2")]}
    cases = [  # (messages, param, the ids named): OpenAI's param is the role of the message that came instead of a
        # tool message ("messages.[5].role" where messages[4] made the calls, as quoted in many clients' logs), or
        # `messages` where the conversation ends (until the thirty-seventh session ours, `messages[1].tool_calls`)
        ([ASK, calls, {"role": "tool", "tool_call_id": "c1", "content": "Sunny."}, {"role": "user", "content": "?"}],
         "messages[3].role", "c2"),
        ([ASK, calls], "messages", "c1, c2"),  # the conversation ends with the calls
        ([ASK, calls, {"role": "user", "content": "never mind"}], "messages[2].role", "c1, c2"),
        # an assistant message right after the calls' is what came instead of their tool messages, though the grid
        # reads consecutive assistants as one turn (review RV2: the param was `messages` and `messages[4].role`)
        ([ASK, calls, {"role": "assistant", "content": "Let me see."}], "messages[2].role", "c1, c2"),
        ([ASK, calls, {"role": "assistant", "content": None, "tool_calls": [_call("c3")]},
          {"role": "tool", "tool_call_id": "c3", "content": "Rain."}, {"role": "user", "content": "?"}],
         "messages[2].role", "c1, c2"),
    ]
    for messages, param, ids in cases:
        with pytest.raises(openai.BadRequestError) as info:
            await oai.chat.completions.create(model="smollm2-135m", messages=messages, tools=[WEATHER])
        body = info.value.body
        assert body["param"] == param, body  # type: ignore[index]
        assert body["message"].endswith(f"did not have response messages: {ids}"), body  # type: ignore[index]
        assert body["message"].startswith("An assistant message with 'tool_calls' must be followed")  # type: ignore[index]
    assert engine.received == []
    engine.replies.append({"content": "Sunny in both."})  # the control: both answered, in either order
    ok = await oai.chat.completions.create(model="smollm2-135m", tools=[WEATHER], extra_body={"stream": False},
                                           messages=[ASK, calls, {"role": "tool", "tool_call_id": "c2", "content": "a"},
                                                     {"role": "tool", "tool_call_id": "c1", "content": "b"}])
    assert ok.choices[0].message.content == "Sunny in both."
    await oai.close()


async def test_messages_refuses_a_tool_use_without_its_tool_result(tmp_path: Path) -> None:
    engine = ScriptedEngine([])
    claude = anthropic_client(build_app(await scripted_gateway(tmp_path, engine)))
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    use = {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                                            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                             "input": {"city": "Paris"}},
                                            {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                                             "input": {"city": "Rome"}}]}
    one = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny."}]}
    cases = [  # (messages, the ids named)
        ([ASK, use, one], "toolu_2"),
        ([ASK, use, {"role": "user", "content": "never mind"}], "toolu_1, toolu_2"),
        ([ASK, use], "toolu_1, toolu_2"),  # a final assistant turn is no prefill of a call
    ]
    for messages, ids in cases:
        for count in (False, True):  # count_tokens reads the same conversation
            with pytest.raises(anthropic.BadRequestError) as info:
                if count:
                    await claude.messages.count_tokens(model="smollm2-135m", tools=[tool], messages=messages)
                else:
                    await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool], messages=messages)
            error = info.value.body["error"]  # type: ignore[index]
            assert error["type"] == "invalid_request_error"
            assert error["message"] == (f"messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
                                        f"after: {ids}. Each `tool_use` block must have a corresponding `tool_result` "
                                        "block in the next message."), error
    assert engine.received == []
    engine.replies.append({"content": "Sunny in both."})
    both = {"role": "user", "content": [*one["content"], {"type": "tool_result", "tool_use_id": "toolu_2",  # type: ignore[list-item]
                                                          "content": "Rainy."}]}
    ok = await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool], messages=[ASK, use, both])
    assert ok.content[0].text == "Sunny in both."  # type: ignore[union-attr]
    await claude.close()


async def test_responses_refuses_a_function_call_without_its_output(tmp_path: Path) -> None:
    engine = ScriptedEngine([])
    oai = openai_client(build_app(await scripted_gateway(tmp_path, engine, "native")))
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}  # type: ignore[index]
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    other = {**call, "call_id": "call_2", "arguments": '{"city": "Rome"}'}
    for input_ in ([ASK, call], [ASK, call, {"role": "user", "content": "never mind"}], [ASK, call, other]):
        with pytest.raises(openai.BadRequestError) as info:  # OpenAI names one call, the first (until the
            # thirty-seventh session the message went on: "(nor for call_2)")
            await oai.responses.create(model="smollm2-135m", input=input_, tools=[tool])  # type: ignore[arg-type]
        assert info.value.body == {"message": "No tool output found for function call call_1.",  # type: ignore[comparison-overlap]
                                   "type": "invalid_request_error", "param": "input[1]", "code": "invalid_request"}
    # a stored response that ended in a call, continued without its output: the call is the stored one
    engine.replies.append({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})  # its id: call_0
    first = await oai.responses.create(model="smollm2-135m", input=[ASK], tools=[tool])  # type: ignore[arg-type, list-item]
    assert [i.type for i in first.output] == ["function_call"]
    with pytest.raises(openai.BadRequestError) as info:
        await oai.responses.create(model="smollm2-135m", previous_response_id=first.id, input="And Rome?",
                                   tools=[tool])  # type: ignore[list-item]
    assert info.value.body["param"] == "input"  # type: ignore[index]
    assert info.value.body["message"] == "No tool output found for function call call_0."  # type: ignore[index]
    assert len(engine.received) == 1
    engine.replies.append({"content": "Sunny."})  # the control: with its output
    ok = await oai.responses.create(model="smollm2-135m", previous_response_id=first.id, tools=[tool],  # type: ignore[list-item]
                                    input=[{"type": "function_call_output", "call_id": "call_0", "output": "Sunny."}])
    assert ok.output_text == "Sunny."
    await oai.close()


async def test_a_result_that_answers_no_call_is_said_in_each_apis_own_words(tmp_path: Path) -> None:
    """The other way round: a result whose call is not in the turn before it. Anthropic answers "messages.N.content.M:
    unexpected `tool_use_id` found in `tool_result` blocks: ...", naming the block; the Responses API "No tool call
    found for function call output with call_id ...". Until the thirty-sixth session both doors said the chat door's
    words ("Invalid parameter: no tool call ... (at messages.2.content.0.content)")."""
    engine = ScriptedEngine([])
    app = build_app(await scripted_gateway(tmp_path, engine))
    claude, oai = anthropic_client(app), openai_client(app)
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    use = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                             "input": {"city": "Paris"}}]}
    stray = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny."},
                                         {"type": "tool_result", "tool_use_id": "toolu_9", "content": "Rainy."}]}
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool], messages=[ASK, use, stray])
    assert info.value.body["error"]["message"] == (  # type: ignore[index]
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9. Each `tool_result` "
        "block must have a corresponding `tool_use` block in the previous message.")
    fn = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await oai.responses.create(model="smollm2-135m", tools=[fn], input=[  # type: ignore[list-item]
            ASK, {"type": "function_call_output", "call_id": "call_nope", "output": "Sunny."}])
    assert bad.value.body == {"message": "No tool call found for function call output with call_id call_nope.",  # type: ignore[comparison-overlap]
                              "type": "invalid_request_error", "param": "input[1]", "code": "invalid_request"}
    assert engine.received == []
    await claude.close()
    await oai.close()


async def test_a_tool_result_after_a_turn_without_tool_use_is_said_as_anthropic_says_it(tmp_path: Path) -> None:
    """Anthropic has two words for a result whose call is not in the turn before it: "messages.N.content.M: unexpected
    `tool_use_id` found in `tool_result` blocks: ..." where that turn made other calls, and "messages.N: `tool_result`
    block(s) provided when previous message does not contain any `tool_use` blocks" where it made none, naming the
    user turn (as quoted in langchain-ai/langchain's trim_messages issue and many clients' logs). Until RV2 of the
    thirty-sixth session the Messages door said the first for both."""
    engine = ScriptedEngine([])
    claude = anthropic_client(build_app(await scripted_gateway(tmp_path, engine)))
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny."}]}
    cases = [  # (messages, the error's message)
        ([result], "messages.0: `tool_result` block(s) provided when previous message does not contain any `tool_use` "
                   "blocks"),
        ([ASK, {"role": "assistant", "content": "Let me look."}, result],
         "messages.2: `tool_result` block(s) provided when previous message does not contain any `tool_use` blocks"),
    ]
    for messages, said in cases:
        for count in (False, True):
            with pytest.raises(anthropic.BadRequestError) as info:
                if count:
                    await claude.messages.count_tokens(model="smollm2-135m", tools=[tool], messages=messages)
                else:
                    await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool], messages=messages)
            assert info.value.body["error"]["message"] == said, info.value.body  # type: ignore[index]
    assert engine.received == []
    await claude.close()


async def test_chat_refuses_a_tool_call_without_an_id(tmp_path: Path) -> None:
    """OpenAI requires each assistant tool call's `id` (its 400 "Missing required parameter"). Without one no `tool`
    message can answer it: until RV2 of the thirty-sixth session such a call passed the unanswered-call check (it
    listed only calls with an id) and reached the engine without its result, and a `tool` message after it was
    refused as answering "no call" ("the tool result for None ... and there is none")."""
    engine = ScriptedEngine([])
    oai = openai_client(build_app(await scripted_gateway(tmp_path, engine)))
    nameless = {"role": "assistant", "content": None, "tool_calls": [_call("c1"), {
        "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}
    answers = [{"role": "tool", "tool_call_id": "c1", "content": "Sunny."}, {"role": "tool", "content": "Rainy."}]
    for messages in ([ASK, nameless], [ASK, nameless, *answers]):
        with pytest.raises(openai.BadRequestError) as info:
            await oai.chat.completions.create(model="smollm2-135m", messages=messages, tools=[WEATHER])
        assert info.value.body == {  # type: ignore[comparison-overlap]
            "message": "Missing required parameter: 'messages[1].tool_calls[1].id'.", "type": "invalid_request_error",
            "param": "messages[1].tool_calls[1].id", "code": "missing_required_parameter"}
    assert engine.received == []
    await oai.close()


async def test_a_tool_result_after_other_content_of_its_turn_is_refused(tmp_path: Path) -> None:
    """Anthropic's API requires a user turn's tool_result blocks to come first in its content ("In the user message
    containing tool results, the tool_result blocks must come FIRST in the content array. Any text must come AFTER
    all tool results", its tool-use docs), and refuses a call whose result comes after text as unanswered ("messages.N:
    `tool_use` ids were found without `tool_result` blocks immediately after", as clients' logs quote it). Until the
    thirty-seventh session the Messages door moved every result to the front and accepted the turn."""
    engine = ScriptedEngine([])
    claude = anthropic_client(build_app(await scripted_gateway(tmp_path, engine)))
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    use = {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]}
    text = {"type": "text", "text": "Here are the results:"}

    def result(tid: str) -> dict:
        return {"type": "tool_result", "tool_use_id": tid, "content": "Sunny."}

    cases = [  # (the user turn's blocks, the error's message)
        ([text, result("toolu_1"), result("toolu_2")],
         "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1, toolu_2. Each "
         "`tool_use` block must have a corresponding `tool_result` block in the next message."),
        ([result("toolu_1"), text, result("toolu_2")],
         "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_2. Each "
         "`tool_use` block must have a corresponding `tool_result` block in the next message."),
        ([result("toolu_1"), result("toolu_2"), text, result("toolu_2")],  # each answered first: one out of place
         "messages.2.content.3: `tool_result` blocks must come first in the content of a user message, before any "
         "other block"),
    ]
    for blocks, said in cases:
        for count in (False, True):  # count_tokens reads the same conversation
            messages: Any = [ASK, use, {"role": "user", "content": blocks}]
            with pytest.raises(anthropic.BadRequestError) as info:
                if count:
                    await claude.messages.count_tokens(model="smollm2-135m", tools=[tool], messages=messages)  # type: ignore[list-item]
                else:
                    await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool],  # type: ignore[list-item]
                                                 messages=messages)
            error = info.value.body["error"]  # type: ignore[index]
            assert (error["type"], error["message"]) == ("invalid_request_error", said), error
    # after a turn that made no call, a late result is a result of nothing, in Anthropic's words for that case
    plain: Any = [ASK, {"role": "assistant", "content": "Let me look."},
                  {"role": "user", "content": [text, result("toolu_1")]}]
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool], messages=plain)  # type: ignore[list-item]
    assert info.value.body["error"]["message"] == (  # type: ignore[index]
        "messages.2: `tool_result` block(s) provided when previous message does not contain any `tool_use` blocks")
    assert engine.received == []
    engine.replies.append({"content": "Sunny in both."})  # the control: the results first, the text after them
    control: Any = [ASK, use, {"role": "user", "content": [result("toolu_1"), result("toolu_2"), text]}]
    ok = await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool], messages=control)  # type: ignore[list-item]
    assert ok.content[0].text == "Sunny in both."  # type: ignore[union-attr]
    await claude.close()


async def test_chat_refuses_an_assistant_message_between_the_calls_and_their_results(tmp_path: Path) -> None:
    """OpenAI requires a call's tool messages right after the assistant message that made it: [assistant(tool_calls),
    assistant, tool] is its 400 "An assistant message with 'tool_calls' must be followed by tool messages responding
    to each 'tool_call_id'. (insufficient tool messages following tool_calls message)" (invalid_request_error, as
    quoted from OpenAI's API in github.com/agno-agi/agno/issues/1784). Until the thirty-eighth session the chat door
    read the two assistants as one turn (as the Messages API merges them) and sent the engine the conversation. The
    Messages door still merges them, as Anthropic's API does."""
    engine = ScriptedEngine([])
    app = build_app(await scripted_gateway(tmp_path, engine))
    oai, claude = openai_client(app), anthropic_client(app)
    calls = {"role": "assistant", "content": None, "tool_calls": [_call("c1")]}
    between = {"role": "assistant", "content": "Let me see."}
    result = {"role": "tool", "tool_call_id": "c1", "content": "Sunny."}
    for messages in ([ASK, calls, between, result], [ASK, calls, between, result, {"role": "user", "content": "?"}]):
        with pytest.raises(openai.BadRequestError) as info:
            await oai.chat.completions.create(model="smollm2-135m", messages=messages, tools=[WEATHER])
        body = info.value.body
        assert body["param"] == "messages[2].role", body  # type: ignore[index]
        assert body["message"].startswith("An assistant message with 'tool_calls' must be followed"), body  # type: ignore[index]
        assert body["message"].endswith("did not have response messages: c1"), body  # type: ignore[index]
    assert engine.received == []
    engine.replies.extend([{"content": "Sunny."}, {"content": "Sunny too."}])  # the controls: the result right after
    ok = await oai.chat.completions.create(model="smollm2-135m", tools=[WEATHER], extra_body={"stream": False},
                                           messages=[ASK, calls, result, between])
    assert ok.choices[0].message.content == "Sunny."
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    use = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                             "input": {"city": "Paris"}}]}
    merged = await claude.messages.create(model="smollm2-135m", max_tokens=8, tools=[tool], messages=[
        ASK, use, {"role": "assistant", "content": "Let me see."},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny."}]}])
    assert merged.content[0].text == "Sunny too."  # type: ignore[union-attr]
    await oai.close()
    await claude.close()
