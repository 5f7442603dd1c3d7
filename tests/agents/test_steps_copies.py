"""constrained_messages, the client's conversation rewritten for a constrained turn: what it copies to do it."""

from __future__ import annotations

from typing import Any

from aigrid.agents.steps import ToolSpec, constrained_messages
from tests.agents.copied_text import Copied, Counted

TOOL = ToolSpec("weather", "The weather.", {"type": "object"}, server=False)


def test_a_long_run_of_results_and_user_words_is_joined_once() -> None:
    """(7 Dec 2026, thirty-sixth session, brief QUAD) The results after a turn of calls, and the user's words after
    them, are one user message: each was added to it (`+=` on the message's content), a copy of all before it each
    time, quadratic in the run (1 MB of short results cost 0.17 s of the event loop a turn, 2 s in a fresh
    process). Now they are joined once."""
    n = 4_000
    copied = Copied()
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            for i in range(n)]}]
    for i in range(n):
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "sunny"})
        messages.append({"role": "user", "content": Counted("and then?", copied)})
    out = constrained_messages(messages, [TOOL])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[-1]["content"] == "\n\n".join(["weather result: sunny\n\nand then?"] * n)
    assert copied.chars <= 20 * n, copied.chars  # whole: 5.4 x 10^8 (n * n * 34)
