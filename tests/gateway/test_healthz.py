"""/healthz: the readiness a probe reads without a key, the grid's endpoints for operators only."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from aigrid.gateway.app import build_app, build_gateway
from aigrid.security.keys import KeyRing
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

SECRET = "test-secret-0123456789abcdef"


async def test_healthz_names_endpoints_to_operators_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         fakes: dict[str, FakeEngine]) -> None:
    """With keys enforced, /healthz listed every healthy endpoint's id and the shared state's backend to anyone
    without a key (the grid's layout; an id often names its model and site). A probe keeps its answer (200 or
    503, no key, never a 401); the ids and the shared state are an operator's."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    tenant, ops = ring.issue("eu-bank").api_key, ring.issue("ops").api_key
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "ops": TenantSpec(operator=True)}})
    gw = build_gateway(spec, fakes, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        for headers in ({}, {"authorization": "Bearer aig_nope_nope"}, {"authorization": f"Bearer {tenant}"},
                        {"x-api-key": tenant}, {"authorization": f"Bearer {ops}", "x-api-key": tenant}):
            r = await c.get("/healthz", headers=headers)
            assert r.status_code == 200 and r.json() == {"status": "ok"}, (headers, r.text)
        for headers in ({"authorization": f"Bearer {ops}"}, {"x-api-key": ops}):
            full = (await c.get("/healthz", headers=headers)).json()
            assert "nrt-smollm2" in full["healthy"] and full["shared_state"] == {"backend": "in-process"}, full
        for fake in fakes.values():
            fake.down = True
        await gw.scraper.scrape_once()
        r = await c.get("/healthz")
        assert r.status_code == 503 and r.json() == {"status": "no healthy endpoint"}
        assert (await c.get("/healthz", headers={"x-api-key": ops})).json()["healthy"] == []


async def test_healthz_without_enforcement_answers_everything(client: httpx.AsyncClient) -> None:
    """A grid without keys (the demo): every caller is its operator, the answer whole, as before."""
    r = await client.get("/healthz")
    assert r.status_code == 200 and set(r.json()) == {"status", "healthy", "endpoints", "shared_state"}
