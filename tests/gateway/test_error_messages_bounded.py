"""Every error a client gets has its message bounded in the one place each envelope is rendered
(envelope.bounded_message: error_response, anthropic_error and the Responses WebSocket's error event), not only a
schema's 400 (from_validation). About 40 messages quote a client's value or an id taken from the URL with repr:
a Responses `include` entry of 100,000 characters was a 100,405-byte 400, and GET /v1/responses/<60,000 characters>
said the id back whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.envelope import ERROR_MESSAGE_CHARS, SHOWN_CHARS, bounded_message
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
BIG = "x" * 100_000
CUT = "x" * SHOWN_CHARS + "..."
ANTHROPIC = {"anthropic-version": "2023-06-01"}


@pytest.mark.parametrize("headers", [{}, ANTHROPIC], ids=["openai", "anthropic"])
@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi", "include": [BIG]}, "include[0]"),
    ("GET", "/v1/responses/" + BIG[:60_000], None, None),  # httpx sends a URL of at most 65,536
], ids=["include", "url-id"])
async def test_a_clients_long_value_is_cut_in_every_envelope(
        tmp_path: Path, fakes: dict[str, FakeEngine], headers: dict[str, str], method: str, path: str,
        body: dict[str, Any] | None, field: str | None) -> None:
    async with serving(spec_in(tmp_path), fakes) as (http, _):
        r = await http.request(method, path, json=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text[:500]
    assert len(r.content) < 2_000, len(r.content)  # 100,405 bytes for the include entry before
    doc = r.json()
    message = doc["error"]["message"]
    assert CUT in message and "x" * (SHOWN_CHARS + 1) not in message, message
    if field is not None:
        assert field in message, message
    assert ("type" in doc and doc["type"] == "error") == bool(headers), doc


@pytest.mark.parametrize("event", [
    {"type": "response.create", "model": MODEL, "input": "hi", "include": [BIG]},
    {"type": BIG},  # refused by the socket itself, its envelope rendered by _error_event alone
], ids=["include", "event-type"])
def test_the_sockets_error_event_is_cut(tmp_path: Path, event: dict[str, Any]) -> None:
    """The WebSocket's `error` event renders its envelope itself (responses_socket._error_event): bounded too."""
    from tests.gateway.socket_grid import served

    with served(tmp_path) as grid:
        with grid.sync_client().responses.connect() as conn:
            conn.send_raw(json.dumps(event))
            raw = conn.recv_bytes()
    error = json.loads(raw)
    assert error["type"] == "error" and 400 <= error["status"] < 500, raw[:500]
    assert len(raw) < 2_000, len(raw)
    message = error["error"]["message"]
    assert CUT in message and "x" * (SHOWN_CHARS + 1) not in message, message
    assert ("include[0]" if "include" in event else "type") in message, message


def test_a_short_message_is_the_same_object_and_a_long_one_unquoted_is_cut_whole() -> None:
    short = "include[0]: invalid value 'x'; supported values are 'a', 'b'"
    assert bounded_message(short) is short
    long = "response " + "y" * 10_000 + " not found"
    shown = bounded_message(long)
    assert shown.startswith(long[:ERROR_MESSAGE_CHARS]) and shown.endswith(f"... ({len(long):,} characters)")


def test_a_steers_refusal_is_cut_in_its_message() -> None:
    """A steer's `response.steer.failed` (responses_steer.failed) says the target id in its message: bounded; the
    steer itself is returned as sent (so the client can send it again), not cut."""
    from aigrid.gateway.responses_steer import failed

    sent = {"type": "response.steer", "previous_response_id": BIG, "input": "hi"}
    event = json.loads(failed(0, "response_not_found", f"no response {BIG!r} is running on this socket", sent))
    message = event["error"]["message"]
    assert CUT in message and "x" * (SHOWN_CHARS + 1) not in message and message.startswith("no response 'x")
    assert event["steer"]["previous_response_id"] == BIG


async def test_the_messages_streams_error_event_is_cut() -> None:
    """An error mid-stream on /v1/messages (an engine's error event, its message as sent) is rendered by
    messages_stream.anthropic_stream itself, not anthropic_error: bounded there too (review RV10)."""
    from collections.abc import AsyncIterator

    from aigrid.gateway.chat_events import ChatEvent, StreamError
    from aigrid.gateway.messages_stream import anthropic_stream

    async def events() -> AsyncIterator[ChatEvent]:
        yield StreamError(f"the answer was interrupted: {BIG!r}", "error")

    chunks = [c async for c in anthropic_stream(events(), message_id="msg_1", model=MODEL, input_estimate=1)]
    last = chunks[-1].decode()
    assert last.startswith("event: error"), last[:200]
    assert len(last) < 2_000, len(last)  # 100,1xx bytes before
    assert CUT in last and "x" * (SHOWN_CHARS + 1) not in last, last[:500]
