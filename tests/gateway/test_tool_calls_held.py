"""What a translated door holds of an engine's tool calls is bounded (chat_events.MAX_TOOL_CALLS,
MAX_TOOL_ARGS_CHARS): the Messages door holds every call waiting for the open tool_use block, the Responses door every
call open at once, until the answer's end. An engine past either bound ends the answer with the door's own error, its
quota settled and its audit record written, the engine charged a failure."""

from __future__ import annotations

from typing import Any

import pytest

from aigrid.gateway import chat_events
from tests.gateway import hostile_grid as T
from tests.gateway.metered_gateway import balance, inflight, the_one_record
from tests.gateway.translating_grid import chunk, engine, grid


def _calls(n: int, arguments: str) -> list[dict[str, Any]]:
    """`n` calls begun, each with `arguments` never whole (an object left open), so the Messages door holds each."""
    return [chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                   "function": {"name": "f", "arguments": arguments}}]}) for i in range(n)]


@pytest.mark.parametrize("bound", ["calls", "chars"])
@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_an_engine_past_the_held_bound_ends_the_answer_with_the_doors_error(
        tmp_path, monkeypatch: pytest.MonkeyPatch, door: str, bound: str) -> None:
    monkeypatch.setattr(chat_events, "MAX_TOOL_CALLS", 20)  # small bounds: a small test (a renamed one fails here)
    monkeypatch.setattr(chat_events, "MAX_TOOL_ARGS_CHARS", 2000)
    events = _calls(21, '{"a": 1') if bound == "calls" else _calls(5, '{"a": "' + "x" * 500)
    async for g in grid(tmp_path, engine(events=[*events, chunk({}, "tool_calls")])):
        r = await g.post(door, True)
        assert r.status_code == 200 and T.ENDS[door] in r.content
        said = b"more than 20 tool calls" if bound == "calls" else b"more than 2,000 characters of tool-call arguments"
        assert said in r.content
        row = await the_one_record(g.gw)
        assert row["outcome"] == "interrupted"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0
        assert await balance(g.gw) == row["extra"]["charged_tokens"] > 0  # settled once, as its record says


@pytest.mark.parametrize("door", ["messages", "responses"])
async def test_an_engine_within_the_bound_is_answered(tmp_path, monkeypatch: pytest.MonkeyPatch, door: str) -> None:
    monkeypatch.setattr(chat_events, "MAX_TOOL_CALLS", 20)
    async for g in grid(tmp_path, engine(events=[*_calls(20, "{}"), chunk({}, "tool_calls")])):
        r = await g.post(door, True)
        assert r.status_code == 200 and T.ENDS[door] not in r.content
        assert (await the_one_record(g.gw))["outcome"] == "ok"
