"""A 400 for a value the schema refuses quotes at most SHOWN_CHARS of the client's value (envelope.from_validation's
message, bounded where it is rendered: bounded_message, shown_values), on every door with a schema. `"temperature": "x" * 100000` came back as a 100,171-byte 400 (the
number check put the value's repr into its sentence whole; `service_tier`, a tool call's `type`, an Anthropic tool's
`type` and a metadata key, which is the field's path, alike): the client's own value, sent back whole each time, and
written into the audit record's message up to 4,096 characters of it. The audit record keeps the message the client
was told (guard.Guard._record: bounded_message; test_audit_bounds.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from aigrid.errors import InvalidRequest
from aigrid.gateway.background import error_object
from aigrid.gateway.envelope import ERROR_MESSAGE_CHARS, SHOWN_CHARS, error_response, shown_values
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "hi"}]
BIG = "x" * 100_000
CUT = "'" + "x" * SHOWN_CHARS + "...'"
"""The value as the 400 quotes it: its first SHOWN_CHARS characters and `...`, inside its quotes."""
MESSAGES: dict[str, Any] = {"model": MODEL, "messages": HI, "max_tokens": 8}


@pytest.mark.parametrize("path, body, field", [
    ("/v1/chat/completions", {"model": MODEL, "messages": HI, "temperature": BIG}, "temperature"),
    ("/v1/chat/completions", {"model": MODEL, "messages": HI, "service_tier": BIG}, "service_tier"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [
        {"role": "assistant", "tool_calls": [{"id": "a", "type": BIG}]}]}, "messages[0].tool_calls"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": BIG}, "max_tokens"),
    ("/v1/responses", {"model": MODEL, "input": "hi", "service_tier": BIG}, "service_tier"),
    ("/v1/responses", {"model": MODEL, "input": "hi", "temperature": BIG}, "temperature"),
    ("/v1/messages", {**MESSAGES, "temperature": BIG}, "temperature"),
    ("/v1/messages", {**MESSAGES, "tools": [{"type": BIG, "name": "f", "input_schema": {}}]}, "tools.0.type"),
    ("/v1/messages/batches", {"requests": [{"custom_id": "a", "params": {**MESSAGES, "temperature": BIG}}]},
     "requests.0.params.temperature"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None)
async def test_a_refused_value_is_quoted_cut_on_every_door(
        tmp_path: Path, fakes: dict[str, FakeEngine], path: str, body: dict[str, Any], field: str) -> None:
    async with serving(spec_in(tmp_path), fakes) as (http, _):
        r = await http.post(path, json=body)
    assert r.status_code == 400, r.text[:500]
    assert len(r.content) < 1_000, len(r.content)  # 100,171 bytes before
    message = r.json()["error"]["message"]
    assert f"'{field}'" in message and CUT in message, message


async def test_a_key_of_the_clients_in_the_field_path_is_cut_in_the_message_and_the_param(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """A metadata key longer than OpenAI's 64 is refused at `metadata.KEY`: the path held the key whole, twice (the
    message and `param`: 200,171 bytes)."""
    async with serving(spec_in(tmp_path), fakes) as (http, _):
        r = await http.post("/v1/responses", json={"model": MODEL, "input": "hi", "metadata": {BIG: "v"}})
    assert r.status_code == 400 and len(r.content) < 1_000, len(r.content)
    err = r.json()["error"]
    assert err["param"] == "metadata." + "x" * (SHOWN_CHARS - len("metadata.")) + "...", err["param"][:300]
    assert err["message"].startswith(f"invalid value for '{err['param']}': String should have at most 64"), err


def test_only_long_quoted_values_are_cut_and_the_sentence_around_them_kept() -> None:
    said = ("this grid's models read 'auto' and 'default'; the client's tier " + repr("y" * 500) + " (the grid's "
            "own words, after it) and a value holding a quote " + repr("it's" + "z" * 500) + ".")
    shown = shown_values(said)
    assert shown == ("this grid's models read 'auto' and 'default'; the client's tier '" + "y" * SHOWN_CHARS
                     + "...' (the grid's own words, after it) and a value holding a quote \"it's"
                     + "z" * (SHOWN_CHARS - 4) + "...\".")
    assert shown_values("short 'x' ok") == "short 'x' ok"


def test_a_value_of_escaped_quotes_is_cut_too_whatever_follows_it() -> None:
    """A repr holding both quotes escapes each `'` (`\\'`): none of them opens a quote, and the value is cut even
    where a word follows it (a closing quote checked for a word after it matched nothing here, and scanning from
    each escaped quote took minutes on 300,000 of them)."""
    value = repr("x'\"" * 2_000)
    assert shown_values(f"the tier {value}s.") == f"the tier {value[:SHOWN_CHARS + 1]}...'s."


def test_a_sentence_of_many_short_quoted_values_is_cut_whole_once() -> None:
    """A list of values, each within SHOWN_CHARS (modalities of a hundred 1,000-character strings: each cut, 20 KB
    still), ends at ERROR_MESSAGE_CHARS, saying how long the whole message was: bounded in one place, where the
    envelope is rendered (envelope.bounded_message), as every error's message. Until the twenty-ninth session a
    schema's 400 was bounded twice: its sentence cut at 2,000 characters by from_validation, counting only itself,
    then the whole message again by the renderer."""
    from pydantic import BaseModel, ValidationError, field_validator

    from aigrid.gateway.envelope import from_validation

    class Listed(BaseModel):
        kinds: list[str]

        @field_validator("kinds")
        @classmethod
        def _refused(cls, v: list[str]) -> list[str]:
            raise ValueError(f"not served: {v}")

    with pytest.raises(ValidationError) as e:
        Listed(kinds=["k" * 150] * 1000)
    err = from_validation(e.value)
    assert err.param == "kinds" and err.message.startswith("invalid value for 'kinds': not served: ['kkk")
    whole = shown_values(err.message)
    shown = orjson.loads(error_response(err).body)["error"]["message"]
    assert shown == f"{whole[:ERROR_MESSAGE_CHARS]}... ({len(whole):,} characters)", shown[-80:]


def test_a_failed_background_responses_error_is_bounded_as_an_envelope() -> None:
    """A background Response's `error` (background.error_object: stored, read back by every GET and stream) took the
    error's message and field as they were, where every rendered envelope bounds them: a client's value quoted in it
    came back whole each time it was read."""
    big = "y" * 100_000
    err = InvalidRequest(f"invalid value for 'metadata.{big}': the value {big!r} is not served",
                         param=f"metadata.{big}")
    said = error_object(err)
    assert len(said["message"]) < 1_000 and f"'{'y' * SHOWN_CHARS}...'" in said["message"], len(said["message"])
    assert said["param"] == f"metadata.{big}"[:SHOWN_CHARS] + "..."
    assert (said["code"], said["type"], said["aigrid_code"]) == ("invalid_prompt", "invalid_request_error",
                                                                  "invalid_request")
