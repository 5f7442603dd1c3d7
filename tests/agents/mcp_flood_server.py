"""An MCP server for the tests whose `flood` tool answers with one JSON-RPC message of `megabytes` MB (a line of
that size on stdout): `python -m tests.agents.mcp_flood_server`."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("aigrid-flood")


@server.tool()
def flood(megabytes: int) -> str:
    """Answer with that many megabytes of text."""
    return "x" * (megabytes << 20)


@server.tool()
def hello() -> str:
    """Say hello."""
    return "hello"


if __name__ == "__main__":
    server.run("stdio")
