"""The OpenAI SDK's whole surface on aigrid, as its users call it: every answer the gateway writes or merges is
checked STRICTLY against the SDK's own type (sdk_strict.strict: the SDK itself builds its objects leniently, so
a missing `created` or a mistyped field would pass unseen), with the ids, object names, finish reasons and usage
the real API gives, and the SDK's exception class, `.code`, `.type` and `.param` for each kind of mistake.

The engines are FAKES that answer as vLLM does (ids, `created`, `model`, logprobs, usage); the gateway's own
answers (its tool loop's chat completions, embeddings, models, files, batches, errors) are what is under test.
Retries on a 429 and Retry-After: tests/gateway/test_retry_semantics.py."""

from __future__ import annotations

import asyncio
import base64
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types import Batch, Completion, CreateEmbeddingResponse, FileDeleted, FileObject, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aigrid.engines.protocol import UpstreamResponse
from aigrid.engines.wrapped import once
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.security.keys import KeyRing
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.batch_helpers import batch_spec, started, stopped, until
from tests.gateway.conftest import _no_sleep, scripted_gateway, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import openai_client
from tests.parity.sdk_strict import needs_mcp_error_objects, sse_data, strict

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Name a colour."}]
WORDS = ("Red", " is", " warm")


class VllmLike(FakeEngine):
    """Chat and legacy completions answered in vLLM's full shape, whole and streamed, with log-probabilities."""

    def __init__(self, name: str) -> None:
        super().__init__(name, WORDS)
        self.gate: asyncio.Event | None = None  # when set, each request waits for it before it is answered

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        if self.gate is not None:
            await self.gate.wait()
        req = orjson.loads(body)
        self.received.append(req)
        chat = path == "/v1/chat/completions"
        if req.get("stream"):
            yield UpstreamResponse(200, {"content-type": "text/event-stream"}, self._events(req, chat))
        else:
            yield UpstreamResponse(200, {"content-type": "application/json"}, once(orjson.dumps(self._whole(req, chat))))

    @staticmethod
    def _head(req: dict, chat: bool) -> dict[str, Any]:
        return {"id": "chatcmpl-9f" if chat else "cmpl-9f", "object": "chat.completion" if chat else "text_completion",
                "created": 1764900000, "model": req["model"]}

    @staticmethod
    def _logprobs(chat: bool) -> dict[str, Any]:
        if chat:
            return {"content": [{"token": w, "logprob": -0.25, "bytes": list(w.encode()),
                                 "top_logprobs": [{"token": w, "logprob": -0.25, "bytes": list(w.encode())}]}
                                for w in WORDS]}
        return {"tokens": list(WORDS), "token_logprobs": [-0.25] * 3, "text_offset": [0, 3, 6],
                "top_logprobs": [{w: -0.25} for w in WORDS]}

    def _whole(self, req: dict, chat: bool) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": "".join(WORDS), "tool_calls": []}
        else:
            choice["text"] = "".join(WORDS)
        if req.get("logprobs"):
            choice["logprobs"] = self._logprobs(chat)
        return {**self._head(req, chat), "choices": [choice],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}

    async def _events(self, req: dict, chat: bool) -> AsyncIterator[bytes]:
        head = {**self._head(req, chat), "object": "chat.completion.chunk" if chat else "text_completion"}
        for i, w in enumerate((*WORDS, "")):
            choice: dict[str, Any] = {"index": 0, "finish_reason": None if w else "stop", "logprobs": None}
            if chat:
                choice["delta"] = {"role": "assistant", "content": w} if i == 0 else ({"content": w} if w else {})
            else:
                choice["text"] = w
            yield b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"
        if (req.get("stream_options") or {}).get("include_usage"):
            yield b"data: " + orjson.dumps({**head, "choices": [], "usage": {
                "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}) + b"\n\n"
        yield b"data: [DONE]\n\n"


class FixedEmbedder:
    """Two-dimensional vectors the test can predict (the real model is tests/agents/test_embeddings.py's)."""

    model = "fixed-embedder"
    dimensions = 2

    async def embed(self, texts: Any) -> tuple[Any, int]:
        import numpy as np

        return np.array([[0.6, 0.8] if i % 2 == 0 else [1.0, 0.0] for i in range(len(texts))], np.float32), 7


@pytest.fixture
async def gw(tmp_path: Path) -> Gateway:
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: VllmLike(e.id) for e in spec.endpoints}, rng=random.Random(7), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    gw.agents.embedders["fixed-embedder"] = FixedEmbedder()
    return gw


@pytest.fixture
async def oai(gw: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai_client(build_app(gw))
    yield client
    await client.close()


async def test_whole_chat_answers_with_n_logprobs_and_a_response_format_are_valid(oai: openai.AsyncOpenAI) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, n=2, logprobs=True, top_logprobs=1, seed=3, max_completion_tokens=16,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": {"type": "object"}}})
    strict(ChatCompletion, raw.http_response.json())
    done = raw.parse()
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-") and done.model == MODEL
    assert [c.index for c in done.choices] == [0, 1] and {c.finish_reason for c in done.choices} == {"stop"}
    assert all(c.logprobs is not None and [t.token for t in c.logprobs.content or []] == list(WORDS)
               for c in done.choices)
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens,
                                       done.usage.total_tokens) == (5, 6, 11)  # the prompt counted once


@pytest.mark.parametrize("n", [1, 2])
async def test_streamed_chat_chunks_are_valid_and_end_with_one_usage_chunk(oai: openai.AsyncOpenAI, n: int) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, n=n, stream=True, stream_options={"include_usage": True})
    chunks = sse_data((await raw.http_response.aread()).decode())
    for c in chunks:
        strict(ChatCompletionChunk, c)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert all(c["id"].startswith("chatcmpl-") for c in chunks)
    texts = {i: "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"] if ch["index"] == i)
             for i in range(n)}
    assert texts == dict.fromkeys(range(n), "".join(WORDS))
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["stop"] * n
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and with_usage[0]["choices"] == []
    assert with_usage[0]["usage"]["completion_tokens"] == 3 * n


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_a_stream_that_did_not_ask_for_usage_gets_no_usage_chunk(gw: Gateway, path: str) -> None:
    """The gateway meters every stream, but a chunk with no choices is sent only to a client that asked for
    it (stream_options.include_usage): a client that indexes choices[0] of every chunk would fail on it."""
    body = {"model": MODEL, "stream": True, "n": 2, **({"messages": ASK} if "chat" in path else {"prompt": "Hi"})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as raw:
        for options in ({}, {"stream_options": {"include_usage": False}}):
            chunks = sse_data((await raw.post(path, json={**body, **options})).text)
            assert chunks and all(c["choices"] and "usage" not in c for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
async def test_legacy_completions_are_valid_text_completions(oai: openai.AsyncOpenAI, stream: bool) -> None:
    if not stream:
        raw = await oai.completions.with_raw_response.create(model=MODEL, prompt="Roses are", max_tokens=8, logprobs=1)
        strict(Completion, raw.http_response.json())
        done = raw.parse()
        assert done.object == "text_completion" and done.id.startswith("cmpl-")
        assert done.choices[0].text == "".join(WORDS) and done.choices[0].finish_reason == "stop"
        assert done.choices[0].logprobs is not None and done.choices[0].logprobs.tokens == list(WORDS)
        return
    raw = await oai.completions.with_raw_response.create(model=MODEL, prompt="Roses are", max_tokens=8, stream=True,
                                                         stream_options={"include_usage": True})
    chunks = sse_data((await raw.http_response.aread()).decode())
    for c in chunks:  # the SDK's type has no null finish_reason, which the API streams before the last piece
        strict(Completion, {**c, "choices": [{**ch, "finish_reason": ch["finish_reason"] or "stop"}
                                             for ch in c["choices"]]})
        assert c["object"] == "text_completion" and c["id"].startswith("cmpl-")
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == "".join(WORDS)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 8


async def test_a_tool_call_the_gateway_decodes_itself_is_a_valid_chat_answer(tmp_path: Path) -> None:
    """The constrained tool mode: the gateway writes the chat completion (and its chunks) itself."""
    engine = ScriptedEngine([])
    client = openai_client(build_app(await scripted_gateway(tmp_path, engine, "constrained")))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    call = {"content": orjson.dumps({"tool": "get_weather", "arguments": {"city": "Paris"}}).decode()}
    engine.replies += [call, call]
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=ASK, tools=[tool])
    strict(ChatCompletion, raw.http_response.json())
    done = raw.parse()
    assert done.id.startswith("chatcmpl-") and done.choices[0].finish_reason == "tool_calls"
    calls = done.choices[0].message.tool_calls or []
    assert [(c.type, c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"})]
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, tools=[tool], stream=True, stream_options={"include_usage": True})
    chunks = sse_data((await raw.http_response.aread()).decode())
    for c in chunks:
        strict(ChatCompletionChunk, c)
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]] == ["tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 15
    await client.close()


WEATHER_FN: Any = {"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALCULATOR_FN: Any = {"type": "function", "name": "calculator"}


def _turns(mode: str, *turns: tuple[str, Any]) -> list[dict[str, Any]]:
    """The engine's replies for `turns` ("call", (tool, arguments)), ("text", text) or ("cut", partial text) as
    the model writes them in `mode`: native tool calls and prose, or the constrained step JSON."""
    out: list[dict[str, Any]] = []
    for kind, what in turns:
        if kind == "call" and mode == "native":
            out.append({"tool_calls": [{"name": what[0], "arguments": what[1]}]})
        elif kind == "call":
            out.append({"content": orjson.dumps({"tool": what[0], "arguments": what[1]}).decode()})
        elif kind == "text":
            out.append({"content": what if mode == "native" else orjson.dumps({"answer": what}).decode()})
        else:
            out.append({"content": what if mode == "native" else '{"answer": "' + what, "finish": "length"})
    return out


RESPONSES_CASES: dict[str, tuple[list[tuple[str, Any]], list[str], str]] = {  # turns, output types, status
    "client call": ([("call", ("get_weather", {"city": "Paris"}))], ["mcp_list_tools", "function_call"], "completed"),
    "grid tool, then text": ([("call", ("calculator", {"expression": "2+2"})), ("text", "It is 4.")],
                             ["mcp_list_tools", "mcp_call", "message"], "completed"),
    "grid tool, then client call": ([("call", ("calculator", {"expression": "2+2"})),
                                     ("call", ("get_weather", {"city": "Paris"}))],
                                    ["mcp_list_tools", "mcp_call", "function_call"], "completed"),
    "cut by max_output_tokens": ([("cut", "Sunny in")], ["mcp_list_tools", "message"], "incomplete"),
    "grid tool failed, then text": ([("call", ("calculator", {"expression": "1/0"})), ("text", "Cannot.")],
                                    ["mcp_list_tools", "mcp_call", "message"], "completed"),
}
"""(The output starts with an mcp_list_tools item of the grid's tools offered, as OpenAI lists an MCP server's tools
when it is first given, whether or not one is called: since the thirty-eighth session; from the thirty-seventh only
before a grid tool's first run.)"""


@pytest.mark.parametrize("mode", ["native", "constrained"])
@pytest.mark.parametrize("case", list(RESPONSES_CASES))
async def test_responses_of_the_agent_paths_are_valid_whole_streamed_and_stored(tmp_path: Path, mode: str,
                                                                             case: str) -> None:
    """The Responses door writes every answer itself (no engine speaks it): each Response, each streamed event and
    each stored item is checked STRICTLY against the SDK's own types, on the paths an agent takes (its own
    function call, the grid's tool run as an `mcp_call`, both in one answer, an answer cut short), whichever way
    the model gets tool calls. The events are numbered 0, 1, ... in order and end with the whole Response."""
    from openai.types.responses import Response, ResponseItem, ResponseStreamEvent

    turns, types, status = RESPONSES_CASES[case]
    if "failed" in case:
        needs_mcp_error_objects()
    engine = ScriptedEngine([])
    client = openai_client(build_app(await scripted_gateway(tmp_path, engine, mode)))
    ask: dict[str, Any] = {"model": MODEL, "input": "Weather in Paris, and 2+2?", "tools": [WEATHER_FN, CALCULATOR_FN]}
    engine.replies[:] = _turns(mode, *turns)
    whole = (await client.responses.with_raw_response.create(**ask)).http_response.json()
    strict(Response, whole)
    assert [o["type"] for o in whole["output"]] == types and whole["status"] == status
    engine.replies[:] = _turns(mode, *turns)
    raw = await client.responses.with_raw_response.create(**ask, stream=True)
    events = sse_data((await raw.http_response.aread()).decode())
    for e in events:
        strict(ResponseStreamEvent, e)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == f"response.{status}" and events[-1]["response"]["status"] == status
    assert [o["type"] for o in events[-1]["response"]["output"]] == types
    ran = "failed" if "failed" in case else "completed"  # a tool run that failed is `failed` (since review RV2)
    # an item is added in progress and done as it ended (an mcp_call too, since the thirty-sixth session: it was added
    # and done whole at once, without OpenAI's response.mcp_call.* events between)
    assert all(e["item"]["status"] == "in_progress" for e in events if e["type"] == "response.output_item.added"
               and e["item"]["type"] != "mcp_list_tools")  # (which has no status, as OpenAI's)
    streamed = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    stored = []
    for rid in (whole["id"], events[-1]["response"]["id"]):
        kept = (await client.responses.with_raw_response.retrieve(rid)).http_response.json()
        strict(Response, kept)
        stored += kept["output"]
        for item in (await client.responses.input_items.with_raw_response.list(rid)).http_response.json()["data"]:
            strict(ResponseItem, item)
    for item in whole["output"] + streamed + events[-1]["response"]["output"] + stored:
        assert item["type"] != "mcp_call" or item["status"] == ran, item
    await client.close()


async def test_a_failed_grid_tool_run_is_an_mcp_call_error_object_and_its_replay_says_the_error(
        tmp_path: Path) -> None:
    """A server-side tool that fails is an `mcp_call` whose `error` is the SDK's McpToolCallError, an object (an
    `mcp_tool_execution_error` holding the tool's text), not a string: until the thirty-fifth session it was the
    text, which the openai SDK's own type refuses. Replayed as input (the item as the SDK hands it back, or a string
    `error` as older SDKs typed it), the model reads the error as the tool's result, not an empty one."""
    from openai.types.responses import Response
    from openai.types.responses.response_output_item import McpCall

    needs_mcp_error_objects()
    engine = ScriptedEngine([])
    client = openai_client(build_app(await scripted_gateway(tmp_path, engine, "constrained")))
    engine.replies[:] = _turns("constrained", ("call", ("calculator", {"expression": "1/0"})), ("text", "Cannot."))
    raw = await client.responses.with_raw_response.create(model=MODEL, input="1/0?", tools=[CALCULATOR_FN])
    strict(Response, raw.http_response.json())
    ran = raw.parse().output[1]  # after the mcp_list_tools item (since the thirty-seventh session)
    assert isinstance(ran, McpCall) and ran.output is None and ran.error is not None
    assert ran.error.model_dump() == {"type": "mcp_tool_execution_error",
                                      "content": [{"type": "text", "text": "error: division by zero"}]}
    said = "calculator result: error: division by zero"
    for replayed in (ran.model_dump(exclude_none=True), {**ran.model_dump(exclude_none=True),
                                                         "error": "error: division by zero"}):
        engine.replies[:] = _turns("constrained", ("text", "It cannot be divided."))
        history: list[Any] = [{"role": "user", "content": "1/0?"}, replayed, {"role": "user", "content": "Why?"}]
        await client.responses.create(model=MODEL, input=history, tools=[CALCULATOR_FN], store=False)
        assert said in orjson.dumps(engine.received[-1]["messages"]).decode()
    # a text block of null (a client's own item) is read as empty, not as the text "None" (since review RV2)
    engine.replies[:] = _turns("constrained", ("text", "Nothing."))
    nothing: Any = {**ran.model_dump(exclude_none=True),
               "error": {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": None}]}}
    await client.responses.create(model=MODEL, input=[{"role": "user", "content": "1/0?"}, nothing],
                                  tools=[CALCULATOR_FN], store=False)
    tool_said = [m for m in engine.received[-1]["messages"] if "calculator result" in str(m.get("content"))]
    assert tool_said and "None" not in orjson.dumps(tool_said).decode(), tool_said
    await client.close()


async def test_embeddings_as_floats_and_as_the_sdks_default_base64_are_the_same_vectors(oai: openai.AsyncOpenAI) -> None:
    raw = await oai.embeddings.with_raw_response.create(model="fixed-embedder", input=["a", "b"], encoding_format="float")
    strict(CreateEmbeddingResponse, raw.http_response.json())
    floats = raw.parse()
    assert floats.object == "list" and [d.object for d in floats.data] == ["embedding"] * 2
    assert [d.index for d in floats.data] == [0, 1] and floats.model == "fixed-embedder"
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 7
    # the SDK asks for base64 when encoding_format is not given, and decodes it to floats
    raw = await oai.embeddings.with_raw_response.create(model="fixed-embedder", input=["a", "b"])
    sent = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(sent, str) and struct.unpack("<2f", base64.b64decode(sent)) == pytest.approx((0.6, 0.8))
    assert [d.embedding for d in raw.parse().data] == [d.embedding for d in floats.data]  # float32 both ways
    strict(CreateEmbeddingResponse, {**raw.http_response.json(), "data": [d.model_dump() for d in raw.parse().data]})


async def test_models_are_listed_and_retrieved_as_valid_models(oai: openai.AsyncOpenAI) -> None:
    raw = await oai.models.with_raw_response.list()
    page = raw.http_response.json()
    assert page["object"] == "list"
    for m in page["data"]:
        strict(Model, m)
    ids = [m.id async for m in oai.models.list()]
    assert MODEL in ids and "auto" in ids and len(ids) == len(set(ids))
    raw_one = await oai.models.with_raw_response.retrieve(MODEL)
    strict(Model, raw_one.http_response.json())
    one = raw_one.parse()
    assert (one.id, one.object, one.owned_by) == (MODEL, "model", "aigrid")


async def test_files_and_batches_through_their_whole_lifecycle_are_valid_objects(tmp_path: Path) -> None:
    spec = batch_spec(tmp_path)
    engines = {e.id: VllmLike(e.id) for e in spec.endpoints}
    gw = await started(spec, engines)  # type: ignore[arg-type]
    oai = openai_client(build_app(gw))
    try:
        data = b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                      "body": {"model": MODEL, "messages": ASK, "max_tokens": 8}}) + b"\n"
                        for i in range(2))
        raw = await oai.files.with_raw_response.create(file=("in.jsonl", data), purpose="batch")
        strict(FileObject, raw.http_response.json())
        f = raw.parse()
        assert f.id.startswith("file-") and (f.object, f.purpose, f.bytes, f.filename) == (
            "file", "batch", len(data), "in.jsonl")
        strict(FileObject, (await oai.files.with_raw_response.retrieve(f.id)).http_response.json())
        listed = (await oai.files.with_raw_response.list()).http_response.json()
        assert listed["object"] == "list" and [x["id"] for x in listed["data"]] == [f.id]
        for x in listed["data"]:
            strict(FileObject, x)
        assert (await oai.files.content(f.id)).content == data

        raw_b = await oai.batches.with_raw_response.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                           completion_window="24h", metadata={"run": "1"})
        strict(Batch, raw_b.http_response.json())
        b = raw_b.parse()
        assert b.id.startswith("batch_") and b.object == "batch" and b.metadata == {"run": "1"}
        done = await until(oai, b.id, "completed")
        strict(Batch, (await oai.batches.with_raw_response.retrieve(b.id)).http_response.json())
        assert done.request_counts is not None and (done.request_counts.total, done.request_counts.completed) == (2, 2)
        assert done.completed_at is not None and done.output_file_id is not None and done.error_file_id is None
        out = [orjson.loads(x) for x in (await oai.files.content(done.output_file_id)).content.splitlines()]
        assert sorted(x["custom_id"] for x in out) == ["r0", "r1"]
        for x in out:
            assert x["id"].startswith("batch_req_") and x["error"] is None and x["response"]["status_code"] == 200
            strict(ChatCompletion, x["response"]["body"])
        for x in (await oai.batches.with_raw_response.list()).http_response.json()["data"]:
            strict(Batch, x)

        # the second batch's requests wait at the engines until it is cancelled: a batch that completed first could
        # not be cancelled (a 400), which on a busy machine the test once met
        gate = asyncio.Event()
        for engine in engines.values():
            engine.gate = gate
        second = await oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        raw_c = await oai.batches.with_raw_response.cancel(second.id)
        strict(Batch, raw_c.http_response.json())
        assert raw_c.parse().status in ("cancelling", "cancelled")
        gate.set()
        assert (await until(oai, second.id, "cancelled", "completed")).status == "cancelled"
        raw_d = await oai.files.with_raw_response.delete(f.id)
        strict(FileDeleted, raw_d.http_response.json())
        assert (raw_d.parse().id, raw_d.parse().object, raw_d.parse().deleted) == (f.id, "file", True)
    finally:
        await oai.close()
        await stopped(gw)


async def _refused(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        await call
    return info.value


CASES = [
    ("chat, unknown model", lambda c: c.chat.completions.create(model="nope", messages=ASK),
     openai.NotFoundError, 404, "model_not_found", "invalid_request_error", "model"),
    ("chat, field out of range", lambda c: c.chat.completions.create(model=MODEL, messages=ASK, temperature=3),
     openai.BadRequestError, 400, "invalid_request", "invalid_request_error", "temperature"),
    ("chat, bad message role", lambda c: c.chat.completions.create(model=MODEL, messages=[{"role": "x", "content": "y"}]),
     openai.BadRequestError, 400, "invalid_request", "invalid_request_error", "messages[0].role"),
    ("embeddings, unknown model", lambda c: c.embeddings.create(model="nope", input="x"),
     openai.NotFoundError, 404, "model_not_found", "invalid_request_error", "model"),
    ("embeddings, token arrays", lambda c: c.embeddings.create(model="fixed-embedder", input=[[1, 2]]),
     openai.BadRequestError, 400, "invalid_request", "invalid_request_error", "input[0]"),
    ("models, unknown", lambda c: c.models.retrieve("nope"),
     openai.NotFoundError, 404, "model_not_found", "invalid_request_error", "model"),
    ("files, unknown", lambda c: c.files.retrieve("file-nope"),
     openai.NotFoundError, 404, "not_found", "invalid_request_error", "file_id"),
    ("batches, unknown", lambda c: c.batches.retrieve("batch_nope"),
     openai.NotFoundError, 404, "not_found", "invalid_request_error", "batch_id"),
    ("batches, window", lambda c: c.batches.create(input_file_id="file-x", endpoint="/v1/chat/completions",
                                                   completion_window="1h"),  # type: ignore[arg-type]
     openai.BadRequestError, 400, "invalid_request", "invalid_request_error", "completion_window"),
    ("a route not served", lambda c: c.images.generate(prompt="x"),
     openai.NotFoundError, 404, "not_found", "invalid_request_error", None),
]


@pytest.mark.parametrize(("what", "call", "cls", "status", "code", "typ", "param"), CASES, ids=[c[0] for c in CASES])
async def test_each_mistake_is_the_sdks_exception_with_code_type_and_param(
        oai: openai.AsyncOpenAI, what: str, call: Any, cls: type, status: int, code: str, typ: str,
        param: str | None) -> None:
    err = await _refused(call(oai))
    assert type(err) is cls and err.status_code == status
    assert (err.code, err.type, err.param) == (code, typ, param)
    assert err.request_id and err.response.headers["x-should-retry"] == "false"
    body = err.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}


async def test_a_missing_or_bad_key_is_the_sdks_authentication_error(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", "test-secret-0123456789abcdef")
    KeyRing(b"test-secret-0123456789abcdef").save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    gw = build_gateway(spec, {e.id: VllmLike(e.id) for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    client = openai_client(build_app(gw))
    for call in (client.chat.completions.create(model=MODEL, messages=ASK), client.models.list(),
                 client.files.list(), client.embeddings.create(model="x", input="y")):
        err = await _refused(call)
        assert type(err) is openai.AuthenticationError and err.status_code == 401
        assert err.type == "authentication_error" and err.code is not None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as raw:
        r = await raw.get("/v1/models")
        assert r.status_code == 401 and "www-authenticate" in r.headers
    await client.close()
