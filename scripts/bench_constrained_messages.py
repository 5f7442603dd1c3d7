"""CPU time of agents/steps.constrained_messages (run on the event loop before each constrained model turn) for a
conversation whose results after a turn of calls are MB megabytes of short tool results and user lines (brief QUAD,
thirty-sixth session: each was added to one message with `+=`, quadratic). Best of 3, in this process.

    .venv/bin/python scripts/bench_constrained_messages.py [MB ...]   # default 1 2 4

Prints figures (no pass/fail).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from aigrid.agents.steps import ToolSpec, constrained_messages

TOOL = ToolSpec("weather", "The weather.", {"type": "object"}, server=False)


def conversation(mb: float) -> list[dict[str, Any]]:
    """A call answered by `mb` MB of results 20 characters each, a user line of 20 after each."""
    n = int(mb * 1e6 / 40)
    out: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}]
    for _ in range(n):
        out.append({"role": "tool", "tool_call_id": "call_0", "content": "s" * 20})
        out.append({"role": "user", "content": "u" * 20})
    return out


def main() -> None:
    for mb in [float(a) for a in sys.argv[1:]] or [1.0, 2.0, 4.0]:
        messages = conversation(mb)
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            constrained_messages(messages, [TOOL])
            best = min(best, time.process_time() - t)
        print(f"{mb:g} MB of results and user lines ({len(messages) - 2:,} messages): {best * 1000:.1f} ms CPU",
              flush=True)


if __name__ == "__main__":
    main()
