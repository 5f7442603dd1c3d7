"""A raw stdio MCP server (JSON-RPC by hand, no SDK) with one tool `t` whose output schema its results break:
`python -m tests.agents.mcp_schema_server MODE`. `none`: a call returns text without structured content; `wrong`:
structured content that does not match the schema (an integer where a string is required)."""

from __future__ import annotations

import json
import sys

SCHEMA = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(mode: str) -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if rid is None:
            continue  # a notification
        if method == "initialize":
            result: dict[str, object] = {"protocolVersion": message["params"]["protocolVersion"],
                                         "capabilities": {"tools": {}}, "serverInfo": {"name": "schema", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [{"name": "t", "inputSchema": {"type": "object"}, "outputSchema": SCHEMA}]}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "ran"}]}
            if mode == "wrong":
                result["structuredContent"] = {"s": 5}
        else:
            result = {}
        send({"jsonrpc": "2.0", "id": rid, "result": result})


if __name__ == "__main__":
    main(sys.argv[1])
