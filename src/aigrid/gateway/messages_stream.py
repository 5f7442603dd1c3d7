"""A streamed chat answer as Anthropic's event sequence:

    message_start, ping, (content_block_start, content_block_delta*, content_block_stop)*,
    message_delta (stop_reason, usage), message_stop

Text becomes `text_delta`s of a text block; each tool call a `tool_use` block whose arguments arrive as
`input_json_delta`s (parallel calls whose pieces the engine interleaves: a later call's block waits, its pieces
held, until the block before it is whole; _Blocks). An answer the relay had to interrupt ends with Anthropic's `error` event, the block it was
cut in left open, as Anthropic's API ends a stream that fails: a `content_block_stop` says the block is whole (the
SDK's MessageStream hands it on as a ContentBlockStopEvent, a tool_use's `input` parsed from the partial JSON, which
a client that runs a tool once its block stops ran with half its arguments; until the thirtieth session it was sent).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from aigrid.engines.sse import encode
from aigrid.gateway.chat_events import (
    ChatEvent,
    Finish,
    Pieces,
    StreamError,
    TextPiece,
    ToolArgs,
    ToolStart,
    Usage,
)
from aigrid.gateway.continuation import EchoStrip
from aigrid.gateway.envelope import bounded_message
from aigrid.gateway.messages_translate import anthropic_usage, stop_of

log = logging.getLogger("aigrid.proxy")


def sse(event: str, data: dict[str, Any]) -> bytes:
    return encode(orjson.dumps(data), event=event.encode())


class _Blocks:
    """The open content block, the next block index, and the tool calls begun while another's block was open.

    One block is open at a time (Anthropic's stream), while OpenAI's chat stream may interleave the argument pieces
    of several calls (each piece names its call's index). So a call begun while the open tool_use block's arguments
    are not yet a whole JSON object waits (`waiting`: its block and pieces, by chat index, in the order begun); once
    the open block's arguments are whole (ToolArgs.whole: no later piece could extend them), or at text
    or the answer's end, it is stopped and the next waiting call's block starts with its pieces so far as one delta,
    then goes on live. Calls streamed one after another (vLLM, OpenAI) each start as they begin. Until the thirtieth
    session a piece of a call whose block was no longer open was dropped: interleaved calls reached the client cut.
    No piece comes for a call after its arguments ended (whole, or text or the finish came): chat_events._Calls holds
    text behind a call not whole and ends the answer with an error at such a piece (until the thirty-first session
    the piece was dropped here with a log line, the call's arguments cut)."""

    def __init__(self) -> None:
        self.next = 0
        self.open: tuple[str, int] | None = None  # ("text", -1) or ("tool", chat tool index)
        self.whole = False  # the open tool_use block's arguments are a whole JSON object
        self.waiting: dict[int, tuple[dict[str, Any], Pieces, bool]] = {}  # block, pieces, whole

    def close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        self.next += 1
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.next - 1})

    def start(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self.close()
        self.open, self.whole = key, False
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.next,
                                                  "content_block": block})

    def delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": self.next, "delta": delta})

    def tool(self, index: int, block: dict[str, Any]) -> bytes:
        """A call begun: its block starts now, or waits while the open tool_use block's arguments are not whole."""
        if self.waiting or (self.open is not None and self.open[0] == "tool" and not self.whole):
            self.waiting[index] = (block, Pieces(), False)
            return b""
        return self.start(("tool", index), block)

    def tool_args(self, index: int, fragment: str, whole: bool) -> bytes:
        if self.open == ("tool", index):
            self.whole = whole
            out = [self.delta({"type": "input_json_delta", "partial_json": fragment})]
            while self.waiting and self.whole:  # whole: the next call's block may start
                out.append(self._next())
            return b"".join(out)
        if index in self.waiting:
            block, parts, _ = self.waiting[index]
            parts.add(fragment)
            self.waiting[index] = (block, parts, whole)
        else:  # (chat_events ends the answer before such a piece: a bug if it comes)
            log.error("a streamed tool call's argument piece came after its tool_use block was stopped (call index "
                      "%d): left out of the Anthropic stream", index)
        return b""

    def _next(self) -> bytes:
        """The open block stopped, the first waiting call's block started with its pieces so far."""
        index = next(iter(self.waiting))
        block, parts, whole = self.waiting.pop(index)
        out = self.start(("tool", index), block)
        if parts:
            self.whole = whole
            out += self.delta({"type": "input_json_delta", "partial_json": "".join(parts)})
        return out

    def flush(self) -> bytes:
        """Every waiting call's block, in the order begun (text or the answer's end came): the last left open. The
        blocks are joined once: until the thirty-sixth session (brief QUAD) each was added to all before it (`+=` on
        bytes, a copy of all of them each time): 1,024 calls waiting with 8 MiB of arguments took 1.8 s of the event
        loop (scripts/bench_stream_doors.py --waiting)."""
        out = []
        while self.waiting:
            out.append(self._next())
        return b"".join(out)


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
    called = False  # a tool_use block begun: the turn's stop_reason is `tool_use` (stop_of)
    async for ev in events:
        if prewarm and isinstance(ev, TextPiece | ToolStart | ToolArgs | Finish):
            continue
        if isinstance(ev, TextPiece):
            text = strip(ev.text)
            if not text:
                continue
            if blocks.open != ("text", -1):
                yield blocks.flush() + blocks.start(("text", -1), {"type": "text", "text": ""})
            yield blocks.delta({"type": "text_delta", "text": text})
        elif isinstance(ev, ToolStart):
            called = True
            yield blocks.tool(ev.index, {"type": "tool_use", "id": ev.call_id, "name": ev.name, "input": {}})
        elif isinstance(ev, ToolArgs):
            yield blocks.tool_args(ev.index, ev.fragment, ev.whole)
        elif isinstance(ev, Finish):
            stop_reason, stop_sequence = stop_of(ev.reason, ev.matched, stop_sequences, called=called)
        elif isinstance(ev, Usage):
            usage = ev
        elif isinstance(ev, StreamError):  # the open block is not stopped: it was cut, not ended (nor is any
            # call waiting started: its arguments were cut too)
            yield sse("error", {"type": "error", "error": {"type": "api_error",
                                                      "message": bounded_message(ev.message)}})
            return
    yield blocks.flush() + blocks.close()
    yield sse("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                "usage": anthropic_usage(usage.prompt_tokens, usage.completion_tokens,
                                                         usage.cached_tokens)})
    yield sse("message_stop", {"type": "message_stop"})
