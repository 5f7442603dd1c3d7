"""The Messages door's tool calls waiting behind an open one (messages_stream._Blocks), built once for the test of
what their flush copies (test_messages_stream_copies.py) and its benchmark (scripts/bench_stream_doors.py --waiting)."""

from __future__ import annotations

from aigrid.gateway.messages_stream import _Blocks


def waiting_calls(calls: int, piece: str) -> _Blocks:
    """Call 0 begun with its arguments not whole; calls 1..`calls`-1 begun after it, each with its whole arguments
    `{"k": piece}`: their blocks wait until call 0's arguments are whole or the answer flushes."""
    blocks = _Blocks()
    blocks.tool(0, {"type": "tool_use", "id": "call_0", "name": "f", "input": {}})
    blocks.tool_args(0, '{"a": "', False)
    for i in range(1, calls):
        blocks.tool(i, {"type": "tool_use", "id": f"call_{i}", "name": "f", "input": {}})
        blocks.tool_args(i, '{"k": "' + piece + '"}', True)
    return blocks
