"""The official SDKs' raw and streaming-response wrappers through the gateway: `with_streaming_response` (the
body read as it comes: chat's `data:` lines, Anthropic's `event:` lines, a Responses object parsed), the request
id each SDK reads off a parsed answer (`_request_id`: openai's `x-request-id`, anthropic's `request-id`), and
openai's `responses.stream(response_id=..., starting_after=N)` resuming a background stream in Python (the JS
SDK's resume: test_js_sdk_surface.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import anthropic_client, openai_client
from tests.parity.sdk_strict import parsed

MODEL = "smollm2-135m"
HI: Any = [{"role": "user", "content": "Hi"}]

Clients = tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic, ScriptedEngine]


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[Clients]:
    engine = ScriptedEngine([])
    app = build_app(await scripted_gateway(tmp_path, engine))
    oai, claude = openai_client(app), anthropic_client(app)
    yield oai, claude, engine
    await oai.close()
    await claude.close()


async def test_with_streaming_response_reads_each_door_as_it_comes(scripted: Clients) -> None:
    oai, claude, engine = scripted
    engine.replies += [{"content": "one two"}] * 3
    async with oai.chat.completions.with_streaming_response.create(model=MODEL, messages=HI, stream=True) as r:
        lines = [line async for line in r.iter_lines() if line.startswith("data: ")]
        decision = r.headers["x-aigrid-decision"]
    assert lines[-1] == "data: [DONE]" and r.request_id == decision
    assert "".join((c["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for c in map(orjson.loads, (line[6:] for line in lines[:-1]))) == "one two"
    async with claude.messages.with_streaming_response.create(model=MODEL, max_tokens=8, messages=HI,
                                                              stream=True) as a:
        kinds = [line[7:] async for line in a.iter_lines() if line.startswith("event: ")]
        assert a.headers["content-type"].startswith("text/event-stream")
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    async with oai.responses.with_streaming_response.create(model=MODEL, input="Hi") as w:
        parsed = await w.parse()
    assert parsed.output_text == "one two" and parsed.status == "completed"


async def test_each_parsed_answer_carries_the_request_id_its_headers_name(scripted: Clients) -> None:
    oai, claude, engine = scripted
    engine.replies += [{"content": "ok"}] * 2
    raw = await oai.chat.completions.with_raw_response.create(model=MODEL, messages=HI)
    assert raw.parse()._request_id == raw.headers["x-request-id"] == raw.headers["x-aigrid-decision"]
    message = await claude.messages.with_raw_response.create(model=MODEL, max_tokens=8, messages=HI)
    got = await parsed(message)
    assert got._request_id == message.headers["request-id"] == message.headers["x-aigrid-decision"]


async def test_a_background_stream_is_resumed_by_the_stream_helper(scripted: Clients) -> None:
    oai, _, engine = scripted
    engine.replies.append({"content": "one two three four"})
    first = [e async for e in await oai.responses.create(model=MODEL, input="Hi", background=True, stream=True)]
    assert first[-1].type == "response.completed"
    async with oai.responses.stream(response_id=first[0].response.id, starting_after=2) as s:  # type: ignore[union-attr]
        resumed = [(e.sequence_number, e.type) async for e in s]
        final = await s.get_final_response()
    assert resumed == [(e.sequence_number, e.type) for e in first[3:]]
    assert final.output_text == "one two three four" and final.id == first[0].response.id  # type: ignore[union-attr]
