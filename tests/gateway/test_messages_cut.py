"""A streamed /v1/messages answer cut before its end (its engine failed mid-stream and no other continues it):
the stream ends with Anthropic's `error` event, the content block it was cut in left open, as Anthropic's API ends a
stream that fails. Until the thirtieth session a `content_block_stop` came first, so the cut block read as whole: the
anthropic SDK's MessageStream handed on a ContentBlockStopEvent, a tool_use's input parsed from half its JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.chat_events import ChatEvent, StreamError, TextPiece, ToolArgs, ToolStart
from aigrid.gateway.messages_stream import anthropic_stream
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import anthropic_client

MODEL = "smollm2-135m"


async def test_a_stream_cut_mid_text_ends_with_the_error_and_no_stop_of_its_block(
        gateway: Gateway, fakes: dict[str, FakeEngine]) -> None:
    for f in fakes.values():  # every engine breaks after a word: the answer is continued until none is left
        f.words, f.break_after = ("Hello",) * 6, 1
    claude = anthropic_client(build_app(gateway))
    seen: list[Any] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with claude.messages.stream(model=MODEL, max_tokens=32,
                                          messages=[{"role": "user", "content": "Say hello"}]) as stream:
            async for event in stream:
                seen.append(event)
    await claude.close()
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    kinds = [e.type for e in seen]
    assert "content_block_start" in kinds and "text" in kinds, kinds
    assert "content_block_stop" not in kinds and "message_stop" not in kinds, kinds


async def _events(*events: ChatEvent) -> AsyncIterator[ChatEvent]:
    for e in events:
        yield e


async def sent(*events: ChatEvent) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs anthropic_stream writes for `events`."""
    out = b"".join([b async for b in anthropic_stream(_events(*events), message_id="msg_1", model=MODEL,
                                                            input_estimate=5)])
    pairs = []
    for block in out.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        pairs.append((fields["event"], orjson.loads(fields["data"])))
    return pairs


@pytest.mark.parametrize("cut", ["text", "tool_use"])
async def test_the_block_cut_is_left_open_and_the_blocks_before_it_stopped(cut: str) -> None:
    """A text block, then a tool_use whose arguments are cut half way (or the text cut, no tool begun): the blocks
    before the cut are stopped, the cut one is not, and the last event is the error."""
    events: list[ChatEvent] = [TextPiece("Let me look.")]
    if cut == "tool_use":
        events += [ToolStart(0, "call_1", "get_weather"), ToolArgs(0, '{"city": "Pa')]
    pairs = await sent(*events, StreamError("the answer was interrupted", "stream_interrupted"))
    kinds = [k for k, _ in pairs]
    assert kinds[-1] == "error" and pairs[-1][1]["error"]["type"] == "api_error"
    assert "message_delta" not in kinds and "message_stop" not in kinds
    started = [d["index"] for k, d in pairs if k == "content_block_start"]
    stopped = [d["index"] for k, d in pairs if k == "content_block_stop"]
    assert started == ([0, 1] if cut == "tool_use" else [0])
    assert stopped == started[:-1]  # every block but the one cut
