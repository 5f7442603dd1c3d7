"""How long the Messages and Responses doors hold the event loop reading one tool call's arguments sent a character
a piece (review RV9: each piece ending with '}' parsed the arguments so far again). Prints seconds per door.

    .venv/bin/python scripts/bench_tool_args_scan.py [KB]
    .venv/bin/python scripts/bench_tool_args_scan.py KB one   # KB of a file's text in one piece (review RV13)
"""

from __future__ import annotations

import sys
import time

import orjson

from aigrid.gateway.chat_events import ArgsScan, _Calls
from aigrid.gateway.messages_stream import _Blocks
from aigrid.gateway.responses_stream import _Output


def nested(kb: int) -> str:
    """About `kb` KB of nested objects, {"k0": {"x": {}}, "k1": ...}: two '}' in every 20 characters or so."""
    n = kb * 1024 // 20
    return "{" + ", ".join(f'"k{i}": {{"x": {{}}}}' for i in range(n)) + "}"


def one_piece(kb: int) -> None:
    """A call writing a file: its arguments (`kb` KB of lines, each with its escaped newline) in one piece, read by
    ArgsScan against one orjson parse of them; best of 5."""
    args = orjson.dumps({"path": "a.txt", "content": "a line of the file, some words and 12345\n" * (kb * 1024 // 41)})
    text = args.decode()
    scan_s, parse_s = [], []
    for _ in range(5):
        t = time.perf_counter()
        scan = ArgsScan()
        scan.feed(text)
        scan_s.append(time.perf_counter() - t)
        assert scan.whole
        t = time.perf_counter()
        orjson.loads(text)
        parse_s.append(time.perf_counter() - t)
    print(f"{len(text)} characters in one piece: ArgsScan {min(scan_s) * 1000:.1f} ms (its one parse included), "
          f"orjson alone {min(parse_s) * 1000:.1f} ms")


def _started() -> _Calls:
    """chat_events' calls 0 and 1 started, as the doors' are."""
    calls = _Calls()
    for i in (0, 1):
        calls.pending[i] = [f"call_{i}", "f"]
        calls._start(i)
    return calls


def main() -> None:
    kb = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    if sys.argv[2:] == ["one"]:
        one_piece(kb)
        return
    args = nested(kb)
    closing = sum(1 for c in args if c == "}")
    blocks = _Blocks()
    blocks.tool(0, {"type": "tool_use", "id": "a", "name": "f", "input": {}})
    blocks.tool(1, {"type": "tool_use", "id": "b", "name": "g", "input": {}})  # waits while call 0 is not whole
    calls = _started()
    t = time.perf_counter()
    for ch in args:
        for e in calls.args(0, ch):  # chat_events scans each piece once (ToolArgs.whole), the door reads its verdict
            blocks.tool_args(0, ch, e.whole)
    messages_s = time.perf_counter() - t
    assert blocks.open == ("tool", 1), "call 0's arguments were not read as whole"
    out = _Output(lambda kind, **kw: b"")  # type: ignore[arg-type]
    out.start_call(0, "a", "f")
    out.start_call(1, "b", "g")
    calls = _started()
    t = time.perf_counter()
    for ch in args:
        for e in calls.args(0, ch):
            out.args_delta(0, ch, e.whole)
    responses_s = time.perf_counter() - t
    assert ("call", 0) not in out.open, "call 0's arguments were not read as whole"
    print(f"{len(args)} characters, one a piece, {closing} pieces '}}': messages {messages_s:.3f} s, "
          f"responses {responses_s:.3f} s")


if __name__ == "__main__":
    main()
