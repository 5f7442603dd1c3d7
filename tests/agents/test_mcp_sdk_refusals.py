"""McpServer.call against the real MCP SDK: a result the SDK refuses against the tool's output schema is the
server's doing, a ToolError naming the server (mcp_tools.RESULT_REFUSALS). test_mcp.py's refusal tests raise the
SDK's words from a stand-in session; this one has the SDK itself raise them, so a release that rewords them fails
here instead of the refusal becoming a tool's bug again ("the tool failed unexpectedly", with a traceback)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aigrid.agents import McpServer
from aigrid.agents.tool import ToolError

pytest.importorskip("mcp", reason="the MCP SDK is not installed (pip install mcp)")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("mode", "said"), [("schema-none", "did not return structured content"),
                                            ("schema-wrong", "Invalid structured content returned by tool t")])
async def test_a_result_the_sdk_refuses_against_the_output_schema_is_a_tool_error(mode: str, said: str) -> None:
    mcp = McpServer("s", [sys.executable, "-m", "tests.agents.mcp_hostile_server", mode], cwd=ROOT, call_timeout_s=20)
    async with mcp:
        with pytest.raises(ToolError, match=f"MCP server 's': .*{said}"):
            await mcp.call("t", {})
