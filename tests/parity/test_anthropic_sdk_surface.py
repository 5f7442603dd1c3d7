"""The Anthropic SDK's whole surface on aigrid, as its users call it: every object the gateway writes (it
translates every answer from the engines' chat completions) is checked STRICTLY against the SDK's own type
(sdk_strict.strict), with the ids, object types, stop reasons and usage the real API gives, and the SDK's
exception class and Anthropic's error type for each kind of mistake. FAKE engines (tests/gateway/fake_engine.py)
and a SCRIPTED one for tool calls; retries on a 429: tests/gateway/test_retry_semantics.py."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import Message, MessageTokensCount, ModelInfo, RawMessageStreamEvent
from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse
from starlette.requests import Request
from starlette.routing import Route

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.security.keys import KeyRing
from aigrid.spec.load import load_spec
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.batch_helpers import batch_spec, engines_for, open_gates, started, stopped
from tests.gateway.conftest import DEMO, _no_sleep, scripted_gateway, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.message_batch_helpers import until_ended
from tests.gateway.sdk_clients import anthropic_client
from tests.parity.sdk_strict import needs, parsed, sse_data, strict

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "Hi"}]
SYSTEM = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
async def claude(gateway: Gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic_client(build_app(gateway))
    yield client
    await client.close()


def stream_events(text: str) -> list[dict[str, Any]]:
    events = sse_data(text)
    for ev in events:
        if ev["type"] != "ping":  # the SDK's union has no ping; it skips them
            strict(RawMessageStreamEvent, ev)
    return events


async def test_a_whole_message_with_system_blocks_and_a_matched_stop_sequence_is_valid(
        claude: anthropic.AsyncAnthropic, fakes: dict[str, FakeEngine]) -> None:
    for f in fakes.values():
        f.stop_reason = "END"  # vLLM names the stop string that ended the answer
    raw = await claude.messages.with_raw_response.create(model=MODEL, max_tokens=32, system=SYSTEM,  # type: ignore[arg-type]
                                                         stop_sequences=["END"], messages=HI)
    strict(Message, raw.http_response.json())
    msg = await parsed(raw)
    assert msg.id.startswith("msg_") and (msg.type, msg.role, msg.model) == ("message", "assistant", MODEL)
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "Hello from the grid"  # type: ignore[union-attr]
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "END")
    assert (msg.usage.input_tokens, msg.usage.output_tokens, msg.usage.cache_read_input_tokens) == (5, 4, 0)
    assert raw.http_response.headers["request-id"] == msg._request_id


async def test_a_streamed_message_is_anthropics_event_sequence_of_valid_events(
        claude: anthropic.AsyncAnthropic, fakes: dict[str, FakeEngine]) -> None:
    for f in fakes.values():
        f.stop_reason = "END"
    raw = await claude.messages.with_raw_response.create(model=MODEL, max_tokens=32, system=SYSTEM,  # type: ignore[arg-type]
                                                         stop_sequences=["END"], messages=HI, stream=True)
    events = stream_events((await raw.http_response.aread()).decode())
    kinds = [ev["type"] for ev in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"] and kinds[-2:] == ["message_delta",
                                                                                          "message_stop"]
    assert events[0]["message"]["id"].startswith("msg_") and events[0]["message"]["content"] == []
    assert "".join(ev["delta"]["text"] for ev in events if ev["type"] == "content_block_delta") == "Hello from the grid"
    delta = events[-2]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert delta["usage"]["output_tokens"] == 4
    async with claude.messages.stream(model=MODEL, max_tokens=32, messages=HI, stop_sequences=["END"]) as s:
        final = await s.get_final_message()
    assert (final.stop_reason, final.stop_sequence, final.usage.input_tokens, final.usage.output_tokens) == (
        "stop_sequence", "END", 5, 4)


@pytest.mark.parametrize("mode", ["native", "constrained"])
async def test_a_tool_use_whole_and_streamed_is_valid(tmp_path: Path, mode: str) -> None:
    call = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    if mode == "constrained":
        call = {"content": orjson.dumps({"tool": "get_weather", "arguments": {"city": "Paris"}}).decode()}
    engine = ScriptedEngine([call, call, call])
    client = anthropic_client(build_app(await scripted_gateway(tmp_path, engine, mode)))
    try:
        kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "tools": [WEATHER], "messages": HI,
                                  "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}
        raw = await client.messages.with_raw_response.create(**kwargs)
        strict(Message, raw.http_response.json())
        msg = await parsed(raw)
        assert msg.stop_reason == "tool_use" and [(b.type, b.name, b.input) for b in msg.content] == [  # type: ignore[union-attr]
            ("tool_use", "get_weather", {"city": "Paris"})]
        raw = await client.messages.with_raw_response.create(**kwargs, stream=True)
        events = stream_events((await raw.http_response.aread()).decode())
        starts = [ev["content_block"] for ev in events if ev["type"] == "content_block_start"]
        assert [(b["type"], b["name"], b["input"]) for b in starts] == [("tool_use", "get_weather", {})]
        assert {ev["delta"]["type"] for ev in events if ev["type"] == "content_block_delta"} == {"input_json_delta"}
        assert events[-2]["delta"]["stop_reason"] == "tool_use"
        async with client.messages.stream(**kwargs) as s:
            final = await s.get_final_message()
        assert [(b.type, b.input) for b in final.content] == [("tool_use", {"city": "Paris"})]  # type: ignore[union-attr]
    finally:
        await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_0_pre_warms_the_prompt_and_answers_nothing(
        claude: anthropic.AsyncAnthropic, fakes: dict[str, FakeEngine], stream: bool) -> None:
    """The SDK's `max_tokens`: "Set to 0 to populate the prompt cache without generating a response". It was a
    400 (`max_tokens` >= 1). The engine reads the prompt and writes one token, which is not answered."""
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 0, "system": SYSTEM, "messages": HI}
    raw = await claude.messages.with_raw_response.create(**kwargs, stream=stream)
    if stream:
        events = stream_events((await raw.http_response.aread()).decode())
        assert [ev["type"] for ev in events] == ["message_start", "ping", "message_delta", "message_stop"]
        assert events[2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    else:
        strict(Message, raw.http_response.json())
        msg = await parsed(raw)
        assert (msg.content, msg.stop_reason, msg.stop_sequence) == ([], "max_tokens", None)
        assert msg.usage.input_tokens == 5  # the engine's count of the prompt it read
    sent = [r for f in fakes.values() for r in f.received]
    assert len(sent) == 1 and sent[0]["max_tokens"] == 1
    assert sent[0]["messages"] == [{"role": "system", "content": "Be brief."}, *HI]


async def test_count_tokens_and_models_are_valid(claude: anthropic.AsyncAnthropic) -> None:
    raw = await claude.messages.with_raw_response.count_tokens(model=MODEL, system=SYSTEM, tools=[WEATHER],  # type: ignore[arg-type]
                                                               messages=HI)
    strict(MessageTokensCount, raw.http_response.json())
    assert (await parsed(raw)).input_tokens > 0
    page = (await claude.models.with_raw_response.list()).http_response.json()
    assert set(page) >= {"data", "has_more", "first_id", "last_id"} and page["has_more"] is False
    for m in page["data"]:
        strict(ModelInfo, m)
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
    one = await claude.models.with_raw_response.retrieve(MODEL)
    strict(ModelInfo, one.http_response.json())
    info = await parsed(one)
    assert (info.id, info.type) == (MODEL, "model")


async def test_message_batches_through_their_whole_lifecycle_are_valid_objects(tmp_path: Path) -> None:
    engines = engines_for(tmp_path)
    gw = await started(batch_spec(tmp_path), engines)
    claude = anthropic_client(build_app(gw))
    try:
        requests = [{"custom_id": cid, "params": {"model": MODEL, "max_tokens": 16, "messages": HI}}
                    for cid in ("a", "b")]
        raw = await claude.messages.batches.with_raw_response.create(requests=requests)  # type: ignore[arg-type]
        strict(MessageBatch, raw.http_response.json())
        batch = await parsed(raw)
        assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
        ended = await until_ended(claude, batch.id)
        strict(MessageBatch, (await claude.messages.batches.with_raw_response.retrieve(batch.id)).http_response.json())
        assert (ended.request_counts.succeeded, ended.request_counts.errored) == (2, 0) and ended.results_url
        listed = (await claude.messages.batches.with_raw_response.list()).http_response.json()
        for b in listed["data"]:
            strict(MessageBatch, b)
        # the second batch held at the engines, so its cancel finds it in progress: on fast fakes and a loaded machine
        # it had ended first, and the cancel was the gateway's 400 "has ended" (7 Dec 2026, make sdk-matrix)
        for engine in engines.values():
            engine.gate.clear()
        held = [{"custom_id": cid, "params": {"model": MODEL, "max_tokens": 16,
                                              "messages": [{"role": "user", "content": "SLOW"}]}} for cid in ("a", "b")]
        second = await claude.messages.batches.create(requests=held)  # type: ignore[arg-type]
        raw_c = await claude.messages.batches.with_raw_response.cancel(second.id)
        strict(MessageBatch, raw_c.http_response.json())
        assert (await parsed(raw_c)).processing_status == "canceling"
        open_gates(engines)
        await until_ended(claude, second.id)
        raw_d = await claude.messages.batches.with_raw_response.delete(second.id)
        strict(DeletedMessageBatch, raw_d.http_response.json())
        deleted = await parsed(raw_d)
        assert (deleted.id, deleted.type) == (second.id, "message_batch_deleted")
        # last: anthropic 0.x has no with_raw_response.results (a skip from here, the lifecycle checked above)
        results = await needs(claude, "messages", "batches", "with_raw_response", "results")(batch.id)
        lines = [orjson.loads(x) for x in (await results.http_response.aread()).splitlines()]
        for line in lines:
            strict(MessageBatchIndividualResponse, line)
            assert line["result"]["type"] == "succeeded" and line["result"]["message"]["id"].startswith("msg_")
        assert sorted(x["custom_id"] for x in lines) == ["a", "b"]
    finally:
        await claude.close()
        await stopped(gw)


CASES = [
    ("unknown model", lambda c: c.messages.create(model="nope", max_tokens=8, messages=HI),
     anthropic.NotFoundError, 404, "not_found_error"),
    ("max_tokens below 1", lambda c: c.messages.create(model=MODEL, max_tokens=-1, messages=HI),
     anthropic.BadRequestError, 400, "invalid_request_error"),
    ("a system role in messages", lambda c: c.messages.create(model=MODEL, max_tokens=8,
                                                              messages=[{"role": "system", "content": "x"}]),
     anthropic.BadRequestError, 400, "invalid_request_error"),
    ("count_tokens, no messages", lambda c: c.messages.count_tokens(model=MODEL, messages=[]),
     anthropic.BadRequestError, 400, "invalid_request_error"),
    ("a server tool", lambda c: c.messages.create(model=MODEL, max_tokens=8, messages=HI, tools=[
        {"type": "web_search_20250305", "name": "web_search"}]),
     anthropic.BadRequestError, 400, "invalid_request_error"),
    ("unknown message batch", lambda c: c.messages.batches.retrieve("msgbatch_nope"),
     anthropic.NotFoundError, 404, "not_found_error"),
    ("unknown model, models API", lambda c: c.models.retrieve("nope"), anthropic.NotFoundError, 404, "not_found_error"),
    ("a route not served", lambda c: needs(c, "beta", "skills", "list")(), anthropic.NotFoundError, 404,
     "not_found_error"),
]


@pytest.mark.parametrize(("what", "call", "cls", "status", "typ"), CASES, ids=[c[0] for c in CASES])
async def test_each_mistake_is_the_sdks_exception_in_anthropics_envelope(
        claude: anthropic.AsyncAnthropic, what: str, call: Any, cls: type, status: int, typ: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        await call(claude)
    err = info.value
    assert type(err) is cls and err.status_code == status
    body = err.response.json()
    assert body["type"] == "error" and body["error"]["type"] == typ and body["error"]["message"]
    # the id the SDK shows is in the header and the body, as Anthropic's API answers
    assert err.request_id and body["request_id"] == err.request_id
    assert err.response.headers["x-should-retry"] == "false"


async def test_a_missing_key_is_the_sdks_authentication_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", "test-secret-0123456789abcdef")
    KeyRing(b"test-secret-0123456789abcdef").save(tmp_path / "keys.json")
    gw = build_gateway(spec_in(tmp_path, enforce=True), {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    client = anthropic_client(build_app(gw))
    for call in (client.messages.create(model=MODEL, max_tokens=8, messages=HI), client.models.list(),
                 client.messages.count_tokens(model=MODEL, messages=HI), client.messages.batches.list()):
        with pytest.raises(anthropic.AuthenticationError) as info:
            await call
        assert info.value.status_code == 401 and info.value.response.json()["error"]["type"] == "authentication_error"
    await client.close()


async def test_an_error_outside_every_route_carries_a_request_id_in_both_envelopes(gateway: Gateway) -> None:
    """A bug in a route the framework answers itself (no audited exchange): the 500 names the id it was logged
    under, as every other answer does, in the header the SDKs read and in Anthropic's body."""
    async def broken(_: Request) -> Any:
        raise RuntimeError("a bug")

    app = build_app(gateway, extra_routes=[Route("/v1/broken", broken, methods=["GET"])])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as raw:
        openai_style = await raw.get("/v1/broken")
        anthropic_style = await raw.get("/v1/broken", headers={"anthropic-version": "2023-06-01"})
    assert openai_style.status_code == anthropic_style.status_code == 500
    assert openai_style.json()["error"]["code"] == "internal_error" and openai_style.headers["x-request-id"]
    assert anthropic_style.json()["request_id"] == anthropic_style.headers["request-id"]


async def test_a_bug_inside_an_audited_route_names_its_request_id_in_anthropic_s_body(
        gateway: Gateway, claude: anthropic.AsyncAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    """routes.Audited's own 500 (a bug of ours inside a route) sent the id in its headers only: Anthropic's body
    names it too, as every other Anthropic error of the gateway does."""
    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("aigrid.gateway.messages_api.no_thread", broken)
    with pytest.raises(anthropic.InternalServerError) as info:
        await claude.messages.count_tokens(model=MODEL, messages=HI)  # type: ignore[arg-type]
    body = info.value.response.json()
    assert body["error"]["type"] == "api_error" and info.value.request_id
    assert body["request_id"] == info.value.request_id == info.value.response.headers["request-id"]
