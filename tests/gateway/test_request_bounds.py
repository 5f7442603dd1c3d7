"""The number of messages and content parts one request may hold (schemas.MAX_PARTS), the same on every front door."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aigrid.errors import InvalidRequest
from aigrid.gateway.app import Gateway
from aigrid.gateway.front_door import validate
from aigrid.gateway.messages_schema import MessagesRequest
from aigrid.gateway.responses_schema import ResponsesRequest
from aigrid.gateway.schemas import MAX_PARTS, ChatRequest, counted_parts

MODEL = "smollm2-135m"


def parts(n: int, kind: str = "text") -> list[dict[str, str]]:
    return [{"type": kind, "text": "12 "} for _ in range(n)]


HI = [{"role": "user", "content": "hi"}]


def test_anthropic_system_blocks_count_with_the_messages_and_a_request_over_is_refused_naming_system() -> None:
    """`system` blocks were not counted: 100,000 of them were validated whole. They count with the messages and
    their blocks now, the 400 naming `system`; a request of exactly MAX_PARTS passes."""
    def body(system: int, blocks: int) -> dict[str, Any]:
        return {"model": MODEL, "max_tokens": 8, "system": parts(system),
                "messages": [{"role": "user", "content": parts(blocks) if blocks else "hi"}]}

    for ok in (body(MAX_PARTS - 1, 0), body(MAX_PARTS // 2 - 1, MAX_PARTS // 2), body(0, 0)):
        validate(MessagesRequest, ok)
    for over in (body(100_000, 0), body(MAX_PARTS, 0), body(MAX_PARTS // 2, MAX_PARTS // 2)):
        with pytest.raises(InvalidRequest) as e:
            validate(MessagesRequest, over)
        assert e.value.param == "system" and "system blocks" in e.value.message, e.value.message
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": parts(MAX_PARTS // 2)}
    with pytest.raises(InvalidRequest) as e:  # a tool result's blocks count too
        validate(MessagesRequest, {"model": MODEL, "max_tokens": 8, "system": parts(MAX_PARTS // 2),
                                   "messages": [{"role": "user", "content": [tool_result]}]})
    assert e.value.param == "system", e.value.message


def test_anthropic_system_blocks_and_messages_are_counted_by_the_one_counter_of_the_raw_messages() -> None:
    """`system` is bounded with the validated messages by the counter that bounds the raw ones (counted_parts):
    text, tool use and tool result blocks, a tool result's own blocks, a string content; exactly MAX_PARTS pass."""
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": parts(7)}
    tool_use = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [*parts(3), tool_use]},
                {"role": "user", "content": [tool_result, *parts(2)]}]
    assert counted_parts(messages) == 3 + 4 + 2 + 7 + 1 == counted_parts(validate(MessagesRequest, {
        "model": MODEL, "max_tokens": 8, "messages": messages}).messages)
    room = MAX_PARTS - counted_parts(messages)
    validate(MessagesRequest, {"model": MODEL, "max_tokens": 8, "system": parts(room), "messages": messages})
    with pytest.raises(InvalidRequest) as e:
        validate(MessagesRequest, {"model": MODEL, "max_tokens": 8, "system": parts(room + 1), "messages": messages})
    assert e.value.param == "system" and f"{MAX_PARTS + 1:,} system blocks" in e.value.message, e.value.message


def test_a_chat_request_of_more_parts_than_one_request_holds_is_refused_before_its_messages_are_read() -> None:
    """10,000 in all (a message and its parts) pass; one more is the client's 400 naming `messages`."""
    validate(ChatRequest, {"model": MODEL, "messages": [{"role": "user", "content": parts(MAX_PARTS - 1)}]})
    for messages in ([{"role": "user", "content": parts(MAX_PARTS)}],
                     [{"role": "user", "content": "12 "} for _ in range(MAX_PARTS + 1)],
                     [{"role": "user", "content": parts(MAX_PARTS // 2)},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                          for i in range(MAX_PARTS // 2)]}]):
        with pytest.raises(InvalidRequest) as e:
            validate(ChatRequest, {"model": MODEL, "messages": messages})
        assert e.value.param == "messages" and "content parts" in e.value.message


@pytest.mark.parametrize("schema,body,field", [
    (MessagesRequest, {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": parts(MAX_PARTS)}]},
     "messages"),
    (MessagesRequest, {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": parts(MAX_PARTS)}]}]}, "messages"),
    (ResponsesRequest, {"model": MODEL, "input": [{"role": "user", "content": parts(MAX_PARTS, "input_text")}]},
     "input"),
], ids=["anthropic blocks", "anthropic tool result blocks", "responses parts"])
def test_every_front_doors_schema_holds_a_request_to_the_same_number_of_parts(
        schema: type, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        validate(schema, body)
    assert e.value.param == field and "content parts" in e.value.message


@pytest.mark.parametrize("route,body,field", [
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": parts(MAX_PARTS)}]},
     "messages"),
    ("/v1/messages", {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": parts(MAX_PARTS)}]},
     "messages"),
    ("/v1/messages/batches", {"requests": [{"custom_id": "a", "params": {
        "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": parts(MAX_PARTS)}]}}]},
     "requests.0.params.messages"),
    ("/v1/messages", {"model": MODEL, "max_tokens": 8, "system": parts(MAX_PARTS), "messages": HI}, "system"),
    ("/v1/messages/batches", {"requests": [{"custom_id": "a", "params": {
        "model": MODEL, "max_tokens": 8, "system": parts(MAX_PARTS), "messages": HI}}]}, "requests.0.params.system"),
    ("/v1/responses", {"model": MODEL, "input": [{"role": "user", "content": parts(MAX_PARTS, "input_text")}]},
     "input"),
], ids=["chat", "anthropic", "anthropic batch", "anthropic system", "anthropic batch system", "responses"])
async def test_a_request_of_more_parts_than_one_holds_is_the_clients_400_in_its_own_envelope(
        client: httpx.AsyncClient, gateway: Gateway, monkeypatch: pytest.MonkeyPatch, route: str, body: dict[str, Any],
        field: str) -> None:
    """10,001 text parts of "12 " in one user turn: the chat route refused them as texts for the firewall after
    validating them, while the Anthropic and Responses front doors joined them into one text and served them (the
    firewall's cost is per part, at its seams too). Each front door refuses them now, before they are validated
    or read, naming its own field in its own envelope."""
    def unread(tenant: str, texts: list[object]) -> None:
        raise AssertionError(f"the firewall was handed {len(texts)} texts")

    monkeypatch.setattr(gateway.guard.screen.firewall, "check_texts", unread)
    r = await client.post(route, json=body)
    err = r.json()["error"]
    assert r.status_code == 400 and err["type"] == "invalid_request_error", r.text
    assert f"'{field}'" in err["message"] and "content parts" in err["message"], r.text
    assert err.get("param", field) == field, r.text  # Anthropic's envelope has no param: its message names it
