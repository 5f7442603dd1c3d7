"""A key (or tenant) limited to some models is served by those models only, whatever the router may pick
(security/authorize.scope_request -> RequestInfo.allowed_models -> core/filters/model.ServesModel): not by
another model of the same family when the policy allows family fallback (the default), nor by any model of the
grid for `model: "auto"`, on every attempt (a retry, a failover, an escalation to a larger model)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigrid.gateway.app import Gateway
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.load import load_spec
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import SECRET, SPEC, enforced


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, FakeEngine], dict[str, str], Gateway]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    spec = load_spec(SPEC)
    tenants = dict(spec.tenants)
    tenants["small-only"] = TenantSpec.model_validate({"policy": "balanced", "models": ["small-1b", "auto"]})
    tenants["escalates"] = TenantSpec.model_validate({"policy": "balanced", "right_size": {
        "max_quality_drop": 2.0, "escalate": {"below_confidence": 0.5, "within_ms": 60_000}}})
    ring = KeyRing(SECRET.encode())
    keys = {"small-key": ring.issue("default", Scopes(models=frozenset({"small-1b", "auto"}))).api_key,
            "small-tenant": ring.issue("small-only").api_key,
            "escalating-small-key": ring.issue("escalates", Scopes(models=frozenset({"small-1b", "auto"}))).api_key,
            "auto-only": ring.issue("default", Scopes(models=frozenset({"auto"}))).api_key}
    spec = enforced(spec, tenants, ring, tmp_path)
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " says", " hi")) for e in spec.endpoints}
    async with serving(spec, fakes) as (c, gw):
        yield c, fakes, keys, gw


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}


@pytest.mark.parametrize("who", ["small-key", "small-tenant"])
async def test_a_model_scope_is_not_left_by_family_fallback(grid, who: str) -> None:
    """The small model's only engine down: the default policy falls back to another model of its family, which
    this key (or its tenant) may not use. Before, the answer came from large-70b; now no engine may serve it."""
    client, fakes, keys, _ = grid
    fakes["fra-small"].down = True
    await grid[3].scraper.scrape_once()
    r = await client.post("/v1/chat/completions", json=_chat("small-1b"),
                          headers={"authorization": f"Bearer {keys[who]}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_eligible_endpoint", r.text
    assert fakes["iad-large"].received == []
    d = await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}",
                         headers={"authorization": f"Bearer {keys[who]}"})
    reasons = {x["endpoint"]: x["reason"] for x in d.json()["rejected"]}
    assert "iad-large" not in reasons, reasons  # nor the endpoint of a model it may not use (test_decision_scopes.py)


@pytest.mark.parametrize("who", ["small-key", "small-tenant"])
async def test_auto_picks_among_the_models_the_key_may_use(grid, who: str) -> None:
    """`model: "auto"` granted beside small-1b: the router picks among the models the key may use (before, any
    model of the grid: large-70b here, the small model's engine being down)."""
    client, fakes, keys, _ = grid
    fakes["fra-small"].down = True
    await grid[3].scraper.scrape_once()
    r = await client.post("/v1/chat/completions", json=_chat("auto"), headers={"authorization": f"Bearer {keys[who]}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_eligible_endpoint", r.text
    assert fakes["iad-large"].received == []
    fakes["fra-small"].down = False
    await grid[3].scraper.scrape_once()
    r = await client.post("/v1/chat/completions", json=_chat("auto"), headers={"authorization": f"Bearer {keys[who]}"})
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == "small-1b", r.text


async def test_an_unsure_answer_is_not_escalated_to_a_model_the_key_may_not_use(grid) -> None:
    client, fakes, keys, _ = grid
    fakes["fra-small"].logprob = -1.2  # confidence 0.3, below the tenant's 0.5
    r = await client.post("/v1/chat/completions", json=_chat("auto"),
                          headers={"authorization": f"Bearer {keys['escalating-small-key']}",
                                   "x-aigrid-client-location": "Frankfurt"})
    assert r.status_code == 200, r.text
    assert r.headers["x-aigrid-model"] == "small-1b" and "x-aigrid-escalated-from" not in r.headers
    assert fakes["iad-large"].received == []


async def test_a_scope_of_auto_alone_lets_the_router_pick_any_model(grid) -> None:
    """`models: [auto]` (a tenant or key that only asks the router) limits what it may ask, not what serves it."""
    client, fakes, keys, _ = grid
    fakes["fra-small"].down = True
    await grid[3].scraper.scrape_once()
    h = {"authorization": f"Bearer {keys['auto-only']}"}
    r = await client.post("/v1/chat/completions", json=_chat("auto"), headers=h)
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == "large-70b", r.text
    r = await client.post("/v1/chat/completions", json=_chat("large-70b"), headers=h)
    assert r.status_code == 403, r.text


async def test_the_grid_a_narrowed_key_reads_is_the_part_that_may_serve_it(grid) -> None:
    """GET /v1/grid showed any valid key every site and endpoint with its model, load and health, where /v1/models
    shows a key only the models it may use: a key limited to small-1b read iad-large serving large-70b there
    (helper 121). Now a non-operator reads the endpoints that may serve it and their sites."""
    client, _, keys, gw = grid
    small = (await client.get("/v1/grid", headers={"authorization": f"Bearer {keys['small-key']}"})).json()
    everything = (await client.get("/v1/grid", headers={"authorization": f"Bearer {keys['auto-only']}"})).json()
    assert {e["model"] for e in small["endpoints"]} == {"small-1b"}
    assert {e["id"] for e in everything["endpoints"]} == {e.id for e in gw.spec.endpoints}
    assert set(small["sites"]) == {e["site"] for e in small["endpoints"]} < set(everything["sites"])
