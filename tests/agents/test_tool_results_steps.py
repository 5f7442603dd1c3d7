"""check_tool_results (every chat request's messages, the Messages and Responses doors' translations): the steps it
takes to read a long turn of calls and results."""

from __future__ import annotations

from typing import Any

import pytest

from aigrid.agents.loop import UnansweredToolCalls, check_tool_results


class _Id(str):
    """A call id that counts each time it is looked up (hashed) in `looked[0]`."""

    looked = [0]

    def __hash__(self) -> int:
        self.looked[0] += 1
        return str.__hash__(self)


def _turn(n: int, *, results: int) -> list[dict[str, Any]]:
    """A turn of `n` calls, one an assistant message (merged into one turn), then `results` results naming none."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "q"}]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": _Id(f"call_{i}"), "type": "function", "function": {"name": "f", "arguments": "{}"}}]} for i in range(n)]
    messages += [{"role": "tool", "content": "r"} for _ in range(results)]
    return messages


def test_results_naming_no_call_answer_the_first_unanswered_without_reading_all_before_it_each_time() -> None:
    """(7 Dec 2026, thirty-sixth session, brief QUAD) A result naming no call answers the turn's first call not yet
    answered, found from the turn's first call each time: quadratic in such results (20,000 calls and results,
    3.1 MB, took 7.9 s of the event loop: scripts/bench_tool_results_check.py). Now read on from the last found."""
    n = 4_000
    messages = _turn(n, results=n)
    _Id.looked[0] = 0
    check_tool_results(messages)
    assert _Id.looked[0] <= 10 * n, _Id.looked[0]  # whole: n * n / 2 (8 x 10^6)


def test_the_results_naming_no_call_still_answer_each_call_once() -> None:
    check_tool_results(_turn(3, results=3))
    with pytest.raises(UnansweredToolCalls) as e:
        check_tool_results(_turn(3, results=2))
    assert e.value.ids == ("call_2",) and e.value.index == 3
    named = _turn(3, results=0) + [{"role": "tool", "tool_call_id": "call_0", "content": "r"},
                                   {"role": "tool", "content": "r"}, {"role": "tool", "content": "r"}]
    check_tool_results(named)  # the two naming none answer call_1 and call_2
    with pytest.raises(UnansweredToolCalls) as e:
        check_tool_results(named[:-1])
    assert e.value.ids == ("call_2",)
