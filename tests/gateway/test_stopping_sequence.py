"""stopping._Watched: the sequence_number of the error event a cut Responses stream ends with. Until the twenty-seventh
session it was the count of events this response had sent, from 0: a stream that does not begin at 0 (a background
response followed with `starting_after`, the create's own stream numbered on from its event log) ended with an error
numbered as an event already sent. Now it is the last event's number plus one, read from the events as they go."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from aigrid.gateway import stopping
from aigrid.gateway.event_log import event
from aigrid.gateway.stopping import CutAnswers

SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
         "path": "/v1/responses/resp_1", "raw_path": b"/v1/responses/resp_1", "query_string": b"stream=true",
         "root_path": "", "scheme": "http", "server": ("gw", 80), "client": ("127.0.0.1", 5000), "headers": []}


async def cut_after(*sends: bytes) -> dict[str, Any]:
    """The error event's data, for a Responses stream cut (as uvicorn cuts at the grace's end) after `sends`."""
    name, data = (await cut_body(SCOPE, *sends)).strip().split(b"\n")
    assert name == b"event: error"
    return orjson.loads(data.removeprefix(b"data: "))


async def cut_body(scope: dict[str, Any], *sends: bytes) -> bytes:
    """The last body sent (whole: no more_body) for a stream to `scope` cut after `sends`, each a send of its own."""
    sent: list[dict[str, Any]] = []
    waiting = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        for body in sends:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        waiting.set()
        await asyncio.Event().wait()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def send(message: Any) -> None:
        sent.append(message)

    task = asyncio.create_task(CutAnswers(app)(dict(scope), receive, send))
    await waiting.wait()
    task.cancel("Task cancelled, timeout graceful shutdown exceeded")
    await task
    assert sent[-1]["more_body"] is False
    return bytes(sent[-1]["body"])


def events(*seqs: int) -> bytes:
    return "".join(event("response.output_text.delta", n, item_id="msg_1", delta="Hi") for n in seqs).encode()


async def test_a_followed_stream_is_cut_with_the_number_after_its_last_event() -> None:
    """`GET /v1/responses/{id}?stream=true&starting_after=6`: events 7 and 8, in one send; the error is 9 (it was 2)."""
    assert (await cut_after(events(7, 8)))["sequence_number"] == 9


@pytest.mark.parametrize("where", ["in-the-type", "in-the-head", "before-the-number", "in-the-number",
                                   "before-the-comma"])
async def test_a_number_split_between_two_sends_is_read(where: str) -> None:
    """An event split anywhere between two sends, its number (12) too."""
    body = events(10, 11, 12)
    head, number = body.rfind(b"data: "), body.rfind(b'12,"')
    at = {"in-the-type": head + 10, "in-the-head": head + 30, "before-the-number": number,
          "in-the-number": number + 1, "before-the-comma": number + 2}[where]
    assert (await cut_after(body[:at], body[at:]))["sequence_number"] == 13


async def test_a_number_in_an_events_text_is_not_its_sequence_number() -> None:
    """An answer's text that looks like an event's head is a JSON string (its quotes escaped), not read."""
    fake = 'data: {"type":"x","sequence_number":50}'
    body = event("response.output_text.delta", 3, delta=fake).encode()
    assert (await cut_after(body))["sequence_number"] == 4


async def test_events_without_a_number_are_counted() -> None:
    assert (await cut_after(b"event: response.created\ndata: {}\n\n", b"event: a\ndata: {}\n\nevent: b\ndata: {}\n\n")
            )["sequence_number"] == 3


async def test_a_created_stream_cut_part_way_is_numbered_after_the_last_event_it_sent() -> None:
    """POST /v1/responses (a create's stream, one event a send as responses_stream sends them): cut after events 0 to
    5, its error is 6; the control of the test below (its reading of each send is what this needs)."""
    scope = {**SCOPE, "method": "POST", "path": "/v1/responses", "raw_path": b"/v1/responses", "query_string": b""}
    name, data = (await cut_body(scope, *(events(n) for n in range(6)))).strip().split(b"\n")
    assert name == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: "))["sequence_number"] == 6


CHAT = (b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
MESSAGES = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"Hi"}}\n\n')


@pytest.mark.parametrize(("path", "headers", "chunk", "ends"), [
    ("/v1/chat/completions", [], CHAT, b'data: {"error":'),
    ("/v1/completions", [], CHAT, b'data: {"error":'),
    ("/v1/messages", [], MESSAGES, b"event: error\ndata: "),
    # a Responses route asked in Anthropic's form (its header): its error is Anthropic's, which has no number
    ("/v1/responses", [(b"anthropic-version", b"2023-06-01")], events(0), b"event: error\ndata: ")])
async def test_a_stream_whose_error_event_has_no_number_is_not_read_for_one(
        monkeypatch: pytest.MonkeyPatch, path: str, headers: list[tuple[bytes, bytes]], chunk: bytes,
        ends: bytes) -> None:
    """Only a Responses stream's error event carries a sequence_number (stopping._Watched._event). Until the
    twenty-eighth session every chunk of every translated stream (Chat Completions, Anthropic Messages) was searched
    for one (`_Watched._count`: an Anthropic event's `data: {"type":"` head matched, and was read each time) and the
    number thrown away. Now those streams' chunks are not read; their error event is as before."""
    read: list[bytes] = []
    count = stopping._Watched._count

    def counted(self: stopping._Watched, body: bytes) -> None:
        read.append(body)
        count(self, body)

    monkeypatch.setattr(stopping._Watched, "_count", counted)
    scope = {**SCOPE, "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers}
    body = await cut_body(scope, *[chunk] * 5)
    assert body.startswith(ends) and (b'"shutting_down"' in body or b'"overloaded_error"' in body), body
    assert read == []
    read.clear()
    await cut_body({**scope, "path": "/v1/responses", "headers": []}, *[events(0)] * 5)  # the control: read
    assert len(read) == 5
