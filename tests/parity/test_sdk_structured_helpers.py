"""The official SDKs' structured-output helpers through the gateway, each asserting the object the helper parses:
openai `chat.completions.parse`/`stream(response_format=Model)` (`content.done`'s `parsed`), `responses.stream`
with `text_format=Model` and with pydantic function tools (`parsed_arguments`), anthropic `messages.parse`,
`messages.stream(output_format=Model)` and the beta's top-level `output_format`, and the Anthropic stream helper's
snapshots (`current_message_snapshot`, the `text` and `input_json` events' accumulated `snapshot`). A SCRIPTED
engine answers what a model decoding under the schema's grammar would write; what the engine was asked for (the
chat `response_format`) is read back. `responses.parse` and `chat.completions.parse` whole: test_responses_api.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pydantic

from aigrid.gateway.app import build_app
from tests.agents.json_refs import Owner, Pet, unresolved
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import openai_client
from tests.parity.sdk_strict import needs

MODEL = "smollm2-135m"
HI: Any = [{"role": "user", "content": "Ada is 36."}]
ADA = {"content": '{"name":"Ada","age":36}'}


class Person(pydantic.BaseModel):
    name: str
    age: int


Clients = tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic, ScriptedEngine]


def _schema_asked(engine: ScriptedEngine) -> dict[str, Any]:
    """The JSON schema the last chat call to the engine asked it to decode under (strict)."""
    fmt = engine.received[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema: dict[str, Any] = fmt["json_schema"]["schema"]
    return schema


async def test_the_chat_stream_helper_parses_its_response_format(native: Clients) -> None:
    oai, _, engine = native
    engine.replies.append(ADA)
    async with oai.chat.completions.stream(model=MODEL, messages=HI, response_format=Person) as s:
        done = [e async for e in s if e.type == "content.done"]
        final = await s.get_final_completion()
    assert [e.parsed for e in done] == [Person(name="Ada", age=36)]
    assert final.choices[0].message.parsed == Person(name="Ada", age=36)
    assert _schema_asked(engine)["required"] == ["name", "age"]


async def test_the_responses_stream_helper_parses_its_text_format_and_its_pydantic_tools(native: Clients) -> None:
    oai, _, engine = native
    engine.replies += [ADA, {"tool_calls": [{"name": "Person", "arguments": {"name": "Bob", "age": 3}}]}]
    async with oai.responses.stream(model=MODEL, input="Ada is 36.", text_format=Person) as s:
        texts = [e async for e in s if e.type == "response.output_text.done"]
        final = await s.get_final_response()
    assert [t.text for t in texts] == [ADA["content"]] and final.output_parsed == Person(name="Ada", age=36)
    assert _schema_asked(engine)["properties"].keys() == {"name", "age"}
    tool = needs(openai, "pydantic_function_tool")(Person)
    async with oai.responses.stream(model=MODEL, input="Bob is 3.", tools=[tool]) as s:
        done = [e async for e in s if e.type == "response.function_call_arguments.done"]
        called = await s.get_final_response()
    assert [orjson.loads(d.arguments) for d in done] == [{"name": "Bob", "age": 3}]
    assert [(o.type, o.parsed_arguments) for o in called.output] == [  # type: ignore[union-attr]
        ("function_call", Person(name="Bob", age=3))]
    assert [t["function"]["name"] for t in engine.received[-1]["tools"]] == ["Person"]


async def test_anthropic_parse_and_stream_give_the_parsed_output(native: Clients) -> None:
    _, claude, engine = native
    engine.replies += [ADA] * 3
    parse = needs(claude, "messages", "parse")
    whole = await parse(model=MODEL, max_tokens=64, messages=HI, output_format=Person)
    assert whole.parsed_output == Person(name="Ada", age=36) and whole.stop_reason == "end_turn"
    assert _schema_asked(engine)["additionalProperties"] is False
    async with claude.messages.stream(model=MODEL, max_tokens=64, messages=HI,
                                      output_format=Person) as s:
        texts = [e.snapshot async for e in s if e.type == "text"]
        final = await s.get_final_message()
    assert texts[-1] == ADA["content"] and final.parsed_output == Person(name="Ada", age=36)
    assert s.current_message_snapshot.content[0].parsed_output == Person(name="Ada", age=36)  # type: ignore[union-attr]
    beta = await needs(claude, "beta", "messages", "parse")(model=MODEL, max_tokens=64, messages=HI,
                                                            output_format=Person)
    assert beta.parsed_output == Person(name="Ada", age=36)
    assert _schema_asked(engine)["required"] == ["name", "age"]  # the beta's top-level output_format, asked alike


async def test_the_anthropic_stream_helper_snapshots_text_then_a_tool_call(native: Clients) -> None:
    _, claude, engine = native
    engine.replies.append({"content": "Let me see.", "tool_calls": [{"name": "get_weather",
                                                                     "arguments": {"city": "Paris"}}]})
    weather = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    async with claude.messages.stream(model=MODEL, max_tokens=64, messages=HI, tools=[weather]) as s:  # type: ignore[list-item]
        seen: list[tuple[str, Any]] = []
        async for e in s:
            if e.type == "text":
                seen.append(("text", e.snapshot))
            elif e.type == "input_json":
                seen.append(("input_json", e.snapshot))
        snapshot = s.current_message_snapshot
        final = await s.get_final_message()
    texts = [v for k, v in seen if k == "text"]
    jsons = [v for k, v in seen if k == "input_json"]
    assert texts[-1] == "Let me see." and all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert jsons[-1] == {"city": "Paris"} and len(jsons) > 1  # each piece's partial JSON, parsed so far
    assert [k for k, _ in seen] == ["text"] * len(texts) + ["input_json"] * len(jsons)
    assert snapshot == final and final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [("text", None),
                                                                           ("tool_use", {"city": "Paris"})]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 5)


ANN = {"name": "Ann", "pets": [{"kind": "cat", "name": "Tom"}]}


async def test_nested_pydantic_models_reach_a_constrained_turn_with_every_ref_resolvable(tmp_path: Path) -> None:
    """The demo's model decodes tool calls under the gateway's own grammar (`tool_calls: constrained`): a pydantic
    tool or response format with a nested model (`$defs`) was embedded with refs to a root `$defs` that the step
    schema did not have, which llama.cpp refuses (agents/schema_refs.py)."""
    engine = ScriptedEngine([{"content": orjson.dumps({"tool": "Owner", "arguments": ANN}).decode()},
                             {"content": orjson.dumps({"answer": ANN}).decode()}])
    oai = openai_client(build_app(await scripted_gateway(tmp_path, engine, "constrained")))
    try:
        called = await oai.chat.completions.parse(model=MODEL, messages=HI, tools=[openai.pydantic_function_tool(Owner)])
        assert unresolved(engine.received[-1]["response_format"]["json_schema"]["schema"]) == []
        answered = await oai.chat.completions.parse(model=MODEL, messages=HI, response_format=Owner,
                                                    tools=[openai.pydantic_function_tool(Pet)])
        assert unresolved(engine.received[-1]["response_format"]["json_schema"]["schema"]) == []
    finally:
        await oai.close()
    calls = called.choices[0].message.tool_calls or []
    assert [c.function.parsed_arguments for c in calls] == [Owner.model_validate(ANN)]
    assert answered.choices[0].message.parsed == Owner.model_validate(ANN)
