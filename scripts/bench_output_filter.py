"""Per-chunk cost of OutputFilter.event for a redacting tenant (O, twenty-fourth session): streams of 4-character
content (or tool-call argument) deltas, prose and JSON, with and without escapes. Before/after: run it against the
tree before the fix on PYTHONPATH, e.g.
    rm -rf /tmp/o33b && mkdir -p /tmp/o33b && git archive a11080d src | tar -x -C /tmp/o33b
    PYTHONPATH=/tmp/o33b/src .venv/bin/python scripts/bench_output_filter.py
    PYTHONPATH=src .venv/bin/python scripts/bench_output_filter.py
"""

from __future__ import annotations

import time

from aigrid.gateway import output_filter
from aigrid.gateway.output_filter import OutputFilter

PROSE = "The quarterly figures grew 4% to 12.1 million euros; the board meets on Tuesday at noon. " * 40
JSON = '{"name": "Jo", "city": "Lyon", "items": [1, 2, 3], "note": "fine weather today", "ok": true}, ' * 40
ESCAPED = '{"name": "J\\u00f6", "city": "Ly\\u006fn", "note": "caf\\u00e9 \\"x\\"\\n", "path": "a\\/b"}, ' * 40
CASES = {"prose content": ("content", PROSE), "JSON content": ("content", "[" + JSON + "0]"),
         "JSON content, escapes": ("content", "[" + ESCAPED + "0]"), "tool arguments, JSON": ("tool", "[" + JSON + "0]")}


def run(field: str, text: str) -> float:
    pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
    best = float("inf")
    for _ in range(15):
        f = OutputFilter(True, strip_usage=False)
        t = time.perf_counter()
        for p in pieces:
            delta = {"content": p} if field == "content" else {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}
            f.event({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})
        f.flush_event()
        best = min(best, (time.perf_counter() - t) / len(pieces))
    return best * 1e6


def reader_alone(text: str) -> float:
    """The added step alone: EscapeReader.feed per chunk."""
    pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
    best = float("inf")
    for _ in range(15):
        reader = output_filter.EscapeReader(True)
        t = time.perf_counter()
        for p in pieces:
            reader.feed(p)
        best = min(best, (time.perf_counter() - t) / len(pieces))
    return best * 1e6


print("after (EscapeReader)" if hasattr(output_filter, "EscapeReader") else "before (no EscapeReader)")
for name, (field, text) in CASES.items():
    alone = f"; EscapeReader.feed alone {reader_alone(text):.2f} us" if hasattr(output_filter, "EscapeReader") else ""
    print(f"{name}: {run(field, text):.1f} us per chunk ({len(text) // 4} chunks of 4 characters){alone}")
