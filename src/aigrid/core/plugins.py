"""The three kinds of routing plugin: Filter -> weighted Scorers -> Picker.

A filter removes endpoints that must not serve the request (hard constraints, never weights). A scorer maps
an eligible endpoint to [0, 1] on one axis. The picker turns weighted totals into a ranked list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aigrid.core.types import Candidate, Endpoint, GridView, Policy, Prediction, RequestInfo, Rng


@dataclass(frozen=True, slots=True)
class Context:
    """Per-request values computed once and shared by the filters and scorers."""

    request: RequestInfo
    view: GridView
    policy: Policy


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


PASS = Verdict(True)
"""The verdict of every passing check: one shared instance, not one per endpoint per filter."""


class Filter(Protocol):
    name: str

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    """In [0, 1]; higher is better."""
    note: str = ""
    """A str.format template, filled with `args` only when someone reads the note (explain, the dashboard):
    formatting floats for every candidate of every decision was most of the core's cost."""
    args: tuple[object, ...] = ()


class Scorer(Protocol):
    axis: str

    def score(self, ctx: Context, endpoint: Endpoint, prediction: Prediction) -> Score: ...


class Picker(Protocol):
    name: str

    def pick(self, candidates: Sequence[Candidate], policy: Policy, rng: Rng) -> tuple[Candidate, ...]: ...


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
