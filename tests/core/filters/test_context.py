"""The context filter (core/filters/context.py): an endpoint whose model's context cannot hold the request's prompt
(its lower bound, RequestInfo.min_prompt_tokens) and an answer's first token is rejected, with a reason `aigrid
explain` shows; nothing that could fit is."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from aigrid.core.baselines import BASELINES, eligible
from aigrid.core.context import Context
from aigrid.core.filters.context import HoldsPrompt, holds
from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.scheduler import schedule
from aigrid.core.types import GridView, ModelInfo, RequestInfo
from tests.core.grid import endpoint, view

BALANCED = BUILTIN_POLICIES["balanced"]
CONTEXTS = {"small": ModelInfo("small", "fam", 1.0, 2048), "big": ModelInfo("big", "fam", 8.0, 8192)}
EPS = (endpoint("fra", "small"), endpoint("iad", "small"), endpoint("nrt", "big"))


def grid(models: dict[str, ModelInfo] = CONTEXTS) -> GridView:
    return replace(view(EPS), models=models)


def req(at_least: int, model: str = "auto", prompt_tokens: int = 200) -> RequestInfo:
    return RequestInfo(id="r", model=model, prompt_tokens=prompt_tokens, min_prompt_tokens=at_least)


@pytest.mark.parametrize(("context", "prompt", "held"), [(2048, 2047, True), (2048, 2048, False), (2048, 2600, False),
                                                        (8192, 2600, True), (1, 0, True)])
def test_a_context_holds_the_prompt_and_one_token_of_answer(context: int, prompt: int, held: bool) -> None:
    assert holds(context, prompt) is held


@pytest.mark.parametrize("model", ["auto", "fam"])
def test_a_prompt_only_the_large_model_holds_is_routed_to_it(model: str) -> None:
    d = schedule(req(2600, model), grid(), BALANCED, random.Random(0))
    assert [c.endpoint_id for c in d.ranked] == ["nrt-big"]
    assert {(r.endpoint_id, r.filter, r.reason) for r in d.rejected} == {
        (e, "context", "context 2,048 tokens < the prompt's at least 2,600 + 1 of answer")
        for e in ("fra-small", "iad-small")}


def test_a_prompt_that_could_fit_is_never_rejected() -> None:
    """2,047 tokens at least and one of answer fill a 2,048 context exactly: every endpoint stays a candidate."""
    d = schedule(req(2047), grid(), BALANCED, random.Random(0))
    assert {c.endpoint_id for c in d.ranked} == {"fra-small", "iad-small", "nrt-big"} and not d.rejected


def test_no_bound_no_filter() -> None:
    """prompt_tokens is an average estimate, not a bound: a request without min_prompt_tokens (the simulator's, a
    caller that knows none) is never rejected for its context, whatever its estimate."""
    request = req(0, prompt_tokens=50_000)
    assert not HoldsPrompt().applies(Context(request, grid(), BALANCED))
    d = schedule(request, grid(), BALANCED, random.Random(0))
    assert len(d.ranked) == 3 and not d.rejected


def test_a_model_whose_context_is_not_known_passes() -> None:
    d = schedule(req(100_000), grid({**CONTEXTS, "small": ModelInfo("small", "fam", 1.0)}), BALANCED,
                 random.Random(0))
    assert {c.endpoint_id for c in d.ranked} == {"fra-small", "iad-small"}
    assert [(r.endpoint_id, r.filter) for r in d.rejected] == [("nrt-big", "context")]


def test_a_prompt_no_model_holds_leaves_no_candidate() -> None:
    d = schedule(req(9000), grid(), BALANCED, random.Random(0))
    assert d.chosen is None and {r.filter for r in d.rejected} == {"context"} and len(d.rejected) == 3


def test_the_model_filter_rejects_first_then_the_context() -> None:
    """An exact model: the other model's endpoint is the model filter's (no fallback to a smaller context)."""
    d = schedule(req(2600, "big"), grid(), replace(BALANCED, allow_family_fallback=False), random.Random(0))
    assert [c.endpoint_id for c in d.ranked] == ["nrt-big"]
    assert {r.filter for r in d.rejected} == {"model"}


@pytest.mark.parametrize("baseline", sorted(BASELINES))
def test_the_baselines_apply_it_too(baseline: str) -> None:
    ok, rejected = eligible(req(2600), grid(), BALANCED)
    assert [e.id for e in ok] == ["nrt-big"] and {r.filter for r in rejected} == {"context"}
    d = BASELINES[baseline]()(req(2600), grid(), BALANCED, random.Random(0))
    assert [c.endpoint_id for c in d.ranked] == ["nrt-big"]


def test_an_endpoint_the_caller_may_not_reach_is_rejected_for_that_not_its_context() -> None:
    """The filters reject an endpoint by the first rule it fails, and the gateway's context 400 names the largest
    context among those rejected for their context (context_window.refuse_too_long): the context filter runs after
    the residency and tenant ones, so only reachable endpoints are judged on it. Until FIX5 (thirty-fourth session)
    it ran second, and fra-small (EU, out of a US caller's reach) was rejected for its context."""
    us = replace(req(2600), allowed_jurisdictions=frozenset({"US"}))
    d = schedule(us, grid(), BALANCED, random.Random(0))
    assert d.chosen is None
    assert {(r.endpoint_id, r.filter) for r in d.rejected} == {
        ("fra-small", "residency"), ("iad-small", "context"), ("nrt-big", "residency")}
    pinned = replace(req(2600), allowed_sites=frozenset({"iad"}))
    d = schedule(pinned, grid(), BALANCED, random.Random(0))
    assert {(r.endpoint_id, r.filter) for r in d.rejected} == {
        ("fra-small", "tenant"), ("iad-small", "context"), ("nrt-big", "tenant")}
