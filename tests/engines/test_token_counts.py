"""engines/token_counts.py: the one rule for an engine's token counts, and its three readers agree on it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aigrid.agents.loop import turn_counts
from aigrid.engines.fan_out import _merged_usage
from aigrid.engines.token_counts import MOST_COUNT, bad_count, count_fault
from aigrid.gateway.usage import whole_answer

BAD = [{"prompt_tokens": -5}, {"completion_tokens": 3.0}, {"total_tokens": True}, {"prompt_tokens": "12"},
       {"completion_tokens": 1e300}, {"prompt_tokens": MOST_COUNT + 1}, {"total_tokens": 1 << 70},
       {"total_tokens": -1}]


def _gateway_refuses(usage: dict[str, Any]) -> bool:
    """Whether the gateway's whole-answer reader takes `usage` out as counts it cannot charge (json, not orjson,
    writes the counts past 64 bits)."""
    return whole_answer(json.dumps({"choices": [], "usage": usage}).encode(), None)[2] is not None


GOOD = [{}, {"prompt_tokens": None}, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"x": "y"}},
        {"prompt_tokens": MOST_COUNT}]


@pytest.mark.parametrize("usage", BAD, ids=lambda u: repr(u))
def test_a_count_that_is_not_a_whole_number_of_64_bits_is_named(usage: dict[str, Any]) -> None:
    key, value = next(iter(usage.items()))
    assert bad_count(usage) == (key, value) and count_fault(usage) == f"{key} is {value!r}"


@pytest.mark.parametrize("usage", GOOD, ids=lambda u: repr(u))
def test_whole_counts_can_be_charged(usage: dict[str, Any]) -> None:
    assert bad_count(usage) is None and count_fault(usage) is None


def test_the_prompt_and_completion_together_are_at_most_what_the_context_holds() -> None:
    usage = {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 1}  # total is not what is held
    assert count_fault(usage, 100) is None and count_fault(usage) is None
    assert count_fault(usage, 99) == "100 tokens, more than the 99 its context holds"


@pytest.mark.parametrize("usage", BAD, ids=lambda u: repr(u))
def test_the_gateway_the_fan_out_and_the_tool_loop_refuse_the_same_counts(usage: dict[str, Any]) -> None:
    """Until the thirty-second session each had its own copy: the gateway's passed a count past 64 bits where the
    endpoint's context was not known (most None), the fan-out's did not read total_tokens (a -1 was merged)."""
    assert _gateway_refuses(usage)
    assert _merged_usage({0: {"prompt_tokens": 1, "completion_tokens": 1}, 1: usage}, 1) is None
    assert turn_counts(usage) == {}


@pytest.mark.parametrize("usage", GOOD, ids=lambda u: repr(u))
def test_the_three_readers_take_the_same_counts(usage: dict[str, Any]) -> None:
    assert not _gateway_refuses(usage)
    assert _merged_usage({0: usage}, 1) is not None
    assert turn_counts(usage) == {k: v for k, v in usage.items() if type(v) is int}
