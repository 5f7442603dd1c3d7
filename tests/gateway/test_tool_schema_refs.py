"""A client tool whose schema holds a `$ref` outside itself, through the gateway: the client's 400 naming it (in
the door's own field names) where the chosen model's tool calls are decoded under a grammar, and the schema sent as
written to a native model's engine asked freely. A SCRIPTED engine (tests/agents/scripted_engine.py) plays the
model and records what it was sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway

REMOTE: dict[str, Any] = {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}
ASK = [{"role": "user", "content": "Hi"}]
FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}


async def _post(tmp: Path, mode: str, path: str, body: dict[str, Any]) -> tuple[httpx.Response, ScriptedEngine]:
    engine = ScriptedEngine([{"content": "Hello."}])
    app = build_app(await scripted_gateway(tmp, engine, tool_calls=mode))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        return await c.post(path, json=body, headers=FRANKFURT), engine


@pytest.mark.parametrize("door", ["chat", "messages"])
async def test_an_outside_ref_is_refused_on_a_constrained_model_and_sent_to_a_native_one(
        tmp_path: Path, door: str) -> None:
    """(7 Dec 2026, thirty-fourth session) 2f761f98 refused such a tool before routing whatever the model: a
    native model's engine, which got the schema as written before and compiles no grammar for `tool_choice: auto`,
    was refused it too. Now refused where the turn is constrained (naming the ref in the door's own field), served
    on a native model."""
    body: dict[str, Any]
    if door == "chat":
        path, param = "/v1/chat/completions", "tools[0].function.parameters.properties.a.$ref"
        body = {"model": "smollm2-135m", "messages": ASK,
                "tools": [{"type": "function", "function": {"name": "t", "parameters": REMOTE}}]}
    else:
        path, param = "/v1/messages", "tools.0.input_schema.properties.a.$ref"
        body = {"model": "smollm2-135m", "max_tokens": 16, "messages": ASK,
                "tools": [{"name": "t", "input_schema": REMOTE}]}
    refused, engine = await _post(tmp_path / "c", "constrained", path, body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error.get("param", param) == param and param in refused.text, refused.text
    assert "https://example.com/s.json" in error["message"] and engine.received == [], refused.text
    served, engine = await _post(tmp_path / "n", "native", path, body)
    assert served.status_code == 200, served.text
    assert engine.received[0]["tools"][0]["function"]["parameters"] == REMOTE
