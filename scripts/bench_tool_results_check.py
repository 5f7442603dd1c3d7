"""CPU time of agents/loop.check_tool_results (on the event loop for every chat request, and the Messages and Responses
doors' translations) for one turn of N calls, each its own assistant message (one turn: consecutive assistant
messages are merged), then N results naming no call (each answers the first call not yet answered). Brief QUAD,
thirty-sixth session: the merge copied the turn's calls at each message, and each such result looked for the first
unanswered call from the turn's first: both quadratic.

    .venv/bin/python scripts/bench_tool_results_check.py [N ...]   # default 5000 10000 20000
    .venv/bin/python scripts/bench_tool_results_check.py --named [N ...]   # the results name their calls

Prints figures (no pass/fail).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from aigrid.agents.loop import check_tool_results


def turn(n: int, named: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "q"}]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}]} for i in range(n)]
    messages += [{"role": "tool", "content": "r", **({"tool_call_id": f"call_{i}"} if named else {})}
                 for i in range(n)]
    return messages


def main() -> None:
    args = sys.argv[1:]
    named = "--named" in args
    for n in [int(a) for a in args if a != "--named"] or [5_000, 10_000, 20_000]:
        messages = turn(n, named)
        size = len(orjson.dumps({"messages": messages}))
        t = time.process_time()
        check_tool_results(messages)
        print(f"{n:,} calls and results{' (named)' if named else ''}, {size / 1e6:.1f} MB: "
              f"{(time.process_time() - t) * 1000:.1f} ms CPU", flush=True)


if __name__ == "__main__":
    main()
