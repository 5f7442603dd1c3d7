"""Right-sizing (`model: auto` for a tenant with `right_size`) for a key narrowed to some of its tenant's models: the
estimates are of the models the key may use. Before, they were of every model of the tenant's ladder: the quality
filter measured the key's models against the best of all (large-70b here), so a key limited to small-1b was a 503
no_eligible_endpoint for a prompt large-70b was estimated to answer better (small-1b rejected by the quality
filter, large-70b by the model scope), and its decision named large-70b and its estimate, a model its
`/v1/models` does not list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigrid.rightsize.estimator import QualityEstimator
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.load import load_spec
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import enforced
from tests.gateway.test_right_size import PROMPTS

SPEC = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"  # small-1b and large-70b
SECRET = "right-size-scopes-0123456789abcdef"


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    spec = load_spec(SPEC)
    # a drop of 0: only the best-estimated model is eligible
    tenants = {**spec.tenants, "auto": TenantSpec.model_validate({"policy": "balanced",
                                                                  "right_size": {"max_quality_drop": 0.0}}),
               "ladder": TenantSpec.model_validate({"policy": "balanced", "right_size": {
                   "max_quality_drop": 0.0, "models": ["large-70b"]}})}
    ring = KeyRing(SECRET.encode())
    keys = {"small": ring.issue("auto", Scopes(models=frozenset({"small-1b", "auto"}))).api_key,
            "whole": ring.issue("auto").api_key,
            "off-ladder": ring.issue("ladder", Scopes(models=frozenset({"small-1b", "auto"}))).api_key}
    spec = enforced(spec, tenants, ring, tmp_path)
    async with serving(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}) as (c, _):
        yield c, keys


async def test_a_key_of_the_small_model_is_right_sized_among_its_own_models(grid) -> None:
    client, keys = grid
    est = QualityEstimator.load()
    prompt = max(PROMPTS, key=lambda p: est.estimate(p).gain)  # the large model estimated better
    assert est.estimate(prompt).gain > 0
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
    whole = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {keys['whole']}"})
    assert whole.status_code == 200 and whole.headers["x-aigrid-model"] == "large-70b", whole.text
    small = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {keys['small']}"})
    assert small.status_code == 200 and small.headers["x-aigrid-model"] == "small-1b", small.text
    d = (await client.get(f"/v1/decisions/{small.headers['x-aigrid-decision']}",
                          headers={"authorization": f"Bearer {keys['small']}"})).json()
    assert set(d["model_choice"]["estimates"]) == {"small-1b"} and "large-70b" not in d["reason"], d


async def test_a_key_of_no_model_of_the_ladder_is_served_by_none(grid) -> None:
    """The ladder (`right_size.models`) is what `auto` may pick: a key whose models are all off it is not served by
    another model through `auto`, as before (a 503), and its decision names no model it may not use."""
    client, keys = grid
    body = {"model": "auto", "messages": [{"role": "user", "content": "Write a haiku about spring."}], "max_tokens": 8}
    r = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {keys['off-ladder']}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_eligible_endpoint", r.text
    assert "large-70b" not in r.text, r.text
