"""A request holds at most body_values.MAX_VALUES JSON values, counted before any of it is validated or read: a body
of many tiny values (`[[], [], ...]` in a tool's schema, template variables, a response format's schema) held the
event loop 6-8.7 s on a live gateway and was served (ATK4)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets.sync.client

from aigrid.gateway import parse_pool, responses_socket, routes
from aigrid.gateway.app import Gateway
from aigrid.gateway.body_values import (
    MAX_ARGUMENT_VALUES,
    MAX_OPTION_VALUES,
    MAX_VALUES,
    OFF_LOOP_BYTES,
    crowded_field,
    crowding,
)
from tests.gateway import batch_helpers
from tests.gateway.batch_helpers import Gated, clients, jsonl, line, received, submit
from tests.gateway.socket_grid import MODEL, TENANT, served

engines, gw = batch_helpers.engines, batch_helpers.gw  # its fixtures

PAST: list[list[object]] = [[]] * (MAX_VALUES + 1)
"""More tiny values than a request may hold, 300 KB of JSON."""
CHAT = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
CHAT_TOOL_SMALL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CHAT_TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"a": {"enum": PAST}}}}}


def test_the_count_names_the_crowded_field() -> None:
    assert crowded_field({**CHAT, "tools": [CHAT_TOOL]}) == "tools"
    assert crowded_field({**CHAT, "chat_template_kwargs": {"k": PAST}}) == "chat_template_kwargs"
    assert crowded_field({**CHAT, "metadata": {f"k{i}": 0 for i in range(MAX_VALUES)}}) == "metadata"  # keys count
    assert crowded_field({**CHAT, "x": [0] * MAX_VALUES}) == "x"  # numbers count
    assert crowded_field({"model": "m", "prompt": ["a"] * MAX_VALUES}) == "prompt"
    # the body, its 2 keys and their values (5) besides the input's items
    assert crowded_field({"model": "m", "input": [0] * (MAX_VALUES - 5)}) is None  # at the bound: served
    assert crowded_field({"model": "m", "input": [0] * (MAX_VALUES - 4)}) == "input"
    small = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    raw = orjson.dumps({**CHAT, "tools": [small] * 3})
    assert crowded_field(orjson.loads(raw), raw) is None  # the raw count lets a small body through unwalked
    # a large ordinary request is far below the bound: 10,000 text parts (schemas.MAX_PARTS) in 1,000 messages
    parts = [{"role": "user", "content": [{"type": "text", "text": "12 "}] * 10}] * 1000
    assert crowded_field({**CHAT, "messages": parts}) is None


def test_the_field_named_is_the_one_of_the_most_values_not_the_last_counted() -> None:
    """The field holding most of a crowded body's values is named, whatever the order of its keys: 199,000 values of
    a tool's schema before 500 text parts named `messages`, the field the count passed in (review RV1)."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"enum": [[]] * 199_000}}}]
    messages = [{"role": "user", "content": [{"type": "text", "text": "x"}] * 500}]
    assert crowded_field({"model": "m", "tools": tools, "messages": messages}) == "tools"
    assert crowded_field({"model": "m", "messages": messages, "tools": tools}) == "tools"


class _Uncounted(bytes):
    """A body's bytes that must not be scanned."""

    def count(self, *args: object) -> int:  # type: ignore[override]
        raise AssertionError("a body too short to pass the bound was scanned")


def test_a_body_too_short_to_pass_the_bound_is_neither_scanned_nor_walked() -> None:
    """Fewer than MAX_OPTION_VALUES / 2 bytes cannot hold more than MAX_OPTION_VALUES values (each value but the first
    follows a comma or opens with a bracket, a key follows one too): such a body costs no scan of its bytes, which cost
    ~1 us a KB (review RV1)."""
    body = {**CHAT, "messages": [{"role": "user", "content": "a, b, c " * 100}] * 10}
    raw = orjson.dumps(body)
    assert len(raw) > 8_000 and 2 * len(raw) < MAX_OPTION_VALUES
    assert crowded_field(orjson.loads(raw), _Uncounted(raw)) is None
    past = orjson.dumps({**CHAT, "x": [0] * MAX_VALUES})  # past it: counted, then walked
    assert crowded_field(orjson.loads(past), past) == "x"


class _Unread(list[object]):
    """A list whose items must not be walked: its length alone passes the bound."""

    def __iter__(self) -> Iterator[object]:
        raise AssertionError("a list past the bound was walked item by item")


def test_a_list_past_the_bound_is_counted_by_its_length_not_walked() -> None:
    """The count stops at the bound (at most MAX_VALUES steps): one list of a million items, which its length alone
    puts past it, is not walked item by item (it was: 1.3 M empty arrays cost as long as their JSON parse, 0.2 s)."""
    assert crowded_field({**CHAT, "tools": [{"x": _Unread([0] * (MAX_VALUES + 1))}]}) == "tools"


def _anthropic_400(r: httpx.Response) -> str:
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    return str(r.json()["error"]["message"])


@pytest.mark.parametrize(("path", "body", "field", "bound"), [
    ("/v1/chat/completions", {**CHAT, "tools": [CHAT_TOOL]}, "tools", MAX_OPTION_VALUES),
    ("/v1/chat/completions", {**CHAT, "chat_template_kwargs": {"k": PAST}}, "chat_template_kwargs", MAX_OPTION_VALUES),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"enum": PAST}}}}}}, "response_format", MAX_OPTION_VALUES),
    ("/v1/completions", {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 4, "logit_bias": {"1": PAST}},
     "logit_bias", MAX_OPTION_VALUES),
    ("/v1/responses", {"model": "smollm2-135m", "input": "hi", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"a": {"enum": PAST}}}}]},
     "tools", MAX_OPTION_VALUES),
    ("/v1/messages", {**MESSAGES, "tools": [{"name": "f", "input_schema": {
        "type": "object", "properties": {"a": {"enum": PAST}}}}]}, "tools", MAX_OPTION_VALUES),
    ("/v1/messages/batches", {"requests": [{"custom_id": "a", "params": {**MESSAGES, "tools": [
        {"name": "f", "input_schema": {"type": "object", "properties": {"a": {"enum": PAST}}}}]}}]},
     "requests.0.params.tools", MAX_OPTION_VALUES),
    ("/v1/responses", {"model": "smollm2-135m", "input": PAST}, "input", MAX_VALUES),
])
async def test_a_body_of_more_values_than_a_request_holds_is_the_clients_400_naming_the_field(
        client: httpx.AsyncClient, fakes: dict, path: str, body: dict, field: str, bound: int) -> None:
    r = await client.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
    if path.startswith("/v1/messages"):
        message = _anthropic_400(r)
    else:
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == field and err["code"] == "invalid_request", err
        message = err["message"]
    assert message.startswith(f"{field}: ") and f"more than {bound:,} JSON values" in message, message
    assert not any(f.received for f in fakes.values())  # no engine was asked



async def test_a_batch_line_of_more_values_than_a_request_holds_fails_validation_naming_it(
        gw: Gateway, engines: dict[str, Gated]) -> None:
    oai, _ = clients(gw)
    created = await submit(oai, jsonl(line("a", "hi"), line("b", "hi", chat_template_kwargs={"k": PAST})))
    assert created.status == "failed" and created.errors is not None, created
    first = created.errors.data[0]
    assert (first.code, first.line, first.param) == ("invalid_request", 2, "body.chat_template_kwargs"), first
    assert f"more than {MAX_OPTION_VALUES:,} JSON values" in (first.message or "")
    assert received(engines) == []


def test_the_fields_outside_the_conversation_hold_a_tenth_of_the_bound_together() -> None:
    """A request's tools, schemas, template variables and options are walked value by value on the event loop by
    several readers: at MAX_VALUES one tool's schema held it 1.2-1.7 s (review RV1). They hold MAX_OPTION_VALUES
    together, the conversation's fields MAX_VALUES."""
    assert crowding({**CHAT, "x": [0] * MAX_OPTION_VALUES}) is None  # at the bound: served
    assert crowding({**CHAT, "x": [0] * (MAX_OPTION_VALUES + 1)}) == ("x", MAX_OPTION_VALUES)
    half: list[list[object]] = [[]] * (MAX_OPTION_VALUES // 2 + 1)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"enum": half + [[]]}}}]
    both = {**CHAT, "tools": tools, "chat_template_kwargs": {"k": half}}
    assert crowding(both) == ("tools", MAX_OPTION_VALUES)  # together past it: the field of the most named
    raw = orjson.dumps(both)
    assert crowding(orjson.loads(raw), raw) == ("tools", MAX_OPTION_VALUES)  # the raw counts let it through to the walk
    history = {**CHAT, "tools": [CHAT_TOOL_SMALL], "messages": [{"role": "user", "content": [{"type": "text",
                                                                                               "text": "x"}] * 9000}]}
    raw = orjson.dumps(history)
    assert crowding(orjson.loads(raw), raw) is None  # 36,000 values in the messages: served


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"enum": [[]] * MAX_OPTION_VALUES}}}}}]}, "tools"),
    ("/v1/chat/completions", {**CHAT, "chat_template_kwargs": {"k": [[]] * MAX_OPTION_VALUES}}, "chat_template_kwargs"),
    ("/v1/messages", {**MESSAGES, "tools": [{"name": f"f{i}", "input_schema": {"type": "object"}}
                                            for i in range(MAX_OPTION_VALUES // 6)]}, "tools"),
])
async def test_a_body_of_more_option_values_than_a_request_holds_is_the_clients_400(
        client: httpx.AsyncClient, fakes: dict, path: str, body: dict, field: str) -> None:
    """Past MAX_OPTION_VALUES outside the conversation, well under MAX_VALUES: served before (review RV1)."""
    r = await client.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
    if path.startswith("/v1/messages"):
        message = _anthropic_400(r)
    else:
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == field, r.text
        message = r.json()["error"]["message"]
    assert message.startswith(f"{field}: ") and f"more than {MAX_OPTION_VALUES:,} JSON values" in message, message
    assert not any(f.received for f in fakes.values())  # no engine was asked


def _called(arguments: str) -> dict:
    return {**CHAT, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]}


async def test_a_tool_calls_arguments_count_as_the_values_they_hold_string_or_object(
        client: httpx.AsyncClient, fakes: dict) -> None:
    """A tool call's arguments are walked by the firewall and the tool loop as the tools are, parsed first where they
    are a JSON text (OpenAI's form): their values count, against MAX_ARGUMENT_VALUES together, in a string as in an
    Anthropic `tool_use` block's `input` (a string of 200,000 empty arrays was one value, served after holding the
    loop 3 s; review RV1 follow-up). A long history of ordinary calls is within."""
    many: list[list[object]] = [[]] * MAX_ARGUMENT_VALUES
    body = _called(orjson.dumps({"k": many}).decode())
    assert crowding(body) == ("messages", MAX_ARGUMENT_VALUES)
    r = await client.post("/v1/chat/completions", content=orjson.dumps(body),
                          headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
    assert f"more than {MAX_ARGUMENT_VALUES:,} JSON values" in r.json()["error"]["message"]
    assert not any(f.received for f in fakes.values())
    assert crowding(_called(orjson.dumps({"k": many[:-10]}).decode())) is None  # within: served
    assert crowding(_called("[" + "[]," * MAX_VALUES)) is None  # not JSON: a text as any other
    used = {**MESSAGES, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {"k": many}}]}]}
    assert crowding(used) == ("messages", MAX_ARGUMENT_VALUES)
    calls = [{"type": "function_call", "id": f"fc_{i}", "call_id": f"c{i}", "name": "f", "status": "completed",
              "arguments": '{"a": 1, "b": "x", "c": [1, 2], "d": {"e": true}}'} for i in range(5000)]
    outputs = [{"type": "function_call_output", "id": f"fco_{i}", "call_id": f"c{i}", "output": "ok"}
               for i in range(5000)]
    history = {"model": "m", "input": [x for pair in zip(calls, outputs, strict=True) for x in pair]}
    raw = orjson.dumps(history)
    assert crowding(orjson.loads(raw), raw) is None  # 5,000 calls of 11 values of arguments each


def _parses_watched(monkeypatch: pytest.MonkeyPatch, module: Any) -> tuple[list[int], list[str]]:
    """`module.json_object` watched: the id and the name of the thread of each parse, in order."""
    threads: list[int] = []
    names: list[str] = []
    parse = module.json_object

    def watched(raw: bytes, **kw: Any) -> dict[str, Any]:
        threads.append(threading.get_ident())
        names.append(threading.current_thread().name)
        return parse(raw, **kw)

    monkeypatch.setattr(module, "json_object", watched)
    return threads, names


async def test_a_long_body_is_parsed_and_counted_off_the_event_loop(client: httpx.AsyncClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Structural, not timed: a body longer than OFF_LOOP_BYTES is parsed, depth-checked and counted
    (routes.json_object) on a thread other than the event loop's, served or refused as before (the 400 naming the
    field); an ordinary body on the loop. Until the thirty-sixth session (LOOP2) every body was, on the loop: a
    message's own key of 199,800 empty arrays held it about a second with the firewall's walk of it. The thread is
    one of the gateway's parse threads (Gateway.parses), not asyncio's default pool's, the Files and Batch APIs'
    (until the thirty-seventh session, brief FIX9: a flood of long bodies delayed their disk work)."""
    threads, names = _parses_watched(monkeypatch, routes)
    loop_thread = threading.get_ident()  # ASGI in process: the app runs on this test's loop
    long = {**CHAT, "messages": [{"role": "user", "content": "hi", "note": [[] for _ in range(20_000)]}]}
    assert len(orjson.dumps(CHAT)) <= OFF_LOOP_BYTES < len(orjson.dumps(long))
    answers = [await client.post("/v1/chat/completions", json=body) for body in (CHAT, long, {**CHAT, "tools": [
        CHAT_TOOL]})]
    assert [r.status_code for r in answers] == [200, 200, 400], [r.text[:200] for r in answers]
    assert answers[2].json()["error"]["param"] == "tools", answers[2].text[:300]
    assert len(threads) == 3, threads
    assert threads[0] == loop_thread, "an ordinary body was parsed off the loop (a thread's hop each)"
    assert threads[1] != loop_thread and threads[2] != loop_thread, "a long body was parsed on the event loop's thread"
    assert all(name.startswith(parse_pool.THREAD_NAME) for name in names[1:]), names


async def _thread() -> int:
    return threading.get_ident()


def test_a_long_socket_create_is_parsed_and_counted_off_the_event_loop(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The Responses WebSocket's message as an HTTP body: a create longer than OFF_LOOP_BYTES is parsed and counted
    on a thread other than the gateway's loop, and answered; a short one on the loop (structural, not timed; fails
    before LOOP2: every message on the loop). The thread is one of the gateway's parse threads (Gateway.parses), and
    the gateway's stop joins them: none is left (fails before FIX9, thirty-seventh session: asyncio's default pool,
    shared with the Files and Batch APIs, which nothing stopped)."""
    threads, names = _parses_watched(monkeypatch, responses_socket)
    short = {"type": "response.create", "model": MODEL, "input": "Say hello", "max_output_tokens": 8}
    long = {**short, "input": "Say hello. " * 4_000}
    assert len(orjson.dumps(short)) <= OFF_LOOP_BYTES < len(orjson.dumps(long))
    with served(tmp_path) as grid, websockets.sync.client.connect(f"ws://127.0.0.1:{grid.port}/v1/responses",
                                                                  additional_headers=TENANT) as ws:
        loop_thread = grid.call(_thread())
        for create in (short, long):
            ws.send(json.dumps(create))
            while (event := json.loads(ws.recv(timeout=30)))["type"] not in ("response.completed", "error"):
                pass
            assert event["type"] == "response.completed", event
    assert len(threads) == 2, threads
    assert threads[0] == loop_thread, "a short message was parsed off the loop (a thread's hop each)"
    assert threads[1] != loop_thread, "a long message was parsed on the event loop's thread"
    assert names[1].startswith(parse_pool.THREAD_NAME), names
    assert not [t for t in threading.enumerate() if t.ident == threads[1]], "a parse thread outlived its gateway"
