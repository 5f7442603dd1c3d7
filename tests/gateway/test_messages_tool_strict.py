"""The Messages door carries a tool's `strict` flag to the chat request's function `strict` (issue 12, brief SCH 3).

Anthropic's `strict: true` on a tool "guarantees Claude's tool inputs match your JSON Schema by constraining the
model's token sampling" (platform.claude.com, Strict tool use): OpenAI's function `strict` says the same. The door
dropped it: a native model's engine (the request passes to it as it came) never saw it. How the grid honours it:
docs/messages-api.md (tools row)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}


def _tool(name: str, **strict: object) -> dict[str, object]:
    return {"name": name, "description": "Weather in a city", "input_schema": SCHEMA, **strict}


async def test_a_tools_strict_flag_reaches_the_chat_requests_function(tmp_path: Path) -> None:
    engine = ScriptedEngine([{"content": "Sunny."}])
    gw = await scripted_gateway(tmp_path, engine, "native")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/messages", json={
            "model": "smollm2-135m", "max_tokens": 16, "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [_tool("strict_one", strict=True), _tool("loose_one", strict=False), _tool("unsaid")]})
    assert r.status_code == 200, r.text
    sent = [t["function"] for t in engine.received[-1]["tools"]]
    assert [fn["name"] for fn in sent] == ["strict_one", "loose_one", "unsaid"]
    assert sent[0]["strict"] is True and sent[1]["strict"] is False and "strict" not in sent[2], sent


@pytest.mark.parametrize("value", ["true", 1, {"on": True}])
async def test_a_strict_flag_that_is_not_a_boolean_is_anthropics_400_naming_it(tmp_path: Path, value: object) -> None:
    engine = ScriptedEngine([{"content": "Sunny."}])
    gw = await scripted_gateway(tmp_path, engine, "native")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/messages", json={
            "model": "smollm2-135m", "max_tokens": 16, "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [_tool("get_weather", strict=value)]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "tools.0.strict" in err["message"], err
    assert engine.received == []
