"""The valid tool-calling conversations each door's translation passes through agents/loop.check_tool_results: since
the thirty-sixth session (968f6338) a call with no result after it is a 400, so these shapes the official clients send
must stay accepted: parallel results in any order and spread over several messages, results followed by a message, a
turn's text and calls written as separate items, reasoning items between, a server-side tool run (mcp_call) replayed
between a call and its result. Each shape was checked against the translation the door runs (Responses
input_messages, Messages placed_messages, chat as it comes); the refused shapes are tests/gateway/
test_unanswered_tool_calls.py's."""

from __future__ import annotations

from typing import Any

import pytest

from aigrid.agents.loop import check_tool_results
from aigrid.gateway.messages_schema import MessagesRequest
from aigrid.gateway.messages_translate import placed_messages
from aigrid.gateway.responses_translate import input_messages

USER = {"role": "user", "content": "Weather in Paris and Rome?"}


def _fc(cid: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": cid, "name": "get_weather", "arguments": '{"city": "Paris"}'}


def _fco(cid: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": cid, "output": "Sunny."}


SAID = {"type": "message", "role": "assistant", "content": "Let me look."}
THOUGHT = {"type": "reasoning", "id": "rs_1", "summary": []}
RAN = {"type": "mcp_call", "id": "mcp_1", "name": "calculator", "arguments": '{"expression": "1+1"}', "output": "2",
       "server_label": "aigrid", "status": "completed"}
LATER = {"type": "message", "role": "user", "content": "And tomorrow?"}

RESPONSES = {
    "parallel results in another order, then a message": [USER, _fc("a"), _fc("b"), _fco("b"), _fco("a"), LATER],
    "reasoning items between the calls": [USER, THOUGHT, _fc("a"), THOUGHT, _fc("b"), _fco("a"), _fco("b")],
    "the turn's text, then its call": [USER, SAID, _fc("a"), _fco("a"), LATER],
    "a call, then the turn's text, then its result": [USER, _fc("a"), SAID, _fco("a")],
    "a server-side run replayed between a call and its result": [USER, _fc("a"), RAN, _fco("a")],
    "a server-side run replayed, then the answer and a message": [USER, RAN, SAID, LATER],
}


@pytest.mark.parametrize("items", RESPONSES.values(), ids=RESPONSES.keys())
def test_responses_inputs_whose_calls_are_all_answered_pass(items: list[dict[str, Any]]) -> None:
    check_tool_results(input_messages(items))


def _use(*ids: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": i, "name": "get_weather",
                                              "input": {"city": "Paris"}} for i in ids]}


def _results(*ids: str, text: str | None = None) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "tool_result", "tool_use_id": i, "content": "Sunny."} for i in ids]
    return {"role": "user", "content": blocks + ([{"type": "text", "text": text}] if text else [])}


MESSAGES = {
    "results spread over two user turns": [USER, _use("t1", "t2"), _results("t1"), _results("t2")],
    "results in another order": [USER, _use("t1", "t2"), _results("t2", "t1")],
    "results with the user's text after them": [USER, _use("t1"), _results("t1", text="And tomorrow?")],
    "a text turn, then the tool_use turn": [USER, {"role": "assistant", "content": "Let me look."}, _use("t1"),
                                            _results("t1")],
    "results, then a prefill": [USER, _use("t1"), _results("t1"), {"role": "assistant", "content": "It is"}],
}


@pytest.mark.parametrize("messages", MESSAGES.values(), ids=MESSAGES.keys())
def test_messages_conversations_whose_tool_uses_are_all_answered_pass(messages: list[dict[str, Any]]) -> None:
    placed_messages(MessagesRequest.model_validate({"model": "m", "max_tokens": 8, "messages": messages}))


def _calls(*ids: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": i, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}} for i in ids]}


def _tool(cid: str | None) -> dict[str, Any]:
    return {"role": "tool", "content": "Sunny.", **({"tool_call_id": cid} if cid else {})}


CHAT = {
    "tool messages in another order, then a user message": [USER, _calls("c1", "c2"), _tool("c2"), _tool("c1"),
                                                             {"role": "user", "content": "And tomorrow?"}],
    "tool messages naming no call answer the calls in turn": [USER, _calls("c1", "c2"), _tool(None), _tool(None)],
    "the turn's text and its calls as two assistant messages": [USER, {"role": "assistant", "content": "Let me look."},
                                                                _calls("c1"), _tool("c1")],
}


@pytest.mark.parametrize("messages", CHAT.values(), ids=CHAT.keys())
def test_chat_conversations_whose_calls_are_all_answered_pass(messages: list[dict[str, Any]]) -> None:
    check_tool_results(messages)
