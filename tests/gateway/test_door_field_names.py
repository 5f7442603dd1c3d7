"""A pipeline error about a chat field that a front door set from a field of its own names the field as the client
wrote it at that door (issue 12): the Messages API's `stop_sequences` (chat `stop`), `output_format.schema` /
`output_config.format.schema` (chat `response_format.json_schema.schema`) and a tool's `input_schema` (chat
`function.parameters`); the Responses API's flat function tool (`tools[0].parameters`) and `text.format`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.schemas import MAX_GRAMMAR_CHARS, MAX_STEP_ENTRIES
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
SCHEMA = {"type": "object", "properties": {"a": {"type": "string", "pattern": "a" * (MAX_GRAMMAR_CHARS + 1)}}}
ASK = [{"role": "user", "content": "hi"}]


async def _refusal(tmp: Path, path: str, body: dict[str, Any]) -> dict[str, Any]:
    spec = spec_in(tmp)
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    async with serving(spec, fakes) as (client, _):
        r = await client.post(path, json={"model": MODEL, **body})
    assert r.status_code == 400, r.text
    assert not [b for f in fakes.values() for b in f.received]  # refused before any engine
    error: dict[str, Any] = r.json()["error"]
    return error


@pytest.mark.parametrize("body, field", [
    ({"stop_sequences": ["x"] * (MAX_STEP_ENTRIES + 1)}, "stop_sequences"),
    ({"tools": [{"name": "f", "input_schema": SCHEMA}]}, "tools.0.input_schema.properties.a.pattern"),
    ({"output_format": {"type": "json_schema", "schema": SCHEMA}}, "output_format.schema.properties.a.pattern"),
    ({"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
     "output_config.format.schema.properties.a.pattern"),
])
async def test_the_messages_door_names_its_own_field(tmp_path: Path, body: dict[str, Any], field: str) -> None:
    error = await _refusal(tmp_path, "/v1/messages", {"max_tokens": 8, "messages": ASK, **body})
    assert error["message"].startswith(f"invalid value for '{field}': "), error
    assert "stop'" not in error["message"] and "parameters" not in error["message"]
    assert "response_format" not in error["message"]


@pytest.mark.parametrize("body, field", [
    ({"tools": [{"type": "function", "name": "f", "parameters": SCHEMA}]}, "tools[0].parameters.properties.a.pattern"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": SCHEMA}}},
     "text.format.schema.properties.a.pattern"),
])
async def test_the_responses_door_names_its_own_field(tmp_path: Path, body: dict[str, Any], field: str) -> None:
    error = await _refusal(tmp_path, "/v1/responses", {"input": "hi", **body})
    assert error["param"] == field
    assert error["message"].startswith(f"invalid value for '{field}': "), error
