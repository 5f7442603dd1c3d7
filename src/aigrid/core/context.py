"""The values a routing plugin receives and returns: the per-request Context, a filter's Verdict, a scorer's
Score, and clamp01.

Apart from the plugin protocols (core/plugins.py, which re-exports all of this) so that this module can be
compiled with the rest of the routing core (docs/simulator.md, "The compiled core") while the protocols stay
plain Python classes that a plugin may subclass.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.types import GridView, Policy, RequestInfo, record_builder


@dataclass(frozen=True, slots=True)
class Context:
    """Per-request values computed once and shared by the filters and scorers."""

    request: RequestInfo
    view: GridView
    policy: Policy
    crowded: frozenset[str] = frozenset()
    """Endpoints warm for this request (core.predict.warm_cache) whose load is past the affinity bound
    (core.scorers.affinity.crowded_owners): the affinity scorer gives them no warmth bonus."""
    best_ttft_ms: float = -1.0
    """The lowest predicted TTFT among this request's candidates (those every filter passed): the ttft axis
    scores each candidate against it. Negative: not known (a caller that scores one endpoint alone); 0 is a
    prediction (no round trip measured, no prompt to prefill), not "unknown"."""


build_context = record_builder(Context)
"""Context(request, view, policy, crowded, best_ttft_ms), every field given, without its generated __init__ (the same
record; compiled, the class is native but its __init__ is still the dataclass's Python one)."""
NOTHING_CROWDED: frozenset[str] = frozenset()
"""Context.crowded's default."""


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


PASS = Verdict(True)
"""The verdict of every passing check: one shared instance, not one per endpoint per filter."""


Score = tuple[float, str, tuple[object, ...]]
"""What a scorer returns for one candidate: (value, note, args). `value` is in [0, 1], higher is better
(the scheduler clamps it). `note` is a str.format template filled with `args` only when someone reads the
note (explain, the dashboard): formatting floats for every candidate of every decision was most of the core's
cost. A plain tuple, not an object: the core builds one per axis per candidate of every decision."""


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
