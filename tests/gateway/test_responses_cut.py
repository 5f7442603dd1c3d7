"""A /v1/responses answer cut before its end: by its finish (max_output_tokens, an engine's content filter), or by
its engine failing mid-stream with no other to continue it. The item the model was writing ends `incomplete` (its
output_item.done, and the final Response's output), as OpenAI gives it; until the thirtieth session it said
`completed` inside a `response.incomplete` or `response.failed`. Read with the official openai SDK's stream parser
(`responses.stream`) and its whole Response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.chat_events import ChatEvent, StreamError, TextPiece, ToolArgs, ToolStart
from aigrid.gateway.responses_schema import ResponsesRequest
from aigrid.gateway.responses_stream import responses_stream
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway import scripted_client
from tests.gateway.background_grid import ended
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import openai_client

scripted = scripted_client.scripted  # its fixture

MODEL = "smollm2-135m"


@pytest.fixture
async def oai(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai_client(build_app(gateway))
    yield client
    await client.close()


async def streamed(client: openai.AsyncOpenAI, **extra: Any) -> list[Any]:
    """Every event of one streamed Response, as the SDK's stream helper parses it."""
    async with client.responses.stream(model=MODEL, input="Say hello", **extra) as stream:
        return [event async for event in stream]


def of(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


async def test_a_stream_whose_engine_breaks_ends_failed_with_the_item_it_cut_incomplete(
        oai: openai.AsyncOpenAI, fakes: dict[str, FakeEngine]) -> None:
    for f in fakes.values():  # every engine breaks after a word: the answer is continued until none is left
        f.words, f.break_after = ("Hello",) * 6, 1
    events = await streamed(oai)
    last = events[-1]
    assert last.type == "response.failed" and last.response.status == "failed", [e.type for e in events]
    assert last.response.error is not None and last.response.error.code == "server_error"
    assert last.response.incomplete_details is None
    text = "".join(e.delta for e in of(events, "response.output_text.delta"))
    assert text.startswith("Hello")
    [done] = of(events, "response.output_item.done")
    assert done.item.type == "message" and done.item.status == "incomplete"
    assert done.item.content[0].text == text  # the text that was sent, kept
    [part] = of(events, "response.content_part.done")
    assert part.part.text == text
    [item] = last.response.output
    assert item.id == done.item.id and item.status == "incomplete" and item.content[0].text == text


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
async def test_a_streamed_answer_cut_by_its_finish_ends_incomplete_with_its_item_incomplete(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine], finish: str, reason: str) -> None:
    client, engine = scripted
    engine.replies.append({"content": "Hello there, fri", "finish": finish})
    events = await streamed(client, max_output_tokens=16)
    last = events[-1]
    assert last.type == "response.incomplete", [e.type for e in events]
    assert last.response.status == "incomplete" and last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == reason
    [done] = of(events, "response.output_item.done")
    assert done.item.status == "incomplete" and done.item.content[0].text == "Hello there, fri"
    [item] = last.response.output
    assert item.id == done.item.id and item.status == "incomplete" and item.content[0].text == "Hello there, fri"


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
async def test_a_whole_answer_cut_by_its_finish_has_its_item_incomplete(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine], finish: str, reason: str) -> None:
    client, engine = scripted
    engine.replies.append({"content": "Hello there, fri", "finish": finish})
    resp = await client.responses.create(model=MODEL, input="Say hello", max_output_tokens=16)
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == reason
    [item] = resp.output
    assert item.type == "message" and item.status == "incomplete" and resp.output_text == "Hello there, fri"
    [stored] = (await client.responses.retrieve(resp.id)).output  # stored as answered
    assert stored.type == "message" and stored.status == "incomplete"


async def test_an_answer_that_ends_whole_keeps_its_item_completed(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    client, engine = scripted
    engine.replies += [{"content": "Hello there."}, {"content": "Hello there."}]
    events = await streamed(client)
    assert events[-1].type == "response.completed" and events[-1].response.output[0].status == "completed"
    assert of(events, "response.output_item.done")[0].item.status == "completed"
    resp = await client.responses.create(model=MODEL, input="Say hello")
    [item] = resp.output
    assert resp.status == "completed" and item.type == "message" and item.status == "completed"


async def test_a_function_call_cut_by_a_failure_is_incomplete_and_the_message_before_it_completed() -> None:
    """The model wrote a message, then began a function call whose arguments the failure cut: the message (closed when
    the call began) stays completed, the call ends incomplete in its output_item.done and in response.failed."""
    async def events() -> AsyncIterator[ChatEvent]:
        for e in (TextPiece("Let me look."), ToolStart(0, "call_1", "get_weather"), ToolArgs(0, '{"city": "Pa'),
                  StreamError("the answer was interrupted", "stream_interrupted")):
            yield e

    async def kept(final: dict[str, Any]) -> None:
        raise AssertionError("a failed answer is not stored")

    req = ResponsesRequest(model=MODEL, input="Weather in Paris?", stream=True)
    out = b"".join([b async for b in responses_stream(events(), req, "resp_1", kept)])
    sent = [orjson.loads(line[6:]) for line in out.decode().splitlines() if line.startswith("data: ")]
    done = [e["item"] for e in sent if e["type"] == "response.output_item.done"]
    assert [(i["type"], i["status"]) for i in done] == [("message", "completed"), ("function_call", "incomplete")]
    assert done[1]["arguments"] == '{"city": "Pa'
    assert sent[-1]["type"] == "response.failed"
    assert [i["status"] for i in sent[-1]["response"]["output"]] == ["completed", "incomplete"]


async def test_a_streamed_answer_cut_is_stored_and_kept_in_its_conversation_as_streamed(
        scripted: tuple[openai.AsyncOpenAI, ScriptedEngine]) -> None:
    """The Response a cut stream stores (GET /v1/responses/{id}) and the items its conversation keeps say what the
    stream said: incomplete, its message incomplete with the text sent."""
    client, engine = scripted
    engine.replies.append({"content": "Hello there, fri", "finish": "length"})
    conv = await client.conversations.create()
    last = (await streamed(client, max_output_tokens=16, conversation=conv.id))[-1]
    assert last.type == "response.incomplete", last.type
    stored = await client.responses.retrieve(last.response.id)
    assert stored.status == "incomplete" and stored.incomplete_details is not None
    assert stored.incomplete_details.reason == "max_output_tokens"
    [item] = stored.output
    assert item.type == "message" and item.status == "incomplete" and stored.output_text == "Hello there, fri"
    kept = [i async for i in client.conversations.items.list(conv.id, order="asc")]
    assert [(i.type, i.role, i.status) for i in kept if i.type == "message"] == [
        ("message", "user", "completed"), ("message", "assistant", "incomplete")]


async def test_a_background_stream_that_breaks_is_retrieved_with_the_items_it_streamed(
        oai: openai.AsyncOpenAI, gateway: Gateway, fakes: dict[str, FakeEngine]) -> None:
    """A background response created with stream whose engines all break mid-answer: its stream, its replay
    (GET ?stream=true) and its GET say the same, failed with the message it was cut in (incomplete, the text sent).
    Until the thirtieth session GET answered its placeholder: failed, output []. It is not continued."""
    for f in fakes.values():
        f.words, f.break_after = ("Hello",) * 6, 1
    try:
        stream = await oai.responses.create(model=MODEL, input="Say hello", background=True, stream=True)
        events = [e async for e in stream]
        last = events[-1]
        assert last.type == "response.failed" and last.response.status == "failed", [e.type for e in events]
        [streamed] = last.response.output
        assert streamed.type == "message" and streamed.status == "incomplete"
        [part] = streamed.content
        assert part.type == "output_text" and part.text.startswith("Hello")
        text = part.text
        await ended(gateway, last.response.id)
        got = await oai.responses.retrieve(last.response.id)
        assert got.status == "failed" and got.error is not None and got.error.code == "server_error"
        assert got.error.message == last.response.error.message  # type: ignore[union-attr]
        [item] = got.output
        assert item.type == "message" and (item.id, item.status) == (streamed.id, "incomplete")
        assert got.output_text == text
        replay = [e async for e in await oai.responses.retrieve(last.response.id, stream=True)]
        assert replay[-1].type == "response.failed"
        assert [i.id for i in replay[-1].response.output] == [streamed.id]
        with pytest.raises(openai.BadRequestError) as info:  # a failed answer is not one to continue
            await oai.responses.create(model=MODEL, input="Go on", previous_response_id=last.response.id)
        assert "ended failed" in str(info.value)
    finally:
        await gateway.background.stop()
