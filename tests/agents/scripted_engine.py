"""A SCRIPTED engine for tool-loop unit tests: answers each chat call with the next reply of a script,
streamed as OpenAI chunks (content split in small pieces, or native tool_calls), and records every
request body it received. A reply's `finish` is its finish_reason (default `tool_calls` when it calls tools,
else `stop`). Not a model; the real multi-step loop is in test_loop_engine.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from aigrid.engines.protocol import EngineStats, UpstreamResponse
from aigrid.errors import EngineUnavailable

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
"""Every reply's usage, unless the reply gives its own (`"usage": {...}`)."""


class ScriptedEngine:
    kind = "scripted"
    base_url = "scripted://engine"

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.received: list[dict[str, Any]] = []
        self.down = False
        self.status = 200

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        if self.down:
            raise EngineUnavailable("scripted engine is down")
        self.received.append(orjson.loads(body))
        if self.status != 200:
            yield UpstreamResponse(self.status, {"content-type": "application/json"},
                                   _once(b'{"error":{"message":"bad request"}}'))
            return
        reply = self.replies.pop(0)
        if self.received[-1].get("stream") is not True:  # a non-streamed request: one JSON answer, as engines do
            yield UpstreamResponse(200, {"content-type": "application/json"}, _once(orjson.dumps(_completion(reply))))
            return
        yield UpstreamResponse(200, {"content-type": "text/event-stream"}, self._sse(reply))

    async def _sse(self, reply: dict[str, Any]) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            ev = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                  **extra}
            return b"data: " + orjson.dumps(ev) + b"\n\n"

        yield chunk({"role": "assistant", "content": None})
        content = reply.get("content", "")
        for i in range(0, len(content), 3):
            yield chunk({"content": content[i:i + 3]})
        for i, tc in enumerate(reply.get("tool_calls", [])):
            args = orjson.dumps(tc["arguments"]).decode()
            yield chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                         "function": {"name": tc["name"], "arguments": args[:5]}}]})
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": args[5:]}}]})
        finish = reply.get("finish") or ("tool_calls" if reply.get("tool_calls") else "stop")
        yield chunk({}, finish)
        yield b"data: " + orjson.dumps({"choices": [], "usage": reply.get("usage", USAGE)}) + b"\n\ndata: [DONE]\n\n"

    async def health(self) -> bool:
        return True

    async def stats(self) -> EngineStats:
        return EngineStats()

    async def aclose(self) -> None:
        pass


def _completion(reply: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content") or None}
    if reply.get("tool_calls"):
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function", "function": {
            "name": tc["name"], "arguments": orjson.dumps(tc["arguments"]).decode()}}
            for i, tc in enumerate(reply["tool_calls"])]
    finish = reply.get("finish") or ("tool_calls" if reply.get("tool_calls") else "stop")
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": reply.get("usage", USAGE)}


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    """A constrained-mode reply asking for `tool`."""
    return {"content": orjson.dumps({"tool": tool, "arguments": arguments}).decode()}


def answer(text: str) -> dict[str, Any]:
    return {"content": orjson.dumps({"answer": text}).decode()}
