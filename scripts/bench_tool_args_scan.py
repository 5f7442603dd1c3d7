"""How long the Messages and Responses doors hold the event loop reading one tool call's arguments sent a character
a piece (review RV9: each piece ending with '}' parsed the arguments so far again). Prints seconds per door.

    .venv/bin/python scripts/bench_tool_args_scan.py [KB]
"""

from __future__ import annotations

import sys
import time

from aigrid.gateway.messages_stream import _Blocks
from aigrid.gateway.responses_stream import _Output


def nested(kb: int) -> str:
    """About `kb` KB of nested objects, {"k0": {"x": {}}, "k1": ...}: two '}' in every 20 characters or so."""
    n = kb * 1024 // 20
    return "{" + ", ".join(f'"k{i}": {{"x": {{}}}}' for i in range(n)) + "}"


def main() -> None:
    kb = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    args = nested(kb)
    closing = sum(1 for c in args if c == "}")
    blocks = _Blocks()
    blocks.tool(0, {"type": "tool_use", "id": "a", "name": "f", "input": {}})
    blocks.tool(1, {"type": "tool_use", "id": "b", "name": "g", "input": {}})  # waits while call 0 is not whole
    t = time.perf_counter()
    for ch in args:
        blocks.tool_args(0, ch)
    messages_s = time.perf_counter() - t
    assert blocks.open == ("tool", 1), "call 0's arguments were not read as whole"
    out = _Output(lambda kind, **kw: b"")  # type: ignore[arg-type]
    out.start_call(0, "a", "f")
    out.start_call(1, "b", "g")
    t = time.perf_counter()
    for ch in args:
        out.args_delta(0, ch)
    responses_s = time.perf_counter() - t
    assert ("call", 0) not in out.open, "call 0's arguments were not read as whole"
    print(f"{len(args)} characters, one a piece, {closing} pieces '}}': messages {messages_s:.3f} s, "
          f"responses {responses_s:.3f} s")


if __name__ == "__main__":
    main()
