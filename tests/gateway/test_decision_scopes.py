"""A caller that is not an operator reads, in its decisions (`GET /v1/decisions/{id}` and the list), the rejections
of the endpoints that may serve it only (security/authorize.may_serve, the part of the grid /v1/grid shows it):
before, a key narrowed to a model or a jurisdiction read in every decision's `rejected` the ids and sites of the
endpoints of models and jurisdictions it may not use (docs/security.md, Limits, until the twenty-first session)."""

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
from tests.gateway.keyed_grid import SECRET, SPEC, enforced  # SPEC: fra-small (EU), iad-large (US)


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, FakeEngine], dict[str, str], Gateway]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    spec = load_spec(SPEC)
    tenants = {**spec.tenants, "ops": TenantSpec.model_validate({"operator": True})}
    ring = KeyRing(SECRET.encode())
    keys = {"small": ring.issue("default", Scopes(models=frozenset({"small-1b", "auto"}))).api_key,
            "eu": ring.issue("default", Scopes(jurisdictions=frozenset({"EU"}))).api_key,
            "whole": ring.issue("default").api_key, "ops": ring.issue("ops").api_key}
    spec = enforced(spec, tenants, ring, tmp_path)
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " says", " hi")) for e in spec.endpoints}
    async with serving(spec, fakes) as (c, gw):
        yield c, fakes, keys, gw


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _rejected(client: httpx.AsyncClient, key: str, decision: str) -> tuple[dict[str, str], list[set[str]]]:
    """The decision's rejections as `key` reads them (endpoint: filter), and the endpoints of each rejection list
    of the decision in `GET /v1/decisions`."""
    one = await client.get(f"/v1/decisions/{decision}", headers=_auth(key))
    assert one.status_code == 200, one.text
    listed = await client.get("/v1/decisions?limit=50", headers=_auth(key))
    assert listed.status_code == 200, listed.text
    return ({r["endpoint"]: r["filter"] for r in one.json()["rejected"]},
            [{r["endpoint"] for r in d["rejected"]} for d in listed.json()["data"] if d["id"] == decision])


@pytest.mark.parametrize(("who", "model"), [("small", "small-1b"), ("eu", "auto")])
async def test_a_narrowed_key_reads_no_rejection_of_an_endpoint_it_may_not_use(grid, who: str, model: str) -> None:
    """A key narrowed to small-1b (or to the EU) whose request was routed: iad-large (large-70b, in the US) was
    rejected by the model (jurisdiction) filter, and the key read it, its id and site, in its decision. Now it reads
    the rejections of endpoints that may serve it (fra-small, down here) only; an operator reads them all."""
    client, fakes, keys, _ = grid
    fakes["fra-small"].down = True
    await grid[3].scraper.scrape_once()
    r = await client.post("/v1/chat/completions", headers=_auth(keys[who]), json={
        "model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_eligible_endpoint", r.text
    # nor in the 503's message, which names each rejection (it named iad-large and why)
    assert "fra-small:" in r.text and "iad-large" not in r.text, r.text
    decision = r.headers["x-aigrid-decision"]
    mine, listed = await _rejected(client, keys[who], decision)
    assert set(mine) == {"fra-small"} and listed == [{"fra-small"}], (mine, listed)
    everyone, _ = await _rejected(client, keys["ops"], decision)
    assert set(everyone) == {"fra-small", "iad-large"}, everyone


async def test_a_key_of_the_whole_grid_reads_every_rejection(grid) -> None:
    """A key of a tenant that is not an operator reads every rejection of an endpoint its scopes allow, one its
    request's own residency header ruled out included (iad-large, in the US, for `x-aigrid-residency: EU`)."""
    client, _, keys, _ = grid
    r = await client.post("/v1/chat/completions", headers={**_auth(keys["whole"]), "x-aigrid-residency": "EU"}, json={
        "model": "small-1b", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8})
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == "small-1b", r.text
    mine, listed = await _rejected(client, keys["whole"], r.headers["x-aigrid-decision"])
    assert mine == {"iad-large": "residency"} and listed == [{"iad-large"}], (mine, listed)


async def test_a_narrowed_key_does_not_read_its_tenants_decisions_routed_where_it_may_not_be(grid) -> None:
    """Decisions are the tenant's: a key narrowed to the EU read those of its tenant's unrestricted key, one served
    by iad-large in the US included (its candidates, choice and attempts, with their sites and models). Now such a
    decision is a 404 to it and left out of its list; one routed where it may be served is still read."""
    client, _, keys, _ = grid
    body = {"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}
    us = await client.post("/v1/chat/completions", json=body,
                           headers={**_auth(keys["whole"]), "x-aigrid-residency": "US"})
    eu = await client.post("/v1/chat/completions", json=body,
                           headers={**_auth(keys["whole"]), "x-aigrid-residency": "EU"})
    assert (us.status_code, us.headers["x-aigrid-model"], eu.status_code) == (200, "large-70b", 200), us.text
    us_id, eu_id = us.headers["x-aigrid-decision"], eu.headers["x-aigrid-decision"]
    r = await client.get(f"/v1/decisions/{us_id}", headers=_auth(keys["eu"]))
    assert r.status_code == 404 and "iad" not in r.text, r.text
    assert (await client.get(f"/v1/decisions/{eu_id}", headers=_auth(keys["eu"]))).status_code == 200
    listed = (await client.get("/v1/decisions?limit=50", headers=_auth(keys["eu"]))).json()["data"]
    assert [d["id"] for d in listed] == [eu_id], listed
    assert (await client.get(f"/v1/decisions/{us_id}", headers=_auth(keys["whole"]))).status_code == 200
