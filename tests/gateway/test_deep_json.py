"""A request nested deeper than the gateway writes (orjson writes at most 254 levels) is the client's mistake: a
400 naming the field at every front door, before any engine. It parsed, then failed when the gateway wrote the
engine's request: every candidate "failed" (502 blaming the engines, each counted a failure) or a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from aigrid.json_depth import MAX_DEPTH, too_deep, too_deep_raw
from tests.gateway.fake_engine import FakeEngine

M = "smollm2-135m"


def nested(levels: int) -> dict[str, Any]:
    """An object `levels` deep."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def schema(levels: int) -> dict[str, Any]:
    """A JSON schema of objects in objects, `levels` objects deep (twice as many levels of JSON)."""
    value: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        value = {"type": "object", "properties": {"a": value}}
    return value


HI = [{"role": "user", "content": "hi"}]
USE = [{"role": "user", "content": "hi"},
       {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": nested(300)}]},
       {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]
CALL = [{"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "f", "arguments": json.dumps(nested(300))}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
F = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
def listed(levels: int) -> list[Any]:
    """An array `levels` deep."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


CASES = [
    ("chat, an unknown field", "/v1/chat/completions",
     {"model": M, "max_tokens": 3, "messages": HI, "x": nested(300)}, "x.a.a.a.a.a"),
    ("chat, arrays", "/v1/chat/completions",
     {"model": M, "max_tokens": 3, "messages": HI, "x": listed(300)}, "x[0][0][0][0][0]"),
    ("chat, a tool's parameters", "/v1/chat/completions",
     {"model": M, "max_tokens": 3, "messages": HI, "tools": [{"type": "function", "function": {
         "name": "f", "parameters": schema(100)}}]}, "tools[0].function.parameters.properties.a"),
    ("chat, response_format", "/v1/chat/completions",
     {"model": M, "max_tokens": 3, "messages": HI, "response_format": {"type": "json_schema", "json_schema": {
         "name": "x", "schema": schema(100)}}}, "response_format.json_schema.schema.properties.a.properties"),
    ("chat, a replayed tool call's arguments (a JSON string)", "/v1/chat/completions",
     {"model": M, "max_tokens": 3, "messages": CALL, "tools": F}, "messages[1].tool_calls[0].function.arguments"),
    ("completions", "/v1/completions", {"model": M, "max_tokens": 3, "prompt": "hi", "x": nested(300)},
     "x.a.a.a.a.a"),
    ("completions, a prompt of arrays", "/v1/completions", {"model": M, "max_tokens": 3, "prompt": listed(300)},
     "prompt[0][0][0][0][0]"),
    ("embeddings", "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["hi", {"a": [listed(300)]}]},
     "input[1].a[0][0][0]"),
    ("messages, a tool_use input", "/v1/messages",
     {"model": M, "max_tokens": 3, "messages": USE, "tools": [{"name": "f", "input_schema": {"type": "object"}}]},
     "messages.1.content.0.input.a"),
    ("messages, a tool's input_schema", "/v1/messages",
     {"model": M, "max_tokens": 3, "messages": HI, "tools": [{"name": "f", "input_schema": schema(100)}]},
     "tools.0.input_schema.properties.a.properties"),
    ("count_tokens", "/v1/messages/count_tokens", {"model": M, "messages": USE}, "messages.1.content.0.input.a"),
    ("message batches", "/v1/messages/batches",
     {"requests": [{"custom_id": "a", "params": {"model": M, "max_tokens": 3, "messages": HI, "x": nested(300)}}]},
     "requests.0.params.x.a.a"),
    ("responses, text.format.schema", "/v1/responses",
     {"model": M, "input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": schema(100)}}},
     "text.format.schema.properties.a.properties"),
    ("responses, a tool's parameters", "/v1/responses",
     {"model": M, "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": schema(100)}]},
     "tools[0].parameters.properties.a.properties"),
    ("responses, a replayed function_call's arguments", "/v1/responses",
     {"model": M, "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}], "input": [
         {"role": "user", "content": "hi"},
         {"type": "function_call", "call_id": "c1", "name": "f", "arguments": json.dumps(nested(300))},
         {"type": "function_call_output", "call_id": "c1", "output": "ok"}]}, "input[1].arguments"),
    ("responses, an input part", "/v1/responses",
     {"model": M, "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi", "x": nested(300)}]}]},
     "input[0].content[0].x.a"),
    ("responses, background", "/v1/responses",
     {"model": M, "input": "hi", "background": True, "x": nested(300)}, "x.a.a.a.a.a"),
]
"""Each door's 400 names the field in its own API's form (envelope.field_name): OpenAI's doors `tools[0].function`,
the Messages door (and count_tokens, message batches) `tools.0.input_schema`. Until the thirty-eighth session
json_depth joined the path with dots on every door."""


@pytest.mark.parametrize(("path", "body", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_a_body_nested_too_deep_is_a_400_naming_the_field_before_any_engine(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any],
        field: str) -> None:
    r = await client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert f"nested deeper than {MAX_DEPTH} levels" in error["message"] and field in error["message"], error
    if "param" in error:  # the OpenAI envelope names it; Anthropic's has the message only
        assert field.startswith(error["param"]), error
    assert all(not f.received for f in fakes.values())


async def test_a_deep_body_within_the_limit_is_served(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    body = {"model": M, "max_tokens": 3, "messages": HI, "x": nested(MAX_DEPTH - 1)}
    r = await client.post("/v1/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_too_deep_names_the_path_of_the_deepest_value_without_recursion() -> None:
    """The path as parts (keys str, indices int), which each door writes in its own form (field_name)."""
    assert too_deep({"a": [1, {"b": 2}]}, 3) is None
    assert too_deep({"a": [1, {"b": {}}]}, 3) == ("a", 1, "b")
    assert too_deep({"0": [{}]}, 2) == ("0", 0)  # a key that reads as a number stays a key
    assert too_deep(nested(5000)) == ("a",) * 6  # a walk, not a recursion
    assert too_deep([[[]]], 2) == (0, 0) and too_deep([[]], 1) == (0,) and too_deep([[]], 0) == ()
    assert too_deep("text") is None and too_deep({}, 1) is None
    assert too_deep_raw(b'{"a":{"a":{}}}', {"a": {"a": {}}}, 2) == ("a", "a")
    assert too_deep_raw(b'{"a":"{{{{{{"}', {"a": "{{{{{{"}, 2) is None
