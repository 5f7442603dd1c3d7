"""MCP: tools of a real stdio MCP server (tests/agents/mcp_server.py) become server-side tools and run
inside the tool loop like the built-ins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aigrid.agents import Finished, McpServer, ToolRegistry, builtin_tools, run_tool_loop
from aigrid.agents.tool import NO_CONTEXT, ToolError
from tests.agents.scripted_engine import ScriptedEngine, answer, call

pytest.importorskip("mcp", reason="the MCP SDK is not installed (pip install mcp)")
ROOT = Path(__file__).resolve().parents[2]


def server() -> McpServer:
    return McpServer("test", [sys.executable, "-m", "tests.agents.mcp_server"], cwd=ROOT, prefix="wh_",
                     call_timeout_s=20)


async def test_mcp_tools_listed_called_and_used_in_the_loop() -> None:
    async with server() as mcp:
        names = {t.name: t for t in mcp.tools}
        assert set(names) == {"wh_word_count", "wh_stock_level"}
        assert names["wh_stock_level"].parameters["properties"]["item"]["type"] == "string"
        assert await names["wh_word_count"].run({"text": "one two three"}, NO_CONTEXT) == "3"
        with pytest.raises(ToolError, match="unknown item"):
            await names["wh_stock_level"].run({"item": "gold"}, NO_CONTEXT)

        registry = builtin_tools(extra=mcp.tools)
        engine = ScriptedEngine([call("wh_stock_level", item="bolts"), call("calculator", expression="1200 * 2"),
                                 answer("2400 bolts")])
        body = {"model": "m", "messages": [{"role": "user", "content": "double the bolts"}],
                "tools": [{"type": "function", "function": {"name": "wh_stock_level"}},
                          {"type": "function", "function": {"name": "calculator"}}]}
        evs = [ev async for ev in run_tool_loop(engine, body, registry)]
        fin = evs[-1]
        assert isinstance(fin, Finished) and fin.content == "2400 bolts"
        assert [(s.tool, s.result) for s in fin.steps] == [("wh_stock_level", "1200 bolts in stock"),
                                                           ("calculator", "2400")]
        schema = engine.received[0]["response_format"]["json_schema"]["schema"]["anyOf"][0]
        assert schema["properties"]["arguments"]["properties"]["item"]["type"] == "string"  # the MCP schema
    with pytest.raises(ToolError, match="not connected"):
        await names["wh_word_count"].run({"text": "x"}, NO_CONTEXT)


def test_names_stay_unique() -> None:
    registry = ToolRegistry(builtin_tools().values())
    with pytest.raises(ValueError, match="already registered"):
        registry.add(registry["calculator"])
