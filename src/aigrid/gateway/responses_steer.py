"""`response.steer` of the Responses API's WebSocket mode (responses_socket.py): what a steer may hold, the
successor request it becomes, and the events that answer it (the openai SDK's ResponseSteerAcceptedEvent,
ResponseSteerPendingEvent, ResponseSteerFailedEvent). docs/responses-api.md, "Steering", says what the socket
does with them.

A steer's input is user messages only (a string is one): each message holds `type` (optional, `message`),
`role` (`user`) and `content` (a string, or `input_text`, `input_image` and `input_file` parts), and is then
read as any `response.create` input is (responses_translate.input_messages: a part this gateway does not serve,
such as `input_file`, is refused here too). An automatic successor is the target's own `response.create`
(its model, instructions, tools, max_output_tokens, temperature, store, metadata, ...) with `input` the
queued steers' items in submission order and `previous_response_id` the target.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.errors import InvalidRequest
from aigrid.gateway.envelope import bounded_message, field_name
from aigrid.gateway.responses_translate import input_messages

MAX_STEERS = 16
"""Steers one response may hold queued; one more is refused (`too_many_pending_steers`). Besides, a response's
successor (its settings and all its steers) is at most `max_body_bytes`, as any request body, and the steers a
socket holds queued are at most `max_body_bytes` together."""
EVENT_FIELDS = frozenset({"type", "previous_response_id", "input"})
MESSAGE_FIELDS = frozenset({"type", "role", "content"})
PARTS = ("input_text", "input_image", "input_file")
NOT_INHERITED = frozenset({"input", "previous_response_id", "conversation"})
"""What a successor does not take from its target's `response.create` (the rest are the target's settings)."""
_CALL_STUBS = {"function_call": "function_call_output", "custom_tool_call": "custom_tool_call_output"}
_RESULTS = frozenset(_CALL_STUBS.values())


@dataclass(eq=False)
class Steer:
    """One accepted steer: its id, the message the client sent, held as its bytes (parsed, a message of many small
    parts is held as about 12 times its bytes), and the size of its items as JSON (what a successor's input gets);
    its input (returned if it cannot be committed) and items are read from the message when they are needed."""

    id: str
    target: str
    stream_id: str | None
    """The target's lane (its `response.create`'s stream_id), which every event about this steer names."""
    message: bytes
    """The `response.steer` event as the client sent it, already checked (steer_items)."""
    size: int

    @property
    def input(self) -> Any:
        return orjson.loads(self.message)["input"]

    @property
    def items(self) -> list[dict[str, Any]]:
        return steer_items(orjson.loads(self.message))


def steer_items(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The steer event's input as input items; InvalidRequest (naming the field) for anything else."""
    extra = sorted(set(event) - EVENT_FIELDS)
    if extra:
        raise InvalidRequest(f"{extra[0]}: response.steer takes only type, previous_response_id and input (the "
                             "target response decides the lane)", param=extra[0])
    target = event.get("previous_response_id")
    if not isinstance(target, str) or not target:
        raise InvalidRequest("previous_response_id: the id of a response of this socket is required",
                             param="previous_response_id")
    value = event.get("input")
    if isinstance(value, str) and value:
        items = [{"type": "message", "role": "user", "content": value}]
    elif isinstance(value, list) and value:
        items = [_message(item, ("input", i)) for i, item in enumerate(value)]
    else:
        raise InvalidRequest("input: a non-empty string or a non-empty list of user messages is required",
                             param="input")
    input_messages(items)  # read as response.create reads its input: what it does not serve is refused here
    return items


def _message(item: Any, where: tuple[int | str, ...]) -> dict[str, Any]:
    at = field_name(where)
    kind = item.get("type", "message") if isinstance(item, dict) else None
    if kind != "message":
        raise InvalidRequest(f"{at}.type: steering takes user messages only, not {kind!r} items (a tool's "
                             "output goes in response.create)", param=f"{at}.type")
    if item.get("role") != "user":
        raise InvalidRequest(f"{at}.role: steering takes user messages only, not {item.get('role')!r}",
                             param=f"{at}.role")
    extra = sorted(set(item) - MESSAGE_FIELDS)
    if extra:
        raise InvalidRequest(f"{at}.{extra[0]}: a steering message holds only type, role and content",
                             param=f"{at}.{extra[0]}")
    content = item.get("content")
    if isinstance(content, list) and content:
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PARTS:
                field = field_name((*where, "content", j, "type"))
                raise InvalidRequest(f"{field}: {kind!r}; steering takes {', '.join(PARTS)} parts", param=field)
    elif not isinstance(content, str) or not content:
        raise InvalidRequest(f"{at}.content: a non-empty string or list of content parts is required",
                             param=f"{at}.content")
    return {**item, "type": "message"}


def new_steer(event: Mapping[str, Any], message: bytes, items: list[dict[str, Any]], stream_id: str | None) -> Steer:
    """`message`: the event as sent; `items`: its steer_items."""
    return Steer(f"steer_{uuid.uuid4().hex[:24]}", event["previous_response_id"], stream_id, message,
                 len(orjson.dumps(items)))


def unsupported(create: Mapping[str, Any]) -> str | None:
    """Why a response of this `response.create` cannot be steered (its successor could not continue it), or None."""
    if create.get("store") is False:
        return "it is not stored (store: false), so no successor can continue it"
    if create.get("conversation") is not None:
        return "it is bound to a conversation"
    if create.get("context_management"):
        return "it uses automatic compaction (context_management)"
    return None


def successor_size(create: Mapping[str, Any], target: str, steers: Sequence[Steer]) -> int:
    """The bytes of `successor(create, target, steers)` as JSON, without reading the steers' messages: each
    steer's items, `[...]` of `size` bytes, are joined in one list (one comma between two)."""
    empty = len(orjson.dumps(successor(create, target, ())))
    return empty + sum(s.size - 2 for s in steers) + max(len(steers) - 1, 0)


def successor(create: Mapping[str, Any], target: str, steers: Sequence[Steer]) -> dict[str, Any]:
    """The automatic successor's `response.create`: the target's settings, its steers' items as input."""
    body = {k: v for k, v in create.items() if k not in NOT_INHERITED}
    return {**body, "previous_response_id": target, "input": [item for s in steers for item in s.items]}


def prepended(create: dict[str, Any], steers: Sequence[Steer]) -> bool:
    """A client's `response.create` continuing a response whose steers wait for its tool results: their items,
    in submission order, before its own input, past the tool results it begins with (a chat engine reads a
    call's result right after the call: a message between is refused, agents/loop.check_tool_results). False:
    an input that is neither a string nor a list, left to the endpoint's 400."""
    own = create.get("input")
    if isinstance(own, str):
        own = [{"type": "message", "role": "user", "content": own}]
    if not isinstance(own, list):
        return False
    results = 0
    while results < len(own) and isinstance(own[results], dict) and own[results].get("type") in _RESULTS:
        results += 1
    create["input"] = [*own[:results], *(item for s in steers for item in s.items), *own[results:]]
    return True


def required_input(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Stubs of the results a response's client-owned tool calls wait for (its function calls)."""
    stubs = []
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in _CALL_STUBS:
            stub = {"type": _CALL_STUBS[kind], "call_id": item.get("call_id")}
            stubs.append({**stub, "name": item.get("name")} if kind == "function_call" else stub)
    return stubs


def accepted(seq: int, steer: Steer) -> bytes:
    return _event("response.steer.accepted", seq, steer.stream_id,
                  steer={"id": steer.id, "previous_response_id": steer.target})


def pending(seq: int, steer: Steer, required: list[dict[str, Any]]) -> bytes:
    return _event("response.steer.pending", seq, steer.stream_id, reason="waiting_for_required_input",
                  required_input=required, steer={"id": steer.id, "previous_response_id": steer.target})


def failed(seq: int, code: str, message: str, sent: Mapping[str, Any] | Steer, stream_id: str | None = None) -> bytes:
    """`sent`: the steer event as the client sent it (refused before it had an id), or an accepted steer; its
    input and target are returned as they came."""
    if isinstance(sent, Steer):
        steer, stream_id = {"id": sent.id, "input": sent.input, "previous_response_id": sent.target}, sent.stream_id
    else:
        steer = {"input": sent.get("input"), "previous_response_id": sent.get("previous_response_id")}
    return _event("response.steer.failed", seq, stream_id,
                  error={"type": "invalid_request_error", "code": code, "message": bounded_message(message)},
                  steer=steer)


def _event(kind: str, seq: int, stream_id: str | None, **fields: Any) -> bytes:
    lane = {} if stream_id is None else {"stream_id": stream_id}
    return orjson.dumps({"type": kind, "sequence_number": seq, **lane, **fields})
