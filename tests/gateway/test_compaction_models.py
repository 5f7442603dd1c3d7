"""A compaction item stays with the keys whose models produced what it summarises (issue 12, ATK6).

A key narrowed to small-1b sent back a compaction item its tenant's unrestricted key had large-70b write: its summary
reached the small-1b engine and the request was answered (200), where the thirty-fifth session's rule (docs/security.md,
"narrowed") holds such a key to what its own models produced. Now a sealed summary keeps every grid model whose answers
it holds (the one that wrote it, the previous_response_id chain it summarised, the summaries it read:
`compaction.Summary.models`), and a key narrowed to models is refused (403 model_not_allowed naming the item) where one
of them may not serve it. A summary sealed before recorded its writer alone: it counts as any grid model's."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aigrid.gateway.app import Gateway
from aigrid.gateway.compaction import KEY_PURPOSE
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import SECRET, both_models_at_ashburn, enforced, narrowed_keys

ASHBURN = {"x-aigrid-client-location": "Ashburn", "x-aigrid-policy": "exact"}  # each model served as asked
SECRET_WORD = "SECRETSUMMARY"
DOORS = ("/v1/responses", "/v1/responses/compact", "/v1/responses/input_tokens")

Grid = tuple[httpx.AsyncClient, dict[str, dict[str, str]], Gateway, dict[str, FakeEngine]]


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Grid]:
    """Tenant default with an unrestricted key, one narrowed to small-1b, one to `auto` alone and one to the US, and
    tenant `smalls` of small-1b alone with its whole key; both models at Ashburn (a small-1b endpoint
    added) under a policy without family fallback; every engine writes SECRET_WORD after its own id."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    spec = both_models_at_ashburn()
    ring = KeyRing(SECRET.encode())
    issued = {**narrowed_keys(ring), "us": ring.issue("default", Scopes(jurisdictions=frozenset({"US"}))),
              "smalls": ring.issue("smalls")}
    spec = enforced(spec, {**spec.tenants, "smalls": TenantSpec(models=["small-1b"])}, ring, tmp_path)
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " wrote", f" {SECRET_WORD}")) for e in spec.endpoints}
    async with serving(spec, fakes) as (c, gw):
        yield (c, {name: {"authorization": f"Bearer {k.api_key}", **ASHBURN} for name, k in issued.items()}, gw,
               fakes)


async def _compacted(c: httpx.AsyncClient, key: dict[str, str], model: str, **body: Any) -> dict[str, Any]:
    """The compaction item of POST /v1/responses/compact."""
    r = await c.post("/v1/responses/compact", headers=key, json={"model": model, **body})
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == model, r.text
    return next(o for o in r.json()["output"] if o["type"] == "compaction")


async def _send(c: httpx.AsyncClient, keys: dict[str, dict[str, str]], name: str, item: dict[str, Any],
                door: str = DOORS[0], **more: Any) -> httpx.Response:
    """`item` then a user message, sent by the key `name` asking for small-1b (the key of `auto` alone: auto)."""
    model = "auto" if name == "auto" else "small-1b"
    return await c.post(door, headers=keys[name], json={"model": model, "max_output_tokens": 8, **more,
                                                 "input": [item, {"role": "user", "content": "repeat the summary"}]})


def _refused(r: httpx.Response, *names: str) -> None:
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("model_not_allowed", "input[0]"), err
    assert all(name in err["message"] for name in names), err
    assert SECRET_WORD not in r.text


def _engines_read(fakes: dict[str, FakeEngine]) -> list[str]:
    """The engines that were sent the secret summary."""
    return [name for name, f in fakes.items() if SECRET_WORD in str(f.received)]


async def test_a_key_narrowed_to_a_model_cannot_send_another_models_summary(grid: Grid) -> None:
    """ATK6's probe: large-70b's summary, sent by the small-1b key, reached the small-1b engine (200). Now each door
    that opens a compaction item refuses it before any engine is reached; keys that large-70b may serve use it."""
    c, keys, _, fakes = grid
    item = await _compacted(c, keys["full"], "large-70b", input="the plan: X")
    for f in fakes.values():
        f.received.clear()
    for door in DOORS:
        _refused(await _send(c, keys, "small", item, door), "large-70b")
    assert _engines_read(fakes) == []
    for name in ("full", "auto", "us"):
        assert (await _send(c, keys, name, item)).status_code == 200, name
    assert "iad-small" in _engines_read(fakes)  # those keys' requests: small-1b reads large-70b's summary
    own = await _compacted(c, keys["small"], "small-1b", input="my plan")  # what its own model wrote it uses
    assert (await _send(c, keys, "small", own)).status_code == 200


async def test_a_summary_keeps_every_model_of_the_chain_and_the_summaries_it_read(grid: Grid) -> None:
    """small-1b compacting a chain of a large-70b answer, or a large-70b summary, holds large-70b's answers: its item,
    and a stored answer that read such an item, are refused to the small-1b key (the summary recorded small-1b)."""
    c, keys, _, _ = grid
    first = await c.post("/v1/responses", headers=keys["full"], json={"model": "large-70b", "input": "large secret",
                                                                      "max_output_tokens": 8})
    second = await c.post("/v1/responses", headers=keys["full"], json={
        "model": "small-1b", "input": "go on", "max_output_tokens": 8, "previous_response_id": first.json()["id"]})
    assert second.status_code == 200, second.text
    of_chain = await _compacted(c, keys["full"], "small-1b", previous_response_id=second.json()["id"])
    _refused(await _send(c, keys, "small", of_chain), "large-70b")
    large = await _compacted(c, keys["full"], "large-70b", input="the plan: X")
    of_summary = await _compacted(c, keys["full"], "small-1b", input=[large, {"role": "user", "content": "more"}])
    _refused(await _send(c, keys, "small", of_summary), "large-70b")
    stored = await _send(c, keys, "full", large, store=True)
    assert stored.status_code == 200 and stored.json()["model"] == "small-1b", stored.text
    r = await c.get(f"/v1/responses/{stored.json()['id']}", headers=keys["small"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed", r.text
    assert (await _send(c, keys, "auto", of_summary)).status_code == 200


def _sealed_before(gw: Gateway, tenant: str, text: str, model: str) -> dict[str, Any]:
    """A compaction item as this gateway sealed it before the thirty-seventh session: no `models`, its writer alone."""
    nonce = os.urandom(12)
    data = orjson.dumps({"summary": text, "model": model, "jurisdiction": None, "created_at": 1_796_000_000})
    sealed = AESGCM(gw.guard.derived_key(KEY_PURPOSE)).encrypt(
        nonce, data, b"aigrid compaction v1\x00tenant\x00" + tenant.encode())
    return {"type": "compaction", "id": "cmp_old",
            "encrypted_content": "aigc1_" + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")}


async def test_a_summary_sealed_before_the_models_were_recorded_is_refused_to_a_key_narrowed_to_models(
        grid: Grid) -> None:
    """It names its writer only, not the chain it summarised: it counts as the answers of every model that may serve
    its tenant. A key narrowed to fewer is refused it (even one small-1b wrote), told to compact again; the tenant's
    other keys use it as before (those of a tenant of small-1b alone included), and a stored answer that read it
    counts as those models' too."""
    c, keys, gw, fakes = grid
    old = _sealed_before(gw, "default", f"earlier turns: {SECRET_WORD}", "small-1b")
    for door in DOORS:
        r = await _send(c, keys, "small", old, door)
        _refused(r, "compact the conversation again")
    assert _engines_read(fakes) == []
    for name in ("full", "auto", "us"):
        assert (await _send(c, keys, name, old)).status_code == 200, name
    stored = await _send(c, keys, "full", old, store=True)
    r = await c.get(f"/v1/responses/{stored.json()['id']}", headers=keys["small"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed", r.text
    own = _sealed_before(gw, "smalls", "earlier turns", "small-1b")
    assert (await _send(c, keys, "smalls", own)).status_code == 200
