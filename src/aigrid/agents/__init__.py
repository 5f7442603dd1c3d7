"""Agents at the edge: the server-side tool loop, built-in tools, retrieval at the site, MCP tools.

The gateway calls two things: `wants_server_tools(body, registry)` after parsing a chat request, and,
when it is true, serves the request through `ToolLoopEngine(engine, registry, context=...)` wrapped
around the chosen endpoint's engine (or drives `run_tool_loop` itself). `create_embeddings` is the
/v1/embeddings handler logic. See docs/agents.md.
"""

from aigrid.agents.builtins import builtin_tools
from aigrid.agents.embeddings import Embedder, MiniLMEmbedder, create_embeddings
from aigrid.agents.loop import (
    Finished,
    LoopConfig,
    Rejected,
    Step,
    TextDelta,
    loop_config,
    run_tool_loop,
    validate_tool_request,
    wants_server_tools,
)
from aigrid.agents.mcp_tools import McpServer, McpTool
from aigrid.agents.reply import ToolLoopEngine, completion, sse_stream
from aigrid.agents.tool import Tool, ToolContext, ToolError, ToolRegistry
from aigrid.agents.vector_store import Document, SiteStores, VectorStore, read_documents

__all__ = [
    "Document", "Embedder", "Finished", "LoopConfig", "McpServer", "McpTool", "MiniLMEmbedder", "Rejected",
    "SiteStores", "Step", "TextDelta", "Tool", "ToolContext", "ToolError", "ToolLoopEngine", "ToolRegistry",
    "VectorStore", "builtin_tools", "completion", "create_embeddings", "loop_config", "run_tool_loop",
    "sse_stream", "validate_tool_request", "wants_server_tools", "read_documents",
]
