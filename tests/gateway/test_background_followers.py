"""Who may read the event log of a background response, cancel or delete it before its answer is stored
(responses_api._may_follow): a caller narrowed to jurisdictions, when it may use every jurisdiction the response's
creator might. That was decided by key id: a token of the same `sub` was the creator whatever its claims, so a
token narrowed to the EU cancelled (and read the log of) a run its unrestricted twin started, whose answer may be
served anywhere. The placeholder now keeps its creator's scopes (Pending.scopes) and they are compared."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from aigrid.gateway.app import Gateway
from aigrid.spec.models import JwtSpec
from tests.gateway.background_grid import Stalling
from tests.gateway.conftest import serving, spec_in

SECRET = "followers-secret-0123456789abcdef"
JWT_SECRET = "j" * 32


def _token(**claims: Any) -> dict[str, str]:
    base = {"iss": "idp", "aud": "aigrid", "sub": "alice", "tenant": "default", "exp": int(time.time()) + 600}
    return {"authorization": "Bearer " + jwt.encode({**base, **claims}, JWT_SECRET, algorithm="HS256")}


@pytest.fixture
async def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """Keys enforced with tokens; every engine holds its answer until its gate opens."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
    spec = spec_in(tmp_path, enforce=True, jwt=JwtSpec(issuer="idp", audience="aigrid", secret_env="JWT_SECRET"))
    engines = {e.id: Stalling(e.id) for e in spec.endpoints}
    for e in engines.values():
        e.gate.clear()
    async with serving(spec, engines, seed=5) as (c, gw):
        try:
            yield c, gw
        finally:  # before the guard stops
            for e in engines.values():
                e.gate.set()


async def _create(c: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await c.post("/v1/responses", headers=headers, json={"model": "smollm2-135m", "input": "hi",
                                                             "background": True, "max_output_tokens": 8})
    assert r.status_code == 200 and r.json()["status"] in ("queued", "in_progress"), r.text
    return str(r.json()["id"])


async def test_a_token_of_the_same_sub_narrowed_to_the_eu_may_not_cancel_its_twins_run(held) -> None:
    c, _ = held
    rid = await _create(c, _token())  # every jurisdiction: its answer may be served in the US
    r = await c.post(f"/v1/responses/{rid}/cancel", headers=_token(jurisdictions=["EU"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "jurisdiction_not_allowed", r.text
    r = await c.delete(f"/v1/responses/{rid}", headers=_token(jurisdictions=["EU"]))
    assert r.status_code == 403, r.text
    r = await c.post(f"/v1/responses/{rid}/cancel", headers=_token())
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text


async def test_a_caller_that_may_use_every_jurisdiction_the_creator_might_follows_it(held) -> None:
    """The creator narrowed to the EU: a token of another sub, or of the same one, allowed the EU and the US, and the
    creator itself, may cancel it (its answer may be served in the EU only)."""
    c, _ = held
    for reader in (_token(sub="bob", jurisdictions=["EU", "US"]), _token(jurisdictions=["EU"])):
        rid = await _create(c, _token(jurisdictions=["EU"]))
        r = await c.post(f"/v1/responses/{rid}/cancel", headers=reader)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    rid = await _create(c, _token(jurisdictions=["EU"]))
    r = await c.post(f"/v1/responses/{rid}/cancel", headers=_token(sub="bob", jurisdictions=["US"]))
    assert r.status_code == 403, r.text
