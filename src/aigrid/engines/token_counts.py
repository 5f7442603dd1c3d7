"""Which token counts of an engine's answer can be charged: one rule for every reader of an engine's usage (the
gateway's stream relay and whole answers, gateway/relay.py and usage.py `whole_answer`; the fan-out's merged answer,
engines/fan_out.py; a tool loop's model turn, agents/loop.py `turn_counts`). Until the thirty-second session each had
its own copy, and they differed: the gateway's allowed a count past 64 bits where the context was not known, the
fan-out's did not look at total_tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
MOST_COUNT = (1 << 63) - 1
"""The largest count: what a signed 64-bit integer holds (the audit record's, a metric's)."""


def bad_count(usage: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The first of COUNTS that is not absent, null or a whole number (not a bool, a float or a string) from 0 to
    MOST_COUNT, and its value; None when there is none."""
    for key in COUNTS:
        value = usage.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= MOST_COUNT):
            return key, value
    return None


def count_fault(usage: Mapping[str, Any], most: int | None = None) -> str | None:
    """Why an engine's token counts cannot be charged (None: they can): no bad_count, and the prompt and completion
    together at most `most` (what the contexts of the answer's engine requests hold; None: not known). Charged as they were, -5 refunded the
    tenant, 1e300 locked it out for good, a string or a number past 64 bits failed the record and the front doors'
    translations (a 500)."""
    bad = bad_count(usage)
    if bad is not None:
        return f"{bad[0]} is {bad[1]!r}"
    if most is not None:
        held = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
        if held > most:
            return f"{held} tokens, more than the {most} its context holds"
    return None
