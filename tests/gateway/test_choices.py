"""OpenAI's `n` (several choices) through the gateway with the official SDK: the chosen engine is asked n
times at once (engines/fan_out.py) and the answers merged, whole or streamed, with usage, seeds, per-choice
output redaction and the forms that are refused. A SCRIPTED engine (tests/agents/scripted_engine.py) plays
every endpoint and records what it was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import orjson
import pytest

from aigrid.engines.fan_out import merged_answer, merged_stream
from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import build_app
from aigrid.spec.models import FirewallSpec
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import openai_client

ASK = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, ScriptedEngine]]:
    engine = ScriptedEngine([])
    gw = await scripted_gateway(tmp_path, engine, firewall=FirewallSpec(pii_output="redact"))  # per choice
    client = openai_client(build_app(gw))
    yield client, engine
    await client.close()


async def test_n_whole_answers_are_merged_with_the_prompt_counted_once(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    engine.replies += [{"content": "Red."}, {"content": "Blue."}, {"content": "Green."}]
    reply = await oai.chat.completions.create(model="smollm2-135m", messages=ASK, n=3, seed=7, stream=False)
    assert [(c.index, c.message.content) for c in reply.choices] == [(0, "Red."), (1, "Blue."), (2, "Green.")]
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (10, 15)
    assert [b["seed"] for b in engine.received] == [7, 8, 9] and all("n" not in b for b in engine.received)


async def test_n_streamed_choices_arrive_re_indexed_with_one_usage_chunk(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    engine.replies += [{"content": "Red is warm."}, {"content": "Blue is calm."}]
    chunks = [c async for c in await oai.chat.completions.create(
        model="smollm2-135m", messages=ASK, n=2, stream=True, stream_options={"include_usage": True})]
    text: dict[int, str] = {0: "", 1: ""}
    finished = set()
    for c in chunks:
        for choice in c.choices:
            text[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert text == {0: "Red is warm.", 1: "Blue is calm."} and finished == {0, 1}
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and (usages[0].prompt_tokens, usages[0].completion_tokens) == (10, 10)


async def test_each_choice_is_redacted_on_its_own(scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """A card number split across one choice's chunks is caught though the other choice's chunks interleave."""
    oai, engine = scripted
    engine.replies += [{"content": "Pay with 4111 1111 1111 1111 now."}, {"content": "Mail ada@example.com today."}]
    chunks = [c async for c in await oai.chat.completions.create(model="smollm2-135m", messages=ASK, n=2,
                                                                 stream=True)]
    text: dict[int, str] = {0: "", 1: ""}
    for c in chunks:
        for choice in c.choices:
            text[choice.index] += choice.delta.content or ""
    assert "4111" not in text[0] and "ada@example.com" not in text[1]
    assert text[0].startswith("Pay with ") and text[1].startswith("Mail ")


async def test_the_forms_n_cannot_serve_are_the_clients_400(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    oai, engine = scripted
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    for kwargs in ({"n": 2, "tools": [tool]}, {"n": 9}):
        with pytest.raises(openai.BadRequestError) as info:
            await oai.chat.completions.create(model="smollm2-135m", messages=ASK, stream=False, **kwargs)
        assert info.value.body["param"] == "n"  # type: ignore[index]
    assert engine.received == []


async def _answer(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _doc(*texts: str) -> bytes:
    return orjson.dumps({"object": "text_completion", "usage": {"prompt_tokens": 6, "completion_tokens": 2},
                         "choices": [{"index": p, "text": t, "finish_reason": "stop"} for p, t in enumerate(texts)]})


async def test_a_list_of_prompts_with_n_puts_each_prompts_choices_together() -> None:
    """OpenAI's order for `prompt: [p0, p1]` with n = 2: p0's two choices (0, 1), then p1's (2, 3). Each of the
    n requests answers every prompt (llama.cpp, vLLM), so answer j's choice for prompt p is p x n + j."""
    whole = orjson.loads(merged_answer([_doc("sky 0", "water 0"), _doc("sky 1", "water 1")]))
    assert [(c["index"], c["text"]) for c in whole["choices"]] == [
        (0, "sky 0"), (1, "sky 1"), (2, "water 0"), (3, "water 1")]
    assert (whole["usage"]["prompt_tokens"], whole["usage"]["completion_tokens"]) == (6, 4)
    streams = [UpstreamResponse(200, {}, _answer(
        b"data: null\n\n",  # how llama.cpp opens a stream of several prompts
        *(b"data: " + orjson.dumps({"choices": [{"index": p, "text": f"p{p}a{j}"}]}) + b"\n\n" for p in (1, 0)),
        b"data: [DONE]\n\n")) for j in range(2)]
    events = [orjson.loads(e[6:]) for e in (b"".join([c async for c in merged_stream(streams)])).split(b"\n\n")
              if e.startswith(b"data: {")]
    seen = {(c["index"], c["text"]) for e in events for c in e["choices"]}
    assert seen == {(0, "p0a0"), (1, "p0a1"), (2, "p1a0"), (3, "p1a1")}
