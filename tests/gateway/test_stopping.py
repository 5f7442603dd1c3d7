"""stopping.CutAnswers: what a request the stop cancels answers, in each front door's form (the real processes:
test_shutdown.py). Before, uvicorn's plain-text 500 for a request whose answer had not begun, and a stream's
chunked body broken off."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from aigrid.gateway.stopping import CutAnswers


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
            "server": ("gw", 80), "client": ("127.0.0.1", 5000), "headers": headers or []}


async def _cut(path: str, *, stream: bytes | None, headers: list[tuple[bytes, bytes]] | None = None
               ) -> list[dict[str, Any]]:
    """The messages sent for a request cancelled while its app waits: after `stream` (an SSE body begun), or
    before any answer (None)."""
    sent: list[dict[str, Any]] = []
    waiting = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if stream is not None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
            await send({"type": "http.response.body", "body": stream, "more_body": True})
        waiting.set()
        await asyncio.Event().wait()  # an engine that has not answered yet

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def send(message: Any) -> None:
        sent.append(message)

    task = asyncio.create_task(CutAnswers(app)(_scope(path, headers), receive, send))
    await waiting.wait()
    task.cancel("Task cancelled, timeout graceful shutdown exceeded")  # uvicorn's, at the end of the grace
    await task  # the cut is answered, not raised on
    return sent


def _last_event(sent: list[dict[str, Any]]) -> bytes:
    last = sent[-1]
    assert last["type"] == "http.response.body" and last["more_body"] is False  # the body ends whole
    return bytes(last["body"])


async def test_a_request_cut_before_its_answer_is_a_503_shutting_down_in_its_envelope() -> None:
    sent = await _cut("/v1/chat/completions", stream=None)
    assert sent[0]["status"] == 503
    headers = dict(sent[0]["headers"])
    assert headers[b"retry-after"] == b"1"
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "shutting_down"
    sent = await _cut("/v1/messages", stream=None)  # Anthropic's door: its envelope and status for an overload
    assert sent[0]["status"] == 529
    assert orjson.loads(sent[1]["body"])["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(("path", "headers"), [("/v1/chat/completions", None), ("/v1/completions", None)])
async def test_an_openai_stream_cut_ends_with_an_error_event(path: str, headers: Any) -> None:
    event = _last_event(await _cut(path, stream=b'data: {"choices":[]}\n\n', headers=headers))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert orjson.loads(event[len(b"data: "):])["error"]["code"] == "shutting_down"


async def test_a_messages_stream_cut_ends_with_anthropics_error_event() -> None:
    event = _last_event(await _cut("/v1/messages", stream=b"event: message_start\ndata: {}\n\n"))
    name, data = event.strip().split(b"\n")
    assert name == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: "))["error"]["type"] == "overloaded_error"


async def test_a_responses_stream_cut_ends_with_an_error_event_numbered_after_the_last() -> None:
    begun = b"event: response.created\ndata: {}\n\nevent: response.in_progress\ndata: {}\n\n"
    event = _last_event(await _cut("/v1/responses", stream=begun))
    name, data = event.strip().split(b"\n")
    assert name == b"event: error"
    body = orjson.loads(data.removeprefix(b"data: "))
    assert body["code"] == "shutting_down" and body["sequence_number"] == 2


async def test_a_whole_body_begun_and_cut_is_raised_on_as_before() -> None:
    """Nothing can be added to a JSON body begun: the cancel goes on (uvicorn closes the connection)."""
    begun = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
        begun.set()
        await asyncio.Event().wait()

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        await asyncio.Event().wait()

    task = asyncio.create_task(CutAnswers(app)(_scope("/v1/chat/completions"), receive, send))
    await begun.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sent) == 2  # nothing sent after the cut


async def test_a_cancelled_error_that_is_no_cancel_of_the_request_is_raised_on() -> None:
    """A CancelledError out of the app while nobody cancelled its task (a future some other task cancelled, awaited
    here: a bug of ours, stop or no stop) is not a cut: it goes on to uvicorn (its 500 and the traceback in the
    log), not answered 503 `shutting_down` with nothing logged."""
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        other = asyncio.get_running_loop().create_future()
        other.cancel()
        await other

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        await asyncio.Event().wait()

    with pytest.raises(asyncio.CancelledError):
        await CutAnswers(app)(_scope("/v1/chat/completions"), receive, send)
    assert sent == []
