"""engines/legacy_completions.py on a FAKE engine that answers completions as llama.cpp's llama-server does: it
ignores `echo` and gives log-probabilities in the chat format. The real llama-server is in
tests/e2e/test_front_doors.py (the official SDK's legacy fields)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from aigrid.engines.legacy_completions import (
    LegacyCompletionsEngine,
    legacy_answer,
    legacy_stream,
    needs_legacy,
)
from aigrid.engines.protocol import UpstreamResponse
from aigrid.engines.sse import SseDecoder
from aigrid.engines.wrapped import once
from aigrid.gateway.usage import NotAnAnswer, whole_answer

TOKENS = [("Paris", -0.1, [("Paris", -0.1), ("Lyon", -2.5)]), (".", -0.3, [(".", -0.3), ("!", -1.9)])]


def _chat_logprobs(tokens: list[tuple[str, float, list[tuple[str, float]]]]) -> dict[str, Any]:
    return {"content": [{"id": i, "token": t, "logprob": lp, "bytes": list(t.encode()),
                         "top_logprobs": [{"id": 0, "token": a, "logprob": b, "bytes": []} for a, b in top]}
                        for i, (t, lp, top) in enumerate(tokens)]}


class LlamaLike:
    """Answers every prompt of a completion with TOKENS; never echoes; chat-format log-probabilities."""

    kind = "llamacpp"
    base_url = "fake://llama"

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        req = orjson.loads(body)
        self.received.append(req)
        prompts = req["prompt"] if isinstance(req["prompt"], list) else [req["prompt"]]
        lp = req.get("logprobs") is not None
        if req.get("stream"):
            yield UpstreamResponse(200, {"content-type": "text/event-stream"}, self._sse(len(prompts), lp))
            return
        choices = [{"index": i, "text": "".join(t for t, _, _ in TOKENS), "finish_reason": "stop",
                    "logprobs": _chat_logprobs(TOKENS) if lp else None} for i in range(len(prompts))]
        yield UpstreamResponse(200, {"content-type": "application/json"},
                               once(orjson.dumps({"id": "c1", "object": "text_completion", "choices": choices})))

    async def _sse(self, prompts: int, lp: bool) -> AsyncIterator[bytes]:
        for i in range(prompts):
            for tok in TOKENS:
                chunk = {"id": "c1", "object": "text_completion", "choices": [
                    {"index": i, "text": tok[0], "finish_reason": None,
                     "logprobs": _chat_logprobs([tok]) if lp else None}]}
                yield b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"  # CRLF framing, allowed by the SSE spec
        yield b"data: [DONE]\n\n"


async def _whole(engine: LegacyCompletionsEngine, req: dict[str, Any]) -> tuple[int, Any]:
    async with engine.open("/v1/completions", orjson.dumps(req)) as answer:
        body = b"".join([c async for c in answer.body])
    return answer.status, orjson.loads(body)


async def _events(engine: LegacyCompletionsEngine, req: dict[str, Any]) -> list[Any]:
    decoder = SseDecoder()
    async with engine.open("/v1/completions", orjson.dumps({**req, "stream": True})) as answer:
        events = [ev for c in [c async for c in answer.body] for ev in decoder.feed(c)]
    return [orjson.loads(ev.data) for ev in events if ev.data not in (None, b"[DONE]")]


async def test_chat_format_logprobs_become_the_legacy_lists() -> None:
    inner = LlamaLike()
    status, doc = await _whole(LegacyCompletionsEngine(inner), {"model": "m", "prompt": "Capital of France:",
                                                                 "logprobs": 2})
    assert status == 200 and inner.received[0]["logprobs"] == 2
    assert doc["choices"][0]["text"] == "Paris."
    assert doc["choices"][0]["logprobs"] == {"tokens": ["Paris", "."], "token_logprobs": [-0.1, -0.3],
                                             "top_logprobs": [{"Paris": -0.1, "Lyon": -2.5}, {".": -0.3, "!": -1.9}],
                                             "text_offset": [0, 5]}


async def test_echo_puts_each_prompt_back_in_front_of_its_choice() -> None:
    inner = LlamaLike()
    status, doc = await _whole(LegacyCompletionsEngine(inner), {"model": "m", "prompt": ["A:", "Bee:"], "echo": True})
    assert status == 200 and "echo" not in inner.received[0]
    assert [c["text"] for c in doc["choices"]] == ["A:Paris.", "Bee:Paris."]


async def test_streamed_echo_comes_first_and_offsets_run_on_across_chunks() -> None:
    events = await _events(LegacyCompletionsEngine(LlamaLike()), {"model": "m", "prompt": ["Q:", "Quiz:"],
                                                                  "echo": True})
    text: dict[int, str] = {0: "", 1: ""}
    for ev in events:
        for c in ev["choices"]:
            text[c["index"]] += c["text"]
    assert text == {0: "Q:Paris.", 1: "Quiz:Paris."}
    assert events[0]["choices"][0]["text"] == "Q:"

    events = await _events(LegacyCompletionsEngine(LlamaLike()), {"model": "m", "prompt": "Q:", "logprobs": 1})
    lists = [ev["choices"][0]["logprobs"] for ev in events]
    assert [x["tokens"] for x in lists] == [["Paris"], ["."]]
    assert [x["text_offset"] for x in lists] == [[0], [5]]
    assert lists[1]["top_logprobs"] == [{".": -0.3, "!": -1.9}]


async def test_echo_with_logprobs_is_a_400_naming_echo_and_reaches_no_engine() -> None:
    inner = LlamaLike()
    status, doc = await _whole(LegacyCompletionsEngine(inner), {"model": "m", "prompt": "x", "echo": True,
                                                                 "logprobs": 0})
    assert status == 400 and doc["error"]["param"] == "echo" and doc["error"]["type"] == "invalid_request_error"
    assert inner.received == []


async def test_other_paths_and_engines_are_left_alone() -> None:
    inner = LlamaLike()
    async with LegacyCompletionsEngine(inner).open("/v1/chat/completions", orjson.dumps(
            {"model": "m", "prompt": "x", "echo": True})) as answer:
        assert orjson.loads(b"".join([c async for c in answer.body]))["choices"][0]["text"] == "Paris."
    assert inner.received[0]["echo"] is True  # passed as it came
    vllm = LlamaLike()
    vllm.kind = "vllm"
    assert needs_legacy(inner, {"echo": True}) and needs_legacy(inner, {"logprobs": 0})
    assert not needs_legacy(vllm, {"echo": True, "logprobs": 3}) and not needs_legacy(inner, {"prompt": "x"})


async def test_a_hostile_engine_gets_the_prompt_echoed_once_per_choice_asked_for() -> None:
    """An engine that named a new choice index in each chunk (or answered many choices whole) had the prompt put in
    front of each: 1,000 chunks of ~40 bytes with a 10 KB prompt came out as 10 MB. Now only the choices asked for
    (an index below the number of prompts) are echoed, once each."""
    prompt = "P" * 10_000

    async def body() -> AsyncIterator[bytes]:
        for i in range(1000):
            yield b"data: " + orjson.dumps({"choices": [{"index": i, "text": "a"}]}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    out = b"".join([c async for c in legacy_stream(body(), [prompt])])
    assert out.count(prompt.encode()) == 1 and len(out) < 100_000
    whole = orjson.dumps({"choices": [{"index": i % 2, "text": "a"} for i in range(1000)]})
    assert legacy_answer(whole, [prompt]).count(prompt.encode()) == 1


async def test_alternatives_that_are_not_a_list_are_none() -> None:
    """`top_logprobs: 5` raised in the conversion (a TypeError out of the engine's wrapper); now no alternatives."""
    doc = {"choices": [{"index": 0, "text": "a", "logprobs": {"content": [{"token": "a", "logprob": -1.0,
                                                                           "top_logprobs": 5}]}}]}
    got = orjson.loads(legacy_answer(orjson.dumps(doc), None))["choices"][0]["logprobs"]
    assert got == {"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{}], "text_offset": [0]}


@pytest.mark.parametrize("text", [["jo@example.com"], {"t": "x"}, 7, None])
async def test_a_text_of_another_shape_is_not_echoed_but_left_for_the_gateways_check(text: Any) -> None:
    """legacy_answer wrote a choice's text as Python shows it (`str()`) after the prompt: a list's `['...']` became
    a string that passed the gateway's check of the whole answer (and a null text the prompt alone). Now a choice of
    another shape (answer_shape.choice_fault) is left as the engine sent it, and the gateway refuses the answer."""
    doc = {"id": "cmpl-1", "object": "text_completion",
           "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
    out = legacy_answer(orjson.dumps(doc), ["Say hi."])
    assert orjson.loads(out)["choices"][0]["text"] == text
    with pytest.raises(NotAnAnswer):
        whole_answer(out, None)
    fine = legacy_answer(orjson.dumps({"choices": [{"index": 0, "text": " hi", "finish_reason": "stop"}]}), ["Say"])
    assert orjson.loads(fine)["choices"][0]["text"] == "Say hi"
