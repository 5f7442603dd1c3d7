"""The three kinds of routing plugin: Filter -> weighted Scorers -> Picker.

A filter removes endpoints that must not serve the request (hard constraints, never weights). A scorer maps
an eligible endpoint to [0, 1] on one axis. The picker turns weighted totals into a ranked list.

The protocols stay plain Python (a plugin may subclass them); the values they pass (Context, Verdict, PASS,
Score, clamp01) live in core/context.py, which is compiled with the rest of the core, and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aigrid.core.context import PASS, Context, Score, Verdict, clamp01
from aigrid.core.types import Candidate, Endpoint, EndpointState, Policy, Prediction, Rng

__all__ = ["PASS", "Context", "Filter", "Picker", "Score", "Scorer", "Verdict", "clamp01"]


class Filter(Protocol):
    @property
    def name(self) -> str: ...

    def applies(self, ctx: Context) -> bool:
        """False when check() would pass every endpoint for this request (a rule the request does not have:
        no residency, no pinned sites, nothing excluded): the scheduler then skips it, one call per request
        instead of one per endpoint."""
        ...

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict: ...


class Scorer(Protocol):
    @property
    def axis(self) -> str: ...

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        """`state` is the endpoint's telemetry in this snapshot (ctx.view.state(endpoint.id)), `prediction` its
        TTFT prediction (core.predict)."""
        ...


class Picker(Protocol):
    @property
    def name(self) -> str: ...

    def pick(self, candidates: Sequence[Candidate], policy: Policy, rng: Rng) -> tuple[Candidate, ...]: ...
