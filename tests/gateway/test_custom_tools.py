"""OpenAI's custom tools (`{"type": "custom", "custom": {"name", "format": {"type": "grammar", "grammar":
{"syntax": "lark" | "regex", "definition"}}}}`) on the chat door (issue 12, brief SCH 1).

The grammar bound (schemas.MAX_GRAMMAR_NESTING, MAX_GRAMMAR_CHARS) does not walk a custom tool's grammar object. It
needs not: no engine of the grid takes custom tools (llama-server and vLLM read function tools only), so a chat
request offering one is refused before routing, whatever its grammar. Reproduced through the HTTP API (thirty-fourth
session): a 60,000-group Lark grammar, a 5,000-group regex and a 300 KiB definition were each a 400 before any engine,
but as "tools must be function tools with a name", which named neither the type nor why; now the 400 names
`tools[N].type` and says custom tools are not served."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.conftest import audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4}


def custom(definition: str, syntax: str = "lark") -> dict[str, object]:
    return {"type": "custom", "custom": {"name": "g", "format": {
        "type": "grammar", "grammar": {"syntax": syntax, "definition": definition}}}}


@pytest.mark.parametrize("tool", [
    custom("start: " + "(" * 60_000 + '"a"' + ")" * 60_000),
    custom("(" * 5_000 + "a" + ")" * 5_000, "regex"),
    custom('start: "' + "a" * 300 * 1024 + '"'),
    {"type": "custom", "custom": {"name": "free", "format": {"type": "text"}}},
], ids=["deep-lark", "deep-regex", "long", "free-form"])
async def test_a_custom_tool_is_refused_naming_its_type_before_any_engine(
        tmp_path: Path, fakes: dict[str, FakeEngine], tool: dict[str, object]) -> None:
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        r = await client.post("/v1/chat/completions", json={**CHAT, "tools": [weather, tool]})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "tools[1].type" and err["type"] == "invalid_request_error", err
        assert "custom tools are not served" in err["message"] and len(err["message"]) < 400, err
        assert all(not f.received for f in fakes.values())
        rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == "/v1/chat/completions"]
        assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
