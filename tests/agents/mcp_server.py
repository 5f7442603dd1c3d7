"""A tiny MCP server for the tests, spoken to over stdio: `python -m tests.agents.mcp_server`.
(mcp 2.x renamed FastMCP to MCPServer; same decorator API.)"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("aigrid-test-tools")


@server.tool()
def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


@server.tool()
def stock_level(item: str) -> str:
    """How many units of an item the warehouse holds."""
    levels = {"bolts": 1200, "nuts": 75}
    if item not in levels:
        raise ToolError(f"unknown item {item!r}")  # a deliberate error: its text reaches the client
    return f"{levels[item]} {item} in stock"


if __name__ == "__main__":
    server.run("stdio")
