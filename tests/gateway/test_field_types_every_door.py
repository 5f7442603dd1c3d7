"""Field types on the Anthropic Messages and OpenAI Responses doors (gateway/messages_schema.py, responses_schema.py),
as chat and completions have them since 75a59432 (tests/gateway/test_request_field_types.py).

Each API refuses a string for a number or a boolean in its own words: OpenAI's Responses API "Invalid type for
'max_output_tokens': expected an integer, but got a string instead" (`temperature`, `top_p`, `top_logprobs`,
`stream`, `store`, `background`, `parallel_tool_calls` alike), Anthropic's "temperature: Input should be a valid
number" (`max_tokens`, `top_k`, `top_p`, `stream` alike). The two doors took them by pydantic's lax rules until the
twenty-eighth session: Messages `"stream": "true"` streamed, `"max_tokens": "8"` and `"temperature": "0.5"` were
served, and the Responses API served `"temperature": "0"`, `"stream": "true"`, `"max_output_tokens": "8"`. Null is the
default on every door of the grid (schemas.null_is_default): Messages `"stream": null` was a 400, now a whole answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest

from aigrid.gateway.app import build_app
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import anthropic_client

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "hi"}]
MESSAGES: dict[str, Any] = {"model": MODEL, "messages": HI, "max_tokens": 8}
RESPONSES: dict[str, Any] = {"model": MODEL, "input": "hi", "max_output_tokens": 8}
TOOL = {"name": "f", "input_schema": {"type": "object"}}
CALLED = [{"role": "user", "content": "hi"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}]


def _sent(fakes: dict[str, FakeEngine]) -> list[dict[str, Any]]:
    return [r for f in fakes.values() for r in f.received]


async def _refused_before_any_engine(tmp_path: Path, fakes: dict[str, FakeEngine], path: str,
                                     body: dict[str, Any]) -> Any:
    """The 400 that `body` posted to `path` gets (its JSON), asking no engine."""
    async with serving(spec_in(tmp_path), fakes) as (http, _):
        r = await http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert not _sent(fakes)
    return r.json()


@pytest.mark.parametrize("extra, field", [
    ({"stream": "true"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"max_tokens": "8"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": "0.5"}, "temperature"),
    ({"top_p": "1"}, "top_p"),
    ({"top_k": "5"}, "top_k"),
    ({"tools": [TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": "yes"}},
     "tool_choice.disable_parallel_tool_use"),
    ({"messages": [*CALLED, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x", "is_error": "true"}]}], "tools": [TOOL]},
     "messages.2.content.0.is_error"),
], ids=lambda v: v if isinstance(v, str) else None)
async def test_a_messages_field_of_the_wrong_type_is_anthropics_400_naming_it_before_any_engine(
        tmp_path: Path, fakes: dict[str, FakeEngine], extra: dict[str, Any], field: str) -> None:
    body = await _refused_before_any_engine(tmp_path, fakes, "/v1/messages", {**MESSAGES, **extra})
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    assert body["error"]["message"].startswith(f"invalid value for '{field}': "), body


@pytest.mark.parametrize("extra, field", [
    ({"temperature": "0"}, "temperature"),
    ({"temperature": False}, "temperature"),
    ({"top_p": "0.5"}, "top_p"),
    ({"max_output_tokens": "8"}, "max_output_tokens"),
    ({"top_logprobs": "2"}, "top_logprobs"),
    ({"stream": "true"}, "stream"),
    ({"store": "false"}, "store"),
    ({"background": "true"}, "background"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
], ids=lambda v: v if isinstance(v, str) else None)
async def test_a_responses_field_of_the_wrong_type_is_a_400_naming_it_before_any_engine(
        tmp_path: Path, fakes: dict[str, FakeEngine], extra: dict[str, Any], field: str) -> None:
    err = (await _refused_before_any_engine(tmp_path, fakes, "/v1/responses", {**RESPONSES, **extra}))["error"]
    assert (err["type"], err["param"]) == ("invalid_request_error", field), err


@pytest.mark.parametrize("path, body", [
    ("/v1/messages", {**MESSAGES, "temperature": 0, "top_p": 1, "top_k": 5, "max_tokens": 8.0}),
    ("/v1/messages", {**MESSAGES, "stream": None, "temperature": None}),
    ("/v1/responses", {**RESPONSES, "temperature": 0, "top_p": 1, "max_output_tokens": 8.0}),
    ("/v1/responses", {**RESPONSES, "stream": None, "store": None, "temperature": None, "background": None}),
])
async def test_numbers_booleans_and_nulls_of_their_type_are_served_whole(
        tmp_path: Path, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any]) -> None:
    """An integer where a float is asked, a whole float where an integer is (as the engines read it), and null as
    the default: `"stream": null` on Messages is a whole answer (a 400 until the twenty-eighth session)."""
    async with serving(spec_in(tmp_path), fakes) as (http, _):
        r = await http.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers


async def test_the_anthropic_sdk_sees_its_bad_request_naming_the_field(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """What an agent on the Anthropic SDK sees of a `temperature` of `"0.5"` (the SDK 2.17 has no such argument:
    sent in `extra_body`, as a framework's settings pass it): its BadRequestError naming the field (it was served)."""
    async with serving(spec_in(tmp_path), fakes) as (_, gw):
        client = anthropic_client(build_app(gw))
        with pytest.raises(anthropic.BadRequestError) as e:
            await client.messages.create(model=MODEL, max_tokens=8, messages=HI, extra_body={"temperature": "0.5"})
        assert "invalid value for 'temperature': expected a number, got a string ('0.5')" in str(e.value)
    assert not _sent(fakes)
