"""The one did-you-mean of spec errors: a mistyped field name and a mistyped value of a closed set (an engine
kind, a policy, a site, a model, a tenant, a jurisdiction, a firewall action, ...) name the nearest known one."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from aigrid.errors import MAX_LISTED

CUTOFF = 0.6
"""difflib's similarity a known name must reach to be offered (`vlm` for vllm: 0.86; `cheapest` for balanced: 0.25)."""


def nearest(given: object, known: Iterable[object]) -> str | None:
    """The known name nearest `given` (any case), or None when none is near enough or `given` is itself known."""
    names = [str(k) for k in known]
    text = str(given)
    if text in names:
        return None
    lowered = {n.lower(): n for n in names}
    if text.lower() in lowered:  # `VLLM` for vllm: a case-only miss
        return lowered[text.lower()]
    found = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=CUTOFF)
    return lowered[found[0]] if found else None


def did_you_mean(given: object, known: Iterable[object]) -> str:
    """` (did you mean vllm?)` after a value or key not among `known`, when one is spelt nearly so; else ""."""
    near = nearest(given, known)
    return f" (did you mean {near}?)" if near is not None else ""


class Near:
    """did_you_mean for the first `budget` values one spec's checks ask of it, the most problems an error lists (a
    hint is asked at most once a problem, so no listed one goes without): each is a difflib pass over the known
    names: 500 endpoints naming models not among 500 took 11.7 s (0.04 s without guesses), 2,000 among 2,000 174 s."""

    def __init__(self, budget: int = MAX_LISTED) -> None:
        self.left = budget

    def __call__(self, given: object, known: Iterable[object]) -> str:
        if self.left <= 0:
            return ""
        self.left -= 1
        return did_you_mean(given, known)
