"""The official SDKs' helpers and the calls the surface tests (test_openai_sdk_surface.py,
test_anthropic_sdk_surface.py) leave out, as a platform's users call them: the stream helpers and their final
objects (`chat.completions.stream`, `messages.stream`, `text_stream`), parallel tool calls streamed and read back
into pydantic models, Anthropic's tool round trip and its beta namespace (`?beta=true`), the auto-paging lists
(`limit=1`), `responses.input_tokens.count`, and the SDK's exception class for what the grid refuses. FAKE and
SCRIPTED engines (the same calls were also walked by hand on `aigrid up` with a real llama.cpp engine)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pydantic
import pytest
from anthropic.types import ModelInfo
from openai.types import Completion, Model

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import Gateway, build_app, build_gateway
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.batch_helpers import batch_spec, engines_for, started, stopped
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import anthropic_client, openai_client
from tests.parity.sdk_strict import needs, sse_data, strict

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "Hi"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_A = {"name": "get_weather", "description": "Weather in a city", "input_schema": CITY}
TWO_CALLS = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                            {"name": "get_weather", "arguments": {"city": "Rome"}}]}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAIAAAUAAarVyFEAAAAASUVORK5CYII="


class City(pydantic.BaseModel):
    city: str


@pytest.fixture
async def clients(gateway: Gateway) -> AsyncIterator[tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]]:
    app = build_app(gateway)
    oai, claude = openai_client(app), anthropic_client(app)
    yield oai, claude
    await oai.close()
    await claude.close()


async def test_the_chat_stream_helper_gives_its_events_and_final_completion(
        clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]) -> None:
    oai, _ = clients
    async with oai.chat.completions.stream(model=MODEL, messages=HI, max_tokens=8,  # type: ignore[arg-type]
                                           stream_options={"include_usage": True}) as s:
        kinds = [e.type async for e in s]
        final = await s.get_final_completion()
    assert "content.delta" in kinds and "content.done" in kinds and kinds[-1] == "chunk"  # the usage chunk
    assert final.choices[0].message.content == "Hello from the grid" and final.choices[0].finish_reason == "stop"
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (5, 4)
    async with oai.chat.completions.stream(model=MODEL, messages=HI, n=2) as s:  # type: ignore[arg-type]
        both = await s.get_final_completion()
    assert [c.message.content for c in both.choices] == ["Hello from the grid"] * 2


async def test_parallel_tool_calls_streamed_come_back_whole_and_as_pydantic_models(
        native: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic, ScriptedEngine]) -> None:
    oai, claude, engine = native
    engine.replies += [TWO_CALLS] * 2
    tool = openai.pydantic_function_tool(City, name="get_weather")
    async with oai.chat.completions.stream(model=MODEL, messages=HI, tools=[tool],  # type: ignore[arg-type]
                                           parallel_tool_calls=True) as s:
        kinds = {e.type async for e in s}
        final = await s.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds and final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.parsed_arguments) for c in calls] == [
        ("call_0", "get_weather", City(city="Paris")), ("call_1", "get_weather", City(city="Rome"))]
    async with claude.messages.stream(model=MODEL, max_tokens=64, tools=[WEATHER_A],  # type: ignore[list-item]
                                      messages=HI) as a:  # type: ignore[arg-type]
        msg = await a.get_final_message()
    assert msg.stop_reason == "tool_use"
    assert [(b.type, b.input) for b in msg.content] == [  # type: ignore[union-attr]
        ("tool_use", {"city": "Paris"}), ("tool_use", {"city": "Rome"})]
    # the round trip: the tool_use blocks and their tool_result blocks reach the engine as chat tool calls
    engine.replies.append({"content": "Sunny in both."})
    uses = [b for b in msg.content if b.type == "tool_use"]
    answer = await claude.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER_A], messages=[  # type: ignore[list-item]
        *HI, {"role": "assistant", "content": msg.content},  # type: ignore[list-item]
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "sunny"} for u in uses]}])
    assert answer.content[0].text == "Sunny in both." and answer.stop_reason == "end_turn"  # type: ignore[union-attr]
    sent = engine.received[-1]["messages"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == [u.id for u in uses]
    assert [(m["role"], m["tool_call_id"], m["content"]) for m in sent[2:]] == [
        ("tool", u.id, "sunny") for u in uses]


async def test_the_messages_stream_helper_and_the_beta_namespace(
        clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]) -> None:
    _, claude = clients
    system = [{"type": "text", "text": "Be brief."}]
    async with claude.messages.stream(model=MODEL, max_tokens=16, system=system, messages=HI) as s:  # type: ignore[arg-type]
        pieces = [t async for t in s.text_stream]
        msg = await s.get_final_message()
    assert pieces == ["Hello", " from", " the", " grid"] and msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (5, 4)
    betas = ["token-efficient-tools-2025-02-19"]
    beta = await claude.beta.messages.create(model=MODEL, max_tokens=8, messages=HI, betas=betas)  # type: ignore[arg-type]
    assert beta.content[0].text == "Hello from the grid" and beta.id.startswith("msg_")  # type: ignore[union-attr]
    async with claude.beta.messages.stream(model=MODEL, max_tokens=8, messages=HI, betas=betas) as b:  # type: ignore[arg-type]
        assert await b.get_final_text() == "Hello from the grid"
    assert (await claude.beta.messages.count_tokens(model=MODEL, messages=HI)).input_tokens > 0  # type: ignore[arg-type]


async def test_lists_auto_page_with_limit_1(tmp_path: Path) -> None:
    gw = await started(batch_spec(tmp_path), engines_for(tmp_path))
    app = build_app(gw)
    oai, claude = openai_client(app), anthropic_client(app)
    try:
        line = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                             "body": {"model": MODEL, "messages": HI, "max_tokens": 4}}) + b"\n"
        files = [await oai.files.create(file=(f"in{i}.jsonl", line), purpose="batch") for i in range(3)]
        assert {f.id async for f in oai.files.list(limit=1)} == {f.id for f in files}
        made = {(await oai.batches.create(input_file_id=files[0].id, endpoint="/v1/chat/completions",
                                          completion_window="24h")).id for _ in range(3)}
        assert {b.id async for b in oai.batches.list(limit=1)} == made
        requests = [{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 4, "messages": HI}}]
        sent = {(await claude.messages.batches.create(requests=requests)).id for _ in range(3)}  # type: ignore[arg-type]
        assert {b.id async for b in claude.messages.batches.list(limit=1)} == sent
        models = [m.id async for m in claude.models.list(limit=1)]
        assert MODEL in models and len(models) == len(set(models)) > 1
        conv = await oai.conversations.create(items=[{"type": "message", "role": "user", "content": f"m{i}"}
                                                     for i in range(5)])
        assert len({i.id async for i in oai.conversations.items.list(conv.id, limit=2)}) == 5
    finally:
        await oai.close()
        await claude.close()
        await stopped(gw)


async def test_responses_input_tokens_are_counted(clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]) -> None:
    oai, _ = clients
    counted = await needs(oai, "responses", "input_tokens", "count")(model=MODEL, input="Hi", instructions="Be brief.")
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0


IMAGE_A = [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                    "data": PNG}}, {"type": "text", "text": "?"}]}]
IMAGE_O = [{"role": "user", "content": [{"type": "text", "text": "?"},
                                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]


async def _openai_stream_helper(oai: openai.AsyncOpenAI) -> Any:
    async with oai.chat.completions.stream(model="nope", messages=HI) as s:  # type: ignore[arg-type]
        return await s.get_final_completion()


async def _anthropic_stream_helper(claude: anthropic.AsyncAnthropic) -> Any:
    async with claude.messages.stream(model="nope", max_tokens=8, messages=HI) as s:  # type: ignore[arg-type]
        return await s.get_final_message()


async def _cancel_a_foreground_response(oai: openai.AsyncOpenAI) -> Any:
    done = await oai.responses.create(model=MODEL, input="Hi", max_output_tokens=8)
    return await oai.responses.cancel(done.id)


OPENAI_REFUSED = [
    ("stream helper, unknown model", _openai_stream_helper, openai.NotFoundError, "model"),
    ("an image to a model without vision", lambda c: c.chat.completions.create(model=MODEL, messages=IMAGE_O),
     openai.BadRequestError, "messages[0].content[1]"),
    ("cancel a foreground response", _cancel_a_foreground_response, openai.BadRequestError, None),
    ("tool_choice without tools", lambda c: c.chat.completions.create(model=MODEL, messages=HI, tool_choice="required"),
     openai.BadRequestError, "tool_choice"),
]


@pytest.mark.parametrize(("what", "call", "cls", "param"), OPENAI_REFUSED, ids=[c[0] for c in OPENAI_REFUSED])
async def test_what_the_grid_refuses_is_the_openai_sdks_exception(
        clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic], what: str, call: Any, cls: type,
        param: str | None) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await call(clients[0])
    assert type(info.value) is cls and info.value.status_code in (400, 404) and info.value.request_id
    if param is not None:
        assert info.value.param == param


ANTHROPIC_REFUSED = [
    ("stream helper, unknown model", _anthropic_stream_helper, anthropic.NotFoundError, "not_found_error"),
    ("an image to a model without vision", lambda c: c.messages.create(model=MODEL, max_tokens=8, messages=IMAGE_A),
     anthropic.BadRequestError, "invalid_request_error"),
    ("a user turn with no content", lambda c: c.messages.create(model=MODEL, max_tokens=8,
                                                                messages=[{"role": "user", "content": []}]),
     anthropic.BadRequestError, "invalid_request_error"),
]


@pytest.mark.parametrize(("what", "call", "cls", "typ"), ANTHROPIC_REFUSED, ids=[c[0] for c in ANTHROPIC_REFUSED])
async def test_what_the_grid_refuses_is_the_anthropic_sdks_exception(
        clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic], what: str, call: Any, cls: type,
        typ: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        await call(clients[1])
    err = info.value
    assert type(err) is cls and err.response.json()["error"]["type"] == typ and err.request_id


class LlamaCompletions(FakeEngine):
    """llama-server's legacy completions streamed: a new `cmpl-` id per request, and the usage on the chunk
    that carries the finish_reason (no chunk of its own), as seen on `make run`'s engine."""

    seen = 0

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        req = orjson.loads(body)
        LlamaCompletions.seen += 1
        head = {"id": f"cmpl-{LlamaCompletions.seen}", "object": "text_completion", "created": 1764900000,
                "model": req["model"]}

        async def events() -> AsyncIterator[bytes]:
            for w in self.words:
                yield b"data: " + orjson.dumps({**head, "choices": [
                    {"index": 0, "text": w, "logprobs": None, "finish_reason": None}]}) + b"\n\n"
            yield b"data: " + orjson.dumps({**head, "choices": [
                {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        yield UpstreamResponse(200, {"content-type": "text/event-stream"}, events())


async def test_a_legacy_stream_of_two_choices_is_one_completion_with_one_id(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: LlamaCompletions(e.id) for e in spec.endpoints}, rng=random.Random(7),
                       sleep=_no_sleep)
    await gw.scraper.scrape_once()
    oai = openai_client(build_app(gw))
    try:
        raw = await oai.completions.with_raw_response.create(model=MODEL, prompt="Roses are", n=2, max_tokens=4,
                                                             stream=True, stream_options={"include_usage": True})
        chunks = sse_data((await raw.http_response.aread()).decode())
    finally:
        await oai.close()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert len({c.get("id") for c in chunks}) == 1  # OpenAI streams one completion, every chunk its id
    for c in chunks:  # the SDK's type has no null finish_reason, which the API streams before the last piece
        strict(Completion, {**c, "choices": [{**ch, "finish_reason": ch["finish_reason"] or "stop"}
                                             for ch in c["choices"]]})


async def test_a_family_name_the_model_calls_take_is_retrieved_too(
        clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]) -> None:
    """`model: "smollm2"` (a model's family, docs/quickstart.md) is served by every model call, but both SDKs'
    `models.retrieve("smollm2")` was a 404 `model_not_found`, though the chat call's own 404 lists it."""
    oai, claude = clients
    done = await oai.chat.completions.create(model="smollm2", messages=HI)  # type: ignore[arg-type]
    assert done.choices[0].message.content == "Hello from the grid"
    raw = await oai.models.with_raw_response.retrieve("smollm2")
    strict(Model, raw.http_response.json())
    strict(ModelInfo, raw.http_response.json())
    family = raw.parse()
    assert (family.id, family.object, family.owned_by) == ("smollm2", "model", "aigrid")
    assert family.model_extra is not None and (family.model_extra["kind"], family.model_extra["models"]) == (
        "chat", ["smollm2-135m"])
    info = await claude.models.retrieve("smollm2")
    assert (info.id, info.type, info.lifecycle, info.max_tokens) == ("smollm2", "model", "active", 4096)
    assert [m.id async for m in oai.models.list()] == ["smollm2-135m", "auto", "all-minilm-l6-v2"]  # models only
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("smollm")


WEATHER_R = {"type": "function", "name": "get_weather", "parameters": CITY}


async def test_a_turn_of_text_and_a_call_fed_back_is_one_assistant_message(
        native: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic, ScriptedEngine]) -> None:
    """A model turn with text and a tool call is a `message` and a `function_call` item; fed back (stateless,
    `store: false`, the output appended to the input, as agents such as Codex replay it; or by
    previous_response_id) they reached the engine as two assistant messages in a row, which chat templates that
    make roles alternate (Gemma, Mistral) refuse, and unlike the one message the model wrote."""
    oai, _, engine = native
    engine.replies += [{"content": "Let me check.", "tool_calls": [{"name": "get_weather",
                                                                    "arguments": {"city": "Paris"}}]},
                       {"content": "Sunny."}] * 2
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    first = await oai.responses.create(model=MODEL, input=ask, tools=[WEATHER_R], store=False)  # type: ignore[arg-type]
    assert [o.type for o in first.output] == ["message", "function_call"]
    call = first.output[1]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}  # type: ignore[union-attr]
    replay = [*ask, *(o.model_dump(exclude_none=True) for o in first.output), result]
    await oai.responses.create(model=MODEL, input=replay, tools=[WEATHER_R], store=False)  # type: ignore[arg-type]
    stored = await oai.responses.create(model=MODEL, input=ask, tools=[WEATHER_R])  # type: ignore[arg-type]
    await oai.responses.create(model=MODEL, previous_response_id=stored.id, tools=[WEATHER_R],  # type: ignore[arg-type]
                               input=[{**result, "call_id": stored.output[1].call_id}])  # type: ignore[union-attr]
    for sent in (engine.received[1]["messages"], engine.received[3]["messages"]):
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[1]["content"] == "Let me check." and [c["function"]["name"] for c in sent[1]["tool_calls"]] == [
            "get_weather"]
