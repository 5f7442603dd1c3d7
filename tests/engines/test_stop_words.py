"""engines/stop_words.py on a FAKE engine that answers as llama.cpp's llama-server does: `finish_reason: "stop"`
for a stop string and its end-of-turn alike, the stopping word only in `__verbose` when asked with `verbose`. The
real llama-server is in tests/e2e/test_front_doors.py (the official Anthropic SDK's `stop_sequence`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.engines.sse import SseDecoder
from aigrid.engines.stop_words import StopWordEngine
from aigrid.engines.wrapped import once

CHAT = "/v1/chat/completions"


class LlamaLike:
    """Answers "Once upon a time" ended by `stop_type` (a stop word "." or the end-of-turn token), streamed in
    pieces of `piece` bytes so that every event, `__verbose` included, is split across reads."""

    kind = "llamacpp"
    base_url = "fake://llama"

    def __init__(self, stop_type: str = "word", piece: int = 7) -> None:
        self.stop_type, self.piece = stop_type, piece
        self.received: list[dict[str, Any]] = []

    def _verbose(self, req: dict[str, Any]) -> dict[str, Any]:
        if not req.get("verbose"):
            return {}
        return {"__verbose": {"content": "Once upon a time", "prompt": "<|im_start|>user\n...",
                              "stop_type": self.stop_type, "stopping_word": "." if self.stop_type == "word" else ""}}

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        req = orjson.loads(body)
        self.received.append(req)
        if not req.get("stream"):
            answer = {"id": "c1", "object": "chat.completion", "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Once upon a time"}}],
                **self._verbose(req)}
            yield UpstreamResponse(200, {"content-type": "application/json"}, once(orjson.dumps(answer)))
            return
        events = [{"id": "c1", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "finish_reason": None, "delta": {"content": w}}]}
                  for w in ("Once", " upon", " a time")]
        events.append({"id": "c1", "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "finish_reason": "stop", "delta": {}}], **self._verbose(req)})
        raw = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        yield UpstreamResponse(200, {"content-type": "text/event-stream"}, self._pieces(raw))

    async def _pieces(self, raw: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(raw), self.piece):
            yield raw[i:i + self.piece]


async def _answer(engine: StopWordEngine, req: dict[str, Any]) -> tuple[bytes, list[dict[str, Any]]]:
    """The raw answer and its JSON documents (one, or each streamed event's)."""
    async with engine.open(CHAT, orjson.dumps(req)) as up:
        raw = b"".join([c async for c in up.body])
    if not req.get("stream"):
        return raw, [orjson.loads(raw)]
    return raw, [orjson.loads(e.data) for e in SseDecoder().feed(raw) if e.data and e.data != b"[DONE]"]


REQ = {"model": "m", "messages": [{"role": "user", "content": "Tell a story"}], "stop": ["."]}


@pytest.mark.parametrize("stream", [False, True])
async def test_the_stopping_word_becomes_the_choice_s_stop_reason(stream: bool) -> None:
    inner = LlamaLike()
    raw, docs = await _answer(StopWordEngine(inner), {**REQ, "stream": stream})
    assert inner.received[-1]["verbose"] is True
    assert b"__verbose" not in raw  # the text again and the rendered prompt stay at the gateway
    last = docs[-1]["choices"][0]
    assert (last["finish_reason"], last["stop_reason"]) == ("stop", ".")
    assert "".join(d["choices"][0].get("delta", d["choices"][0].get("message", {})).get("content") or ""
                   for d in docs) == "Once upon a time"


@pytest.mark.parametrize("stream", [False, True])
async def test_the_end_of_turn_token_names_no_stop_string(stream: bool) -> None:
    _, docs = await _answer(StopWordEngine(LlamaLike(stop_type="eos")), {**REQ, "stream": stream})
    assert "stop_reason" not in docs[-1]["choices"][0] and "__verbose" not in docs[-1]


@pytest.mark.parametrize("extra", [{"stop": None}, {"stop": []}, {"verbose": True}], ids=["null", "empty", "verbose"])
async def test_other_requests_pass_untouched(extra: dict[str, Any]) -> None:
    """Without stop strings nothing is asked or changed; a client that asked for `verbose` itself gets the engine's
    answer as it came."""
    inner = LlamaLike()
    req = {**REQ, **extra}
    raw, docs = await _answer(StopWordEngine(inner), req)
    assert inner.received[-1] == req
    assert ("__verbose" in docs[-1]) == bool(extra.get("verbose"))
    assert "stop_reason" not in docs[-1]["choices"][0]
