"""A key of an operator tenant narrowed to part of the grid (here the EU) is not the operator's: through the real HTTP
API it reads as its tenant's key (its tenant's decisions routed where it may be served, the part of the grid that may
serve it, no engine address), and the operators' reads (the dashboard's data, /metrics with `security.metrics:
operator`, /healthz's details) answer it the API's 403 `operator_only` naming the narrowing, each refusal audited.
Before (Guard.reader_of ignored the key's narrowing), it read every tenant's decisions, the US's included, the whole
grid with its engines' addresses, and the dashboard (docs/security.md, Access)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigrid.dashboard.routes import dashboard_routes
from aigrid.gateway.app import Gateway, build_app
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.load import load_spec
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import audit_rows, serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import SECRET, SPEC, enforced  # SPEC: fra-small (EU), iad-large (US)

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, str], dict[str, str], Gateway]]:
    """The gateway with the dashboard mounted as `aigrid up` and `aigrid gateway` mount it (operators=True:
    Guard.operator_of on its data routes), the keys by name and their key ids."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    issued = {"whole": ring.issue("default"), "ops": ring.issue("ops"),
              "ops-eu": ring.issue("ops", Scopes(jurisdictions=frozenset({"EU"})))}
    async with _operator_grid(tmp_path, {}, ring) as (client, gw):
        yield (client, {k: v.api_key for k, v in issued.items()}, {k: v.record.key_id for k, v in issued.items()}, gw)


@contextlib.asynccontextmanager
async def _operator_grid(tmp_path: Path, ops: dict[str, object], ring: KeyRing) -> AsyncIterator[
        tuple[httpx.AsyncClient, Gateway]]:
    """The spec's gateway with an operator tenant `ops` (its fields `ops` beside `operator: true`), keys from `ring`,
    /metrics for operators only and the dashboard mounted as `aigrid serve` mounts it (Guard.operator)."""
    spec = load_spec(SPEC)
    tenants = {**spec.tenants, "ops": TenantSpec.model_validate({"operator": True, **ops})}
    spec = enforced(spec, tenants, ring, tmp_path)
    spec = spec.model_copy(update={"security": spec.security.model_copy(update={"metrics": "operator"})})
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " says", " hi")) for e in spec.endpoints}
    async with serving(spec, fakes) as (_, gw):
        app = build_app(gw, extra_routes=dashboard_routes(gw, operators=True))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield client, gw


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_narrowed_operator_key_reads_as_its_tenants_key(grid) -> None:
    client, keys, _, _ = grid
    us = await client.post("/v1/chat/completions", json=CHAT, headers={**_auth(keys["whole"]), "x-aigrid-residency": "US"})
    eu = await client.post("/v1/chat/completions", json=CHAT, headers={**_auth(keys["whole"]), "x-aigrid-residency": "EU"})
    assert (us.status_code, eu.status_code) == (200, 200), (us.text, eu.text)
    us_id, eu_id = us.headers["x-aigrid-decision"], eu.headers["x-aigrid-decision"]
    # the whole operator key reads every tenant's decisions and the whole grid with its engines' addresses
    listed = (await client.get("/v1/decisions?limit=50", headers=_auth(keys["ops"]))).json()["data"]
    assert {us_id, eu_id} <= {d["id"] for d in listed}, listed
    assert (await client.get(f"/v1/decisions/{us_id}", headers=_auth(keys["ops"]))).status_code == 200
    whole = (await client.get("/v1/grid", headers=_auth(keys["ops"]))).json()["endpoints"]
    assert {e["id"] for e in whole} == {"fra-small", "iad-large"} and all("url" in e for e in whole), whole
    # narrowed to the EU: another tenant's decisions, in the US or in the EU, are not its
    r = await client.get(f"/v1/decisions/{us_id}", headers=_auth(keys["ops-eu"]))
    assert r.status_code == 404 and r.json()["error"]["param"] == "decision_id" and "iad" not in r.text, r.text
    assert (await client.get(f"/v1/decisions/{eu_id}", headers=_auth(keys["ops-eu"]))).status_code == 404
    listed = await client.get("/v1/decisions?limit=50", headers=_auth(keys["ops-eu"]))
    assert listed.status_code == 200 and listed.json()["data"] == [], listed.text
    # the grid it reads is the part that may serve it, without the engines' addresses
    part = (await client.get("/v1/grid", headers=_auth(keys["ops-eu"]))).json()
    assert [e["id"] for e in part["endpoints"]] == ["fra-small"] and "url" not in part["endpoints"][0], part
    assert set(part["sites"]) == {"fra"}, part["sites"]
    # its own request's decision, routed in the EU, it reads
    mine = await client.post("/v1/chat/completions", json=CHAT, headers=_auth(keys["ops-eu"]))
    assert mine.status_code == 200 and mine.headers["x-aigrid-site"] == "fra", mine.text
    own = await client.get(f"/v1/decisions/{mine.headers['x-aigrid-decision']}", headers=_auth(keys["ops-eu"]))
    assert own.status_code == 200, own.text


async def test_the_operators_reads_refuse_a_narrowed_operator_key_and_audit_it(grid) -> None:
    client, keys, key_ids, gw = grid
    for path in ("/dashboard/state", "/metrics"):
        assert (await client.get(path, headers=_auth(keys["ops"]))).status_code == 200, path
        r = await client.get(path, headers=_auth(keys["ops-eu"]))
        assert r.status_code == 403, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "operator_only" and error["type"] == "permission_error", (path, r.text)
        assert "is narrowed (jurisdictions=EU)" in error["message"] and key_ids["ops-eu"] in error["message"], r.text
    details = await client.get("/healthz", headers=_auth(keys["ops-eu"]))
    assert details.status_code == 200 and details.json() == {"status": "ok"}, details.text  # the status only
    assert "healthy" in (await client.get("/healthz", headers=_auth(keys["ops"]))).json()
    rows = [(row["extra"]["route"], row["key_id"], row["outcome"]) for row in await audit_rows(gw)
            if row["key_id"] == key_ids["ops-eu"]]
    assert rows == [("GET /dashboard/state", key_ids["ops-eu"], "error:operator_only"),
                    ("GET /metrics", key_ids["ops-eu"], "error:operator_only"),
                    ("GET /healthz", key_ids["ops-eu"], "error:operator_only")], rows


async def test_a_key_naming_its_operator_tenants_own_models_is_the_operators(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator tenant of `models: ['*']` and a key (or a token's `models` claim) of the same `['*']` narrows
    nothing: it reads as the operator. Before (review RV3 of d1507cf5), Scopes.narrowed_by's models_within, which
    keeps both sides' patterns, read as a narrowing (`models_within=['*']`): the operator's own key was refused the
    dashboard and /metrics and read its tenant's decisions only. A key naming fewer models is still narrowed."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    same = ring.issue("ops", Scopes(models=frozenset({"*"})))
    fewer = ring.issue("ops", Scopes(models=frozenset({"small-*"})))
    async with _operator_grid(tmp_path, {"models": ["*"]}, ring) as (client, gw):
        for path in ("/dashboard/state", "/metrics"):
            r = await client.get(path, headers=_auth(same.api_key))
            assert r.status_code == 200, (path, r.text)
            r = await client.get(path, headers=_auth(fewer.api_key))
            assert r.status_code == 403 and "is narrowed (models=small-*) and" in r.json()["error"]["message"], r.text


async def test_a_narrowing_of_models_within_reads_as_plain_text(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The 403 of an operator key narrowed by lists of model patterns (Scopes.models_within: a key record's or a
    token's) names them as plain text, `models within small-*, tiny-* and within small-a`. Before (thirty-second
    session), the message printed Python lists: `is narrowed (models_within=['small-*', 'tiny-*'],['small-a'])`."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    within = ring.issue("ops", Scopes(models_within=(frozenset({"tiny-*", "small-*"}), frozenset({"small-a"}))))
    async with _operator_grid(tmp_path, {"models": ["*"]}, ring) as (client, _):
        r = await client.get("/dashboard/state", headers=_auth(within.api_key))
        assert r.status_code == 403, r.text
        message = r.json()["error"]["message"]
        assert (f"key {within.record.key_id} of operator tenant 'ops' is narrowed (models within small-*, tiny-* and "
                "within small-a) and reads as its tenant's only") in message, message
