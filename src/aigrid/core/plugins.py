"""The three kinds of routing plugin: Filter -> weighted Scorers -> Picker.

A filter removes endpoints that must not serve the request (hard constraints, never weights). A scorer maps
an eligible endpoint to [0, 1] on one axis. The picker turns weighted totals into a ranked list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aigrid.core.types import (
    Candidate,
    Endpoint,
    EndpointState,
    GridView,
    Policy,
    Prediction,
    RequestInfo,
    Rng,
)


@dataclass(frozen=True, slots=True)
class Context:
    """Per-request values computed once and shared by the filters and scorers."""

    request: RequestInfo
    view: GridView
    policy: Policy
    crowded: frozenset[str] = frozenset()
    """Endpoints warm for this request (core.predict.warm_cache) whose load is past the affinity bound
    (core.scorers.affinity.crowded_owners): the affinity scorer gives them no warmth bonus."""


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


PASS = Verdict(True)
"""The verdict of every passing check: one shared instance, not one per endpoint per filter."""


class Filter(Protocol):
    name: str

    def applies(self, ctx: Context) -> bool:
        """False when check() would pass every endpoint for this request (a rule the request does not have:
        no residency, no pinned sites, nothing excluded): the scheduler then skips it, one call per request
        instead of one per endpoint."""
        ...

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict: ...


Score = tuple[float, str, tuple[object, ...]]
"""What a scorer returns for one candidate: (value, note, args). `value` is in [0, 1], higher is better
(the scheduler clamps it). `note` is a str.format template filled with `args` only when someone reads the
note (explain, the dashboard): formatting floats for every candidate of every decision was most of the core's
cost. A plain tuple, not an object: the core builds one per axis per candidate of every decision."""


class Scorer(Protocol):
    axis: str

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        """`state` is the endpoint's telemetry in this snapshot (ctx.view.state(endpoint.id)), `prediction` its
        TTFT prediction (core.predict)."""
        ...


class Picker(Protocol):
    name: str

    def pick(self, candidates: Sequence[Candidate], policy: Policy, rng: Rng) -> tuple[Candidate, ...]: ...


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
