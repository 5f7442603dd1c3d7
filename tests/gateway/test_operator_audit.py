"""The operator checks of /healthz (its details) and /metrics (`security.metrics: operator`) are not audited routes:
a probe or a scraper reads them every few seconds. A refused check is: one audit record, written by the one audit
writer (routes.close_exchange, Guard.finish), naming the caller's tenant and key when its key names them."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.gateway.app import build_app, build_gateway
from aigrid.security.keys import KeyRing
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

SECRET = "test-secret-0123456789abcdef"


async def test_a_refused_operator_check_of_healthz_or_metrics_is_audited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: dict[str, FakeEngine]) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    issued = ring.issue("eu-bank")
    tenant, ops = issued.api_key, ring.issue("ops").api_key
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "ops": TenantSpec(operator=True)},
                                   "security": spec.security.model_copy(update={"metrics": "operator"})})
    gw = build_gateway(spec, fakes, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}  # a probe without a key: no record
        assert "healthy" in (await c.get("/healthz", headers={"x-api-key": ops})).json()  # granted: no record
        assert (await c.get("/metrics", headers={"authorization": f"Bearer {ops}"})).status_code == 200
        r = await c.get("/healthz", headers={"authorization": f"Bearer {tenant}"})
        assert r.status_code == 200 and r.json() == {"status": "ok"}  # the answer as before: the status only
        assert (await c.get("/metrics", headers={"authorization": f"Bearer {tenant}"})).status_code == 403
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/healthz", headers={"authorization": "Bearer aig_000000000000_nope"})).status_code == 200
    await gw.guard.stop()
    rows = [orjson.loads(r[0]) for r in sqlite3.connect(tmp_path / "audit.db").execute(
        "SELECT body FROM audit_records ORDER BY seq")]
    seen = [(r["extra"]["route"], r["tenant"], r["key_id"], r["outcome"], r["extra"]["status"]) for r in rows]
    key_id = issued.record.key_id
    assert seen == [("GET /healthz", "eu-bank", key_id, "error:operator_only", 403),
                    ("GET /metrics", "eu-bank", key_id, "error:operator_only", 403),
                    ("GET /metrics", "?", "unauthenticated", "error:missing_api_key", 401),
                    ("GET /healthz", "?", "unauthenticated", "error:invalid_api_key", 401)], seen
    assert rows[0]["extra"]["answered"] == "the status only"


async def test_a_refused_operator_check_authenticates_its_caller_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: dict[str, FakeEngine]) -> None:
    """Before: a refusal authenticated the caller twice (Guard.operator, then Guard.principal for the record)."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    issued = ring.issue("eu-bank")
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"security": spec.security.model_copy(update={"metrics": "operator"})})
    gw = build_gateway(spec, fakes, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    kind = type(gw.guard.authenticator)
    authenticate, seen = kind.authenticate, []

    def counted(self: object, authorization: str | None) -> object:
        seen.append(authorization)
        return authenticate(self, authorization)  # type: ignore[arg-type]

    monkeypatch.setattr(kind, "authenticate", counted)
    tenant = f"Bearer {issued.api_key}"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            for path in ("/metrics", "/healthz"):
                seen.clear()
                r = await c.get(path, headers={"authorization": tenant})
                assert r.status_code == (403 if path == "/metrics" else 200), r.text
                assert seen == [tenant], (path, seen)
            seen.clear()
            assert (await c.get("/metrics")).status_code == 401 and seen == [None], seen
            seen.clear()  # two credentials: refused before any authentication, looked up once for the record
            r = await c.get("/metrics", headers=[("authorization", tenant), ("authorization", tenant)])
            assert r.status_code == 401 and seen == [tenant], seen
    finally:
        await gw.guard.stop()
    rows = [orjson.loads(r[0]) for r in sqlite3.connect(tmp_path / "audit.db").execute(
        "SELECT body FROM audit_records ORDER BY seq")]
    assert [(r["extra"]["route"], r["key_id"], r["extra"]["status"]) for r in rows] == [
        ("GET /metrics", issued.record.key_id, 403), ("GET /healthz", issued.record.key_id, 403),
        ("GET /metrics", "unauthenticated", 401), ("GET /metrics", issued.record.key_id, 401)], rows
