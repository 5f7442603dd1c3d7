"""engines/answer_shape.py: one rule for what a choice's texts are, at each level (a whole answer's choice, message
and tool call; a streamed chunk's choice, delta and tool call piece), null being no text at every one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aigrid.engines.answer_shape import TEXTS, choice_fault, message_fault, tool_call_fault
from aigrid.gateway.usage import whole_answer


def whole(**function: Any) -> dict[str, Any]:
    """A whole answer's choice with one tool call whose function is `function`."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}", **function}}
    return {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            "finish_reason": "tool_calls"}


def piece(call: dict[str, Any]) -> dict[str, Any]:
    """A streamed chunk's choice with one tool call piece."""
    return {"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]}, "finish_reason": None}


def test_null_arguments_are_no_arguments_whole_and_streamed() -> None:
    """A tool call's `"arguments": null` passed in a stream (output_filter.unread, chat_events) and was refused in a
    whole answer (usage.not_a_completion: the engine's 502). Now it is no text at both levels, as `content: null`."""
    assert choice_fault(whole(arguments=None), whole=True) is None
    assert choice_fault(piece({"function": {"arguments": None}}), whole=False) is None
    doc = {"id": "c", "object": "chat.completion", "choices": [whole(arguments=None)]}
    raw = orjson.dumps(doc)
    assert whole_answer(raw, None)[0] == raw


@pytest.mark.parametrize("bad", [["x"], {"e": "jo@example.com"}, 5, False, ""])
def test_what_is_not_a_string_or_null_is_refused_at_every_level(bad: Any) -> None:
    """Each text (a message's or a delta's TEXTS, a completion's text, a finish_reason, a tool call's id, name and
    arguments) is a string or null, whole and streamed alike ("" is a text, kept apart from the others' check)."""
    if bad == "":
        assert choice_fault(whole(arguments=""), whole=True) is None
        return
    for key in TEXTS:
        assert message_fault({key: bad}, whole=True) is not None
        assert message_fault({key: bad}, whole=False) is not None
    for field in ("name", "arguments"):
        assert choice_fault(whole(**{field: bad}), whole=True) is not None
        assert choice_fault(piece({"function": {field: bad}}), whole=False) is not None
    assert tool_call_fault({"id": bad, "function": {"name": "f"}}, whole=True) is not None
    assert tool_call_fault({"id": bad}, whole=False) is not None
    assert choice_fault({"index": 0, "text": bad}, whole=True) is not None
    assert choice_fault({"index": 0, "text": bad}, whole=False) is not None
    assert choice_fault({"index": 0, "text": "a", "finish_reason": bad}, whole=False) is not None


def test_what_must_be_there_differs_by_level_only() -> None:
    """A whole answer's choice holds a message or a string text, its calls a function with a name; a streamed piece
    may hold none of them (SGLang streams a call's later pieces with `"id": null, "name": null`)."""
    assert choice_fault({"index": 0}, whole=True) == "a choice with neither a message nor a text"
    assert choice_fault({"index": 0, "text": None}, whole=True) == "a choice with neither a message nor a text"
    assert choice_fault({"index": 0, "message": None}, whole=True) == "a choice with neither a message nor a text"
    assert choice_fault({"index": 0, "finish_reason": "stop"}, whole=False) is None
    assert choice_fault(whole(name=None), whole=True) == "a tool call that names no function"
    assert tool_call_fault({"id": "c"}, whole=True) == "a tool call whose function is not an object"
    assert choice_fault(piece({"id": None, "function": {"name": None, "arguments": "{\"a\""}}), whole=False) is None
    assert choice_fault(piece({"id": "c"}), whole=False) is None
    assert choice_fault({"index": "0", "text": "a"}, whole=True) is not None  # a whole answer's index is a number
    assert choice_fault({"index": 0, "delta": []}, whole=False) == "a delta that is not an object"
    assert message_fault({"tool_calls": {"0": {}}}, whole=False) == "tool_calls that are not a list"
