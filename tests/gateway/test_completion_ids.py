"""A legacy completion's id is OpenAI's `cmpl-...` (object `text_completion`), whole, streamed and with several
choices, though llama.cpp's llama-server names its completions `chatcmpl-...` like its chat completions (seen
with the official Node SDK on `make run`: `completions.create` answered `chatcmpl-R2e6...`). A chat
completion keeps its `chatcmpl-` id; text that happens to hold the pattern is not touched."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import openai
import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.engines.wrapped import once
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.relay import completion_ids
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import openai_client

TRICKY = ' said {"id":"chatcmpl-x"}'
"""A completion's text holding the id's pattern: inside a JSON string its quotes are escaped, so it stays."""


class LlamaCompletions(FakeEngine):
    """Chat as FakeEngine; completions as llama-server answers them, with `chatcmpl-` ids."""

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        if path != "/v1/completions":
            async with super().open(path, body) as up:
                yield up
            return
        req = orjson.loads(body)
        self.received.append(req)
        head = {"id": "chatcmpl-abc", "object": "text_completion", "created": 1, "model": req["model"]}
        if not req.get("stream"):
            yield UpstreamResponse(200, {"content-type": "application/json"}, once(orjson.dumps({
                **head, "choices": [{"index": 0, "text": "Once" + TRICKY, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})))
            return
        yield UpstreamResponse(200, {"content-type": "text/event-stream"}, self._completion_events(head))

    async def _completion_events(self, head: dict) -> AsyncIterator[bytes]:
        for text, finish in (("Once", None), (TRICKY, None), ("", "stop")):
            yield b"data: " + orjson.dumps({**head, "choices": [
                {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}) + b"\n\n"
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": {
            "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}) + b"\n\n"
        yield b"data: [DONE]\n\n"


@pytest.fixture
async def oai(tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    engines = {e.id: LlamaCompletions(e.id) for e in load_spec(DEMO).endpoints}
    gw = build_gateway(spec_in(tmp_path), engines, rng=random.Random(7), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    client = openai_client(build_app(gw))
    yield client
    await client.close()


async def test_a_whole_completion_is_named_cmpl(oai: openai.AsyncOpenAI) -> None:
    done = await oai.completions.create(model="smollm2-135m", prompt="Hi", max_tokens=5)
    assert done.id == "cmpl-abc" and done.object == "text_completion"
    assert done.choices[0].text == "Once" + TRICKY


async def test_several_choices_are_named_cmpl(oai: openai.AsyncOpenAI) -> None:
    done = await oai.completions.create(model="smollm2-135m", prompt="Hi", max_tokens=5, n=2)
    assert done.id.startswith("cmpl-") and len(done.choices) == 2


async def test_a_streamed_completion_is_named_cmpl(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.completions.create(model="smollm2-135m", prompt="Hi", max_tokens=5, stream=True,
                                          stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert {c.id for c in chunks} == {"cmpl-abc"} and len(chunks) == 4
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Once" + TRICKY
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5


async def test_a_chat_completion_keeps_its_chat_id(oai: openai.AsyncOpenAI) -> None:
    done = await oai.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}])
    assert done.id == "c1"  # FakeEngine's: passed as it came (the relabelling is for /v1/completions only)


def test_only_the_id_field_is_relabelled() -> None:
    assert completion_ids(b'{"id":"chatcmpl-1","choices":[]}') == b'{"id":"cmpl-1","choices":[]}'
    assert completion_ids(b'{"id": "chatcmpl-1"}') == b'{"id": "cmpl-1"}'
    text = orjson.dumps({"id": "cmpl-2", "text": TRICKY})
    assert completion_ids(text) == text
