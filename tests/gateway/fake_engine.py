"""A FAKE engine for gateway unit tests (not an emulator of timing): answers OpenAI chat completions from
memory, can be told to fail before its first byte or mid-stream, and counts what it received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from aigrid.engines.protocol import EngineStats, UpstreamResponse
from aigrid.errors import EngineStreamBroken, EngineUnavailable


class FakeEngine:
    kind = "fake"

    def __init__(self, name: str, words: tuple[str, ...] = ("Hello", " from", " the", " grid")) -> None:
        self.base_url = f"fake://{name}"
        self.name = name
        self.words = words
        self.down = False
        self.break_after: int | None = None
        self.first_byte_delay_s = 0.0
        self.word_delay_s = 0.0
        self.echo_prefill = False  # like llama.cpp: repeat a prefilled assistant message before continuing
        self.received: list[dict] = []
        self.logprob: float | None = None  # each word's log-probability, when a request asks for them
        self.stop_reason: str | int | None = None  # vLLM's name for the stop that ended the answer
        self.stats_value = EngineStats(running=0, waiting=0)

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        if self.down:
            raise EngineUnavailable(f"{self.name}: connection refused")
        req = orjson.loads(body)
        self.received.append(req)
        if req.get("stream"):
            yield UpstreamResponse(200, {"content-type": "text/event-stream"}, self._sse(req))
        else:
            yield UpstreamResponse(200, {"content-type": "application/json"}, self._json(req))

    def _remaining(self, req: dict) -> tuple[str, ...]:
        """Like an engine with assistant prefill: continue a final assistant message where it stops."""
        messages = req.get("messages") or []
        if messages and messages[-1]["role"] == "assistant":
            done, words = messages[-1]["content"], list(self.words)
            while words and done.startswith(words[0]):
                done = done[len(words.pop(0)):]
            return tuple(words)
        return self.words

    async def _sse(self, req: dict) -> AsyncIterator[bytes]:
        if self.first_byte_delay_s:
            await asyncio.sleep(self.first_byte_delay_s)
        yield b'data: {"id":"' + self.name.encode() + b'","object":"chat.completion.chunk","created":1,' \
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
        words = self._remaining(req)
        messages = req.get("messages") or []
        if self.echo_prefill and messages and messages[-1]["role"] == "assistant":
            words = (messages[-1]["content"][:3], messages[-1]["content"][3:], *words)
        for i, w in enumerate(words):
            if self.word_delay_s:
                await asyncio.sleep(self.word_delay_s)
            if self.break_after is not None and i >= self.break_after:
                raise EngineStreamBroken(f"{self.name} died")
            chunk = {"id": self.name, "object": "chat.completion.chunk", "model": req["model"], "created": 1,
                     "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        final = {"id": self.name, "object": "chat.completion.chunk", "model": req["model"],
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": self.stop_reason}]}
        yield b"data: " + orjson.dumps(final) + b"\n\n"
        if (req.get("stream_options") or {}).get("include_usage"):  # as OpenAI: a last chunk, no choices
            usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
            chunk = {"id": self.name, "object": "chat.completion.chunk", "model": req["model"], "choices": [],
                     "usage": usage}
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def _json(self, req: dict) -> AsyncIterator[bytes]:
        if self.first_byte_delay_s:  # a non-streamed answer's first byte comes once it is whole
            await asyncio.sleep(self.first_byte_delay_s)
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(self.words)}, "finish_reason": "stop",
                  "stop_reason": self.stop_reason}
        if req.get("logprobs") and self.logprob is not None:
            choice["logprobs"] = {"content": [{"token": w, "logprob": self.logprob, "bytes": list(w.encode()),
                                               "top_logprobs": []} for w in self.words]}
        yield orjson.dumps({
            "id": "c1", "object": "chat.completion", "model": req["model"], "choices": [choice],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(self.words), "total_tokens": 9},
        })

    async def health(self) -> bool:
        return not self.down

    async def stats(self) -> EngineStats:
        if self.down:
            raise EngineUnavailable(f"{self.name}: connection refused")
        return self.stats_value

    async def aclose(self) -> None:
        return None
