"""The affinity map (which endpoint last served a prefix or a session: core.predict.warm_cache, the affinity
scorer) is kept per tenant (security/authorize.scope_request keys `prefix_hash` and `session` by the tenant):
one tenant's request is not steered by another's, and its decision's scores do not tell whether another tenant
recently sent the same system prompt or used a session id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigrid.gateway.app import Gateway
from aigrid.security.keys import KeyRing
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

SECRET = "test-secret-0123456789abcdef"
SYSTEM = "You are the claims assistant of Example Insurance. " * 60  # a long prefix: its cache saves much


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               fakes: dict[str, FakeEngine]) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, dict[str, str]]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    keys = {"victim": ring.issue("victim").api_key, "prober": ring.issue("prober").api_key,
            "victim-2": ring.issue("victim").api_key}
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "victim": TenantSpec(), "prober": TenantSpec()}})
    async with serving(spec, fakes, seed=3) as (c, gw):
        yield c, gw, keys


async def _ask(c: httpx.AsyncClient, key: str, **headers: str) -> tuple[str, dict]:
    r = await c.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}", **headers},
                     json={"model": "smollm2-135m", "max_tokens": 4, "messages": [
                         {"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    d = (await c.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}", headers={"authorization": f"Bearer {key}"}))
    assert d.status_code == 200, d.text
    return r.headers["x-aigrid-endpoint"], d.json()


def _affinity(decision: dict) -> dict[str, float]:
    return {c["endpoint"]: c["scores"]["affinity"] for c in decision["candidates"]}


@pytest.mark.parametrize("session", [None, "victim-session-7"])
async def test_another_tenants_prefix_or_session_neither_steers_nor_shows(grid, session: str | None) -> None:
    c, _, keys = grid
    headers = {"x-aigrid-session": session} if session else {}
    served, _ = await _ask(c, keys["victim"], **headers)
    _, probe = await _ask(c, keys["prober"], **headers)
    scores = _affinity(probe)
    # before: the victim's endpoint scored warm for the prober (its cache holds the victim's prefix)
    assert len(set(scores.values())) == 1, scores
    _, again = await _ask(c, keys["victim-2"], **headers)  # the tenant's own traffic still finds its warm engine
    mine = _affinity(again)
    assert mine[served] > min(mine.values()), mine
