"""A streamed chat answer as Anthropic's event sequence:

    message_start, ping, (content_block_start, content_block_delta*, content_block_stop)*,
    message_delta (stop_reason, usage), message_stop

Text becomes `text_delta`s of a text block; each tool call a `tool_use` block whose arguments arrive as
`input_json_delta`s. An answer the relay had to interrupt ends with Anthropic's `error` event, the block it was
cut in left open, as Anthropic's API ends a stream that fails: a `content_block_stop` says the block is whole (the
SDK's MessageStream hands it on as a ContentBlockStopEvent, a tool_use's `input` parsed from the partial JSON, which
a client that runs a tool once its block stops ran with half its arguments; until the thirtieth session it was sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from aigrid.engines.sse import encode
from aigrid.gateway.chat_events import (
    ChatEvent,
    Finish,
    StreamError,
    TextPiece,
    ToolArgs,
    ToolStart,
    Usage,
)
from aigrid.gateway.continuation import EchoStrip
from aigrid.gateway.envelope import bounded_message
from aigrid.gateway.messages_translate import anthropic_usage, stop_of


def sse(event: str, data: dict[str, Any]) -> bytes:
    return encode(orjson.dumps(data), event=event.encode())


class _Blocks:
    """The open content block, and the next block index."""

    def __init__(self) -> None:
        self.next = 0
        self.open: tuple[str, int] | None = None  # ("text", -1) or ("tool", chat tool index)

    def close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        self.next += 1
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.next - 1})

    def start(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self.close()
        self.open = key
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.next,
                                                  "content_block": block})

    def delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": self.next, "delta": delta})


async def anthropic_stream(events: AsyncIterator[ChatEvent], *, message_id: str, model: str,
                           input_estimate: int, stop_sequences: Sequence[str] | None = None,
                           prefill: str = "", prewarm: bool = False) -> AsyncIterator[bytes]:
    """`prefill`: the text of the request's final assistant turn, dropped where the engine repeats it.
    `prewarm`: the answer to `max_tokens: 0` (messages_translate.PREWARM_TOKENS): no block, stopped at
    `max_tokens`."""
    strip = EchoStrip(prefill)
    yield sse("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_estimate, "output_tokens": 0}}})
    yield sse("ping", {"type": "ping"})
    blocks = _Blocks()
    stop_reason, stop_sequence, usage = "max_tokens" if prewarm else "end_turn", None, Usage(input_estimate, 0)
    async for ev in events:
        if prewarm and isinstance(ev, TextPiece | ToolStart | ToolArgs | Finish):
            continue
        if isinstance(ev, TextPiece):
            text = strip(ev.text)
            if not text:
                continue
            if blocks.open != ("text", -1):
                yield blocks.start(("text", -1), {"type": "text", "text": ""})
            yield blocks.delta({"type": "text_delta", "text": text})
        elif isinstance(ev, ToolStart):
            yield blocks.start(("tool", ev.index), {"type": "tool_use", "id": ev.call_id, "name": ev.name,
                                                    "input": {}})
        elif isinstance(ev, ToolArgs) and blocks.open == ("tool", ev.index):
            yield blocks.delta({"type": "input_json_delta", "partial_json": ev.fragment})
        elif isinstance(ev, Finish):
            stop_reason, stop_sequence = stop_of(ev.reason, ev.matched, stop_sequences)
        elif isinstance(ev, Usage):
            usage = ev
        elif isinstance(ev, StreamError):  # the open block is not stopped: it was cut, not ended
            yield sse("error", {"type": "error", "error": {"type": "api_error",
                                                      "message": bounded_message(ev.message)}})
            return
    yield blocks.close()
    yield sse("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                "usage": anthropic_usage(usage.prompt_tokens, usage.completion_tokens,
                                                         usage.cached_tokens)})
    yield sse("message_stop", {"type": "message_stop"})
