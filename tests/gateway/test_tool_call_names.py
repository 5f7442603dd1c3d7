"""output_filter.joined_name: a streamed tool call's name with its next piece, the one rule of the redacted stream
(OutputFilter._call_names) and of the Messages and Responses doors (chat_events._Calls), each of which kept its own
copy until the thirtieth session; its bound (MAX_NAME_CHARS) holds for a name's first piece too, which neither
checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from aigrid.engines.sse import SseError
from aigrid.gateway.chat_events import StreamError, ToolStart, chat_events
from aigrid.gateway.output_filter import MAX_NAME_CHARS, OutputFilter, joined_name

TOO_LONG = "n" * (MAX_NAME_CHARS + 1)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-h", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def named(name: str, arguments: str | None = None) -> dict[str, Any]:
    fn = {"name": name} | ({} if arguments is None else {"arguments": arguments})
    return chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": fn}]})


@pytest.mark.parametrize(("pieces", "name"), [
    (["get_wea", "ther"], "get_weather"),  # Gemini's OpenAI-compatible endpoint
    (["get_weather", "get_weather"], "get_weather"),  # repeated whole: the same name again
    (["get", "", "_weather"], "get_weather"),  # an empty piece adds nothing
    (["ab", "ab", "ab"], "ab"),  # (a piece equal to the name so far is a repeat, never doubled)
    (["a", "a", "b"], "ab"),
])
def test_a_names_pieces_join_by_one_rule(pieces: list[str], name: str) -> None:
    so_far = ""
    for p in pieces:
        so_far = joined_name(so_far, p)
    assert so_far == name


def test_a_name_is_bounded_from_its_first_piece() -> None:
    assert joined_name("", "n" * MAX_NAME_CHARS) == "n" * MAX_NAME_CHARS  # the bound itself is a name
    with pytest.raises(SseError, match=f"name of more than {MAX_NAME_CHARS}"):
        joined_name("", TOO_LONG)
    with pytest.raises(SseError, match=f"name of more than {MAX_NAME_CHARS}"):
        joined_name("n" * MAX_NAME_CHARS, "x")


@pytest.mark.parametrize("arguments", [None, "{}"], ids=["held", "with-arguments"])
def test_the_redacted_stream_refuses_a_first_piece_past_the_bound(arguments: str | None) -> None:
    """A name held back (its first piece) or sent at once with its arguments: bounded as a joined one was."""
    f = OutputFilter(True, strip_usage=False)
    with pytest.raises(SseError, match="name of more than"):
        f.event(named(TOO_LONG, arguments))


async def read(*chunks: dict[str, Any]) -> list[Any]:
    async def each() -> AsyncIterator[bytes]:
        for c in chunks:
            yield b"data: " + orjson.dumps(c) + b"\n\n"
        yield b"data: [DONE]\n\n"
    return [e async for e in chat_events(each())]


@pytest.mark.parametrize("arguments", [None, "{}"], ids=["pending", "with-arguments"])
async def test_the_doors_end_an_answer_whose_first_name_piece_is_past_the_bound(arguments: str | None) -> None:
    """The Messages and Responses doors' reader: the engine's malformed answer (the door's error), no call started."""
    got = await read(named(TOO_LONG, arguments), chunk({}, "tool_calls"))
    first = next(i for i, e in enumerate(got) if isinstance(e, StreamError))
    assert got[first].code == "engine_malformed" and not any(isinstance(e, ToolStart) for e in got), got[:3]


async def test_the_doors_join_a_name_as_the_redacted_stream_does() -> None:
    got = await read(named("get_wea"), named("ther", "{}"), chunk({}, "tool_calls"))
    assert [e for e in got if isinstance(e, ToolStart)] == [ToolStart(0, "call_1", "get_weather")], got
    got = await read(named("get_weather"), named("get_weather", "{}"), chunk({}, "tool_calls"))
    assert [e for e in got if isinstance(e, ToolStart)] == [ToolStart(0, "call_1", "get_weather")], got
