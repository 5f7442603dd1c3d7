"""Each door names a field of the request as its official API does (review RV4 of the thirty-seventh session): the
OpenAI doors a list's index in brackets (`messages[0].role`, as OpenAI's "Invalid type for 'messages[0].content'"),
the Messages door every part after a dot (`messages.0.content.0.text`, as Anthropic's "messages.0: ..."). Until the
thirty-seventh session a schema's 400 said the dotted form on every door, while the grid's own checks on the OpenAI
doors said brackets: one client saw both from one door."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.envelope import field_name
from aigrid.gateway.schemas import MAX_STEP_ENTRIES
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"


def test_field_name_writes_each_apis_form() -> None:
    parts = ("messages", 0, "content", 12, "text")
    assert field_name(parts) == "messages[0].content[12].text"
    assert field_name(parts, dotted=True) == "messages.0.content.12.text"
    assert field_name(("metadata", "0")) == "metadata.0"  # a key that reads as a number is a key, not an index
    assert field_name(("input", 3)) == "input[3]" and field_name(()) == ""


@pytest.mark.parametrize("path, body, param", [
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "name": "n" * 65}]}, "messages[0].name"),
    ("/v1/completions", {"prompt": "hi", "stop": ["a", 1]}, "stop[1]"),
    ("/v1/responses", {"input": "hi", "context_management": [{"type": "truncation"}]}, "context_management[0].type"),
    ("/v1/responses", {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ("/v1/responses", {"input": "hi", "tools": [{"type": "calculator"}]}, "tools[0].type"),
], ids=["chat role", "chat name", "completions stop", "responses context_management", "responses input part",
        "responses tool"])
async def test_an_openai_door_names_a_field_with_brackets(tmp_path: Path, path: str, body: dict[str, Any],
                                                         param: str) -> None:
    spec = spec_in(tmp_path)
    async with serving(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and param in error["message"], error


@pytest.mark.parametrize("path, body, field", [
    ("/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages.0.content.0.text"),
    ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages.0.content.0.text"),
], ids=["messages", "count_tokens"])
async def test_the_messages_door_keeps_anthropics_dotted_form(tmp_path: Path, path: str, body: dict[str, Any],
                                                              field: str) -> None:
    spec = spec_in(tmp_path)
    async with serving(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body}, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and f"'{field}'" in r.json()["error"]["message"], r.text


OK = {"type": "input_text", "text": "hi"}


@pytest.mark.parametrize("items, param", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": [OK, OK, {"type": "input_file"}]}],
     "input[1].content[2].type"),
    ([{"role": "user", "content": [OK, {"type": "input_text", "text": 5}]}], "input[0].content[1].text"),
    ([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], "input[0].content[0].image_url"),
    ([{"role": "user", "content": "a"}] * 3 + [{"type": "function_call_output", "call_id": "c", "output": [
        OK, {"type": "input_file"}]}], "input[3].output[1].type"),
    ([{"role": "user", "content": 5}], "input[0].content"),
], ids=["message part", "part text", "image part", "function_call_output part", "content"])
def test_a_responses_input_part_is_named_from_its_parts(items: list[Any], param: str) -> None:
    """responses_translate names a content part's field with field_name from the item's parts (until the
    thirty-eighth session it appended `[j]` to a string already in OpenAI's form): the same names as before."""
    from aigrid.errors import InvalidRequest
    from aigrid.gateway.responses_translate import input_messages
    with pytest.raises(InvalidRequest) as refused:
        input_messages(items)
    said = param.removesuffix(".image_url")  # "input[0].content[0]: only input_image with an image_url ..."
    assert refused.value.param == param and refused.value.message.startswith(f"{said}: "), refused.value.message


@pytest.mark.parametrize("items, field", [
    ([{"role": "user", "content": "a"}, {"type": "item_reference", "id": "m"}], ("items", 1, "type")),
    ([{"role": "robot", "content": "a"}], ("items", 0, "role")),
    ([{"role": "user", "content": [OK, {"type": "input_file"}]}], ("items", 0, "content", 1, "type")),
    ([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], ("items", 0, "content", 0, "image_url")),
    ([{"type": "function_call", "call_id": 5, "name": "f"}], ("items", 0, "call_id")),
    ([{"type": "function_call_output", "call_id": "c", "output": [OK, {"type": "input_file"}]}],
     ("items", 0, "output", 1, "type")),
    ([{"type": "compaction", "encrypted_content": "x"}], ("items", 0, "type")),
], ids=["item type", "role", "part", "image part", "call_id", "output part", "compaction"])
def test_a_conversations_item_is_named_under_items_from_its_parts(items: list[Any], field: tuple[Any, ...]) -> None:
    """A conversation's items are checked as a Responses `input` is (conversations_api.conversation_items) and named
    `items[...]`: input_messages writes its fields under the root it is given, from their parts, which the error
    keeps (ApiError.field). Until the thirty-eighth session's review (RV3) the param string and the message said
    `input[...]` and were renamed by replacing `input[` (the same names; no parts were kept)."""
    from aigrid.errors import InvalidRequest
    from aigrid.gateway.conversations_api import conversation_items
    with pytest.raises(InvalidRequest) as refused:
        conversation_items(items)
    err, param = refused.value, field_name(field)
    assert (err.param, err.field) == (param, field)
    said = param.removesuffix(".image_url")  # "items[0].content[0]: only input_image with an image_url ..."
    assert err.message.startswith(f"{said}: ") and "input[" not in err.message, err.message


@pytest.mark.parametrize("steer, param", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": [OK, {"type": "input_file"}]}],
     "input[1].content[1].type"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b", "id": "m"}], "input[1].id"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "input[1].role"),
], ids=["part", "extra key", "role"])
def test_a_steers_field_is_named_from_its_parts(steer: list[Any], param: str) -> None:
    from aigrid.errors import InvalidRequest
    from aigrid.gateway.responses_steer import steer_items
    with pytest.raises(InvalidRequest) as refused:
        steer_items({"type": "response.steer", "previous_response_id": "resp_1", "input": steer})
    assert refused.value.param == param and refused.value.message.startswith(f"{param}: "), refused.value.message


def test_a_front_door_names_a_chat_field_from_its_parts() -> None:
    """front_door.name_own_field reads the field's parts the chat checks give (ApiError.field), not the param string
    (until the thirty-eighth session it parsed `messages[3].content` and `tools[2].function...` again): a tool's
    nested field in the door's form, a message's in the field it came from."""
    from aigrid.errors import InvalidRequest
    from aigrid.gateway.front_door import name_own_field
    tool = ("tools", 1, "function", "parameters", "properties", "a", "anyOf", 2, "pattern")
    for dotted, own in ((False, "tools[1].parameters.properties.a.anyOf[2].pattern"),
                        (True, "tools.1.parameters.properties.a.anyOf.2.pattern")):
        err = InvalidRequest(f"invalid value for '{field_name(tool)}': too many groups", param=tool)
        assert err.param == "tools[1].function.parameters.properties.a.anyOf[2].pattern" and err.field == tool
        name_own_field(err, [], dotted=dotted)
        assert (err.param, err.message) == (own, f"invalid value for '{own}': too many groups")
    err = InvalidRequest("a tool call needs an id", param=("messages", 2, "tool_calls", 0))
    name_own_field(err, ["input[0]", "input[1]", "input[3]"])
    assert (err.param, err.message) == ("input[3]", "a tool call needs an id (at input[3])")
    said = InvalidRequest("messages[1].content: not ours", param="messages[1].content")  # a string: no chat field's
    name_own_field(said, ["input[0]", "input[1]"])
    assert said.param == "messages[1].content"


SCHEMA = {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {
    "type": "string", "pattern": "(" * 1001 + ")" * 1001}]}}}


@pytest.mark.parametrize("path, body, headers, field", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]}, {},
     "tools[0].function.parameters.properties.a.anyOf[1].pattern"),
    ("/v1/responses", {"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": SCHEMA}]}, {},
     "tools[0].parameters.properties.a.anyOf[1].pattern"),
    ("/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"name": "f", "input_schema": SCHEMA}]}, {"anthropic-version": "2023-06-01"},
     "tools.0.input_schema.properties.a.anyOf.1.pattern"),
    ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"name": "f", "input_schema": SCHEMA}]}, {"anthropic-version": "2023-06-01"},
     "tools.0.input_schema.properties.a.anyOf.1.pattern"),  # chat's tools.0.function.parameters... until RV3
], ids=["chat", "responses", "messages", "count_tokens"])
async def test_a_nested_tool_field_is_named_in_each_doors_form(tmp_path: Path, path: str, body: dict[str, Any],
                                                               headers: dict[str, str], field: str) -> None:
    spec = spec_in(tmp_path)
    async with serving(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body}, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert f"'{field}'" in error["message"] and error.get("param", field) == field, error


@pytest.mark.parametrize("params, field", [
    ({"tools": [{"name": "f", "input_schema": SCHEMA}]}, "tools.0.input_schema.properties.a.anyOf.1.pattern"),
    ({"stop_sequences": ["x"] * (MAX_STEP_ENTRIES + 1)}, "stop_sequences"),
], ids=["tool", "stop_sequences"])
async def test_a_message_batchs_request_names_its_field_as_the_messages_door_does(
        tmp_path: Path, params: dict[str, Any], field: str) -> None:
    """A message batch's request is checked at creation as the chat request it becomes (message_batches_api), and
    named as POST /v1/messages names it (messages_translate.name_messages_field): until the thirty-eighth session's
    review (RV3) `requests.0.params.tools.0.parameters...` and `requests.0.params.stop`, fields the client never
    sent."""
    spec = spec_in(tmp_path)
    request = {"custom_id": "a", "params": {"model": MODEL, "max_tokens": 8, "messages": [
        {"role": "user", "content": "hi"}], **params}}
    async with serving(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}) as (client, _):
        r = await client.post("/v1/messages/batches", json={"requests": [request]},
                              headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"requests.0.params.{field}: ") and f"'{field}'" in message, message


async def test_a_replayed_calls_arguments_too_deep_are_named_as_the_responses_door_names_them(tmp_path: Path) -> None:
    """The tool loop refuses a replayed call's arguments nested too deep (agents/loop._shallow_arguments) naming the
    chat field and the path inside the arguments ("messages[1].tool_calls[0].function.arguments at a.a..."); the
    Responses door says its own item instead (front_door.name_own_field). Until the thirty-eighth session's review
    (RV3) its message opened with the chat field and ended "(at input[1].arguments)"."""
    deep = '{"a":' * 130 + "1" + "}" * 130
    body = {"input": [{"role": "user", "content": "hi"},
                      {"type": "function_call", "call_id": "c1", "name": "f", "arguments": deep},
                      {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
            "tools": [{"type": "function", "name": "calculator"}]}  # a server-side tool: the loop's checks run
    spec = spec_in(tmp_path)
    async with serving(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}) as (client, _):
        r = await client.post("/v1/responses", json={"model": MODEL, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input[1].arguments", error
    assert error["message"].startswith("input[1].arguments at a.a.a.a.a.a: nested deeper than 128 levels"), error
    assert "messages[" not in error["message"], error


OUTSIDE = {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"$ref": "https://example.com/s.json"}]}}}


@pytest.mark.parametrize("path, body, headers, field", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": OUTSIDE}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}}, {},
     "tools[0].function.parameters.properties.a.anyOf[1].$ref"),
    ("/v1/responses", {"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": OUTSIDE}],
                       "tool_choice": {"type": "function", "name": "f"}}, {},
     "tools[0].parameters.properties.a.anyOf[1].$ref"),
    ("/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"name": "f", "input_schema": OUTSIDE}], "tool_choice": {"type": "tool", "name": "f"}},
     {"anthropic-version": "2023-06-01"}, "tools.0.input_schema.properties.a.anyOf.1.$ref"),
], ids=["chat", "responses", "messages"])
async def test_an_outside_ref_inside_a_list_is_named_in_each_doors_form(
        tmp_path: Path, path: str, body: dict[str, Any], headers: dict[str, str], field: str) -> None:
    """A tool's `$ref` outside its schema, refused where the tool call is decoded under a grammar (a forced
    tool_choice: agents/loop.refuse_outside_ref), is named with the schema's list indices in the door's form, as a
    pattern in the same place is (above): until the thirty-eighth session's review (RV3) the schema's path was
    written with dots on every door (`anyOf.1.$ref` on chat and Responses)."""
    spec = spec_in(tmp_path)
    async with serving(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body}, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    said = error["param"] if "param" in error else error["message"].rsplit(" (at ", 1)[-1].removesuffix(")")
    assert said == field and "example.com/s.json" in error["message"], error  # Anthropic's error has no param
