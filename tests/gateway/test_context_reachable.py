"""The context 400 names a model the caller can reach: a US caller's prompt that its one US model (2,048) cannot hold
is told 2,048, not the 4,096 of an EU model it may not use. The router's context filter runs after the residency and
tenant filters (core/registry.py), so an endpoint out of reach is rejected for that, and the 400
(context_window.refuse_too_long) names the largest context among the endpoints rejected for their context. Until
FIX5 (thirty-fourth session) the context filter ran second and the 400 said 4,096: a model the caller could not
reach, whose context the prompt would not fit anyway."""

from __future__ import annotations

from pathlib import Path

from aigrid.spec.models import GridSpec
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

SMALL, MID, LARGE = "smollm2-135m", "smollm2-360m", "smollm2-1.7b"
US_SMALL, EU_MID, EU_LARGE = "iad-smollm2", "fra-smollm2-mid", "fra-smollm2"
PROMPT = "word " * 8000  # 40,000 characters: at least 5,000 tokens (8 a token): past 2,048 and 4,096, within 8,192


def three_contexts(tmp: Path) -> tuple[GridSpec, dict[str, FakeEngine]]:
    """SMALL (2,048) at iad (US); MID (4,096) and LARGE (8,192) at fra (EU); one family; a fake engine each."""
    spec = spec_in(tmp)
    small = spec.models[SMALL].model_copy(update={"context": 2048})
    models = {SMALL: small, MID: small.model_copy(update={"context": 4096, "params_b": 0.36}),
              LARGE: small.model_copy(update={"context": 8192, "params_b": 1.7})}
    by_id = {e.id: e for e in spec.endpoints}
    endpoints = [by_id[US_SMALL], by_id[EU_LARGE].model_copy(update={"model": LARGE}),
                 by_id[EU_LARGE].model_copy(update={"id": EU_MID, "model": MID})]
    spec = spec.model_copy(update={"models": models, "endpoints": endpoints})
    return spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}


async def test_the_context_400_names_the_largest_context_the_caller_can_reach(tmp_path: Path) -> None:
    spec, fakes = three_contexts(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", headers={"x-aigrid-residency": "US"},
                              json={"model": "auto", "messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 400, r.text[:300]
        error = r.json()["error"]
        [decision] = (await client.get("/v1/decisions")).json()["data"][-1:]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages"), error
    assert error["message"].startswith("This model's maximum context length is 2048 tokens. However, your prompt "
                                       "has at least 5000 tokens"), error
    assert {(x["endpoint"], x["filter"]) for x in decision["rejected"]} == {
        (US_SMALL, "context"), (EU_MID, "residency"), (EU_LARGE, "residency")}
    assert all(not f.received for f in fakes.values())


async def test_without_residency_the_large_model_serves_it(tmp_path: Path) -> None:
    """The same prompt from a caller who may reach the EU: LARGE holds it, the others are rejected for context."""
    spec, fakes = three_contexts(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": "auto", "messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 200, r.text[:300]
    assert len(fakes[EU_LARGE].received) == 1 and not fakes[US_SMALL].received and not fakes[EU_MID].received
