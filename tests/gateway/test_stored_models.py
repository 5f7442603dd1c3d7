"""Stored responses stay with the keys whose models produced them (issue 12, ATK3 item 1).

A key narrowed to some models (`aigrid keys create T --model small-1b`) is served by those models only (a key only
narrows its tenant: docs/security.md); but it read, paged, cancelled and deleted its tenant's stored responses of any
other model (GET and DELETE /v1/responses/{id}, its input items, cancel) and continued them (`previous_response_id`),
reading what another key had large-70b answer. Now each stored response keeps the grid models whose answers it and its
chain hold, and such a key is refused (403 model_not_allowed naming the id) where one of them may not serve it
(conversations_api.check_produced_by, beside the jurisdiction's check_stored_in); the answers of its own models it
reads as before, and a key that may ask for `auto` alone may be served by any model, so reads any."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.gateway.app import Gateway
from aigrid.gateway.event_log import event
from aigrid.gateway.response_store import Pending
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import SECRET, both_models_at_ashburn, enforced, narrowed_keys

ASHBURN = {"x-aigrid-client-location": "Ashburn", "x-aigrid-policy": "exact"}  # each model served as asked


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, dict[str, str]], Gateway]]:
    """Tenant default with an unrestricted key, one narrowed to small-1b and one to `auto` alone; both models at
    Ashburn (a small-1b endpoint added), where every request comes from (a chain stays in one jurisdiction), under a
    policy without family fallback."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    spec = both_models_at_ashburn()
    ring = KeyRing(SECRET.encode())
    issued = narrowed_keys(ring)
    spec = enforced(spec, dict(spec.tenants), ring, tmp_path)
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " says", " hi")) for e in spec.endpoints}
    async with serving(spec, fakes) as (c, gw):
        yield c, {name: {"authorization": f"Bearer {k.api_key}", **ASHBURN} for name, k in issued.items()}, gw


async def _stored(c: httpx.AsyncClient, key: dict[str, str], model: str, text: str, **more: Any) -> str:
    r = await c.post("/v1/responses", headers=key, json={"model": model, "input": text, "store": True,
                                                         "max_output_tokens": 8, **more})
    assert r.status_code == 200 and r.json()["model"] == model, r.text
    return str(r.json()["id"])


def _refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("model_not_allowed", param), err
    assert "large secret" not in r.text


async def test_a_key_narrowed_to_a_model_cannot_touch_another_models_stored_response(grid: Any) -> None:
    c, keys, _ = grid
    rid = await _stored(c, keys["full"], "large-70b", "large secret")
    for method, path in (("GET", f"/v1/responses/{rid}"), ("GET", f"/v1/responses/{rid}/input_items"),
                         ("POST", f"/v1/responses/{rid}/cancel"), ("DELETE", f"/v1/responses/{rid}")):
        _refused(await c.request(method, path, headers=keys["small"]), "response_id")
    r = await c.post("/v1/responses", headers=keys["small"], json={"model": "small-1b", "input": "go on",
                                                                    "previous_response_id": rid})
    _refused(r, "previous_response_id")
    assert (await c.get(f"/v1/responses/{rid}", headers=keys["full"])).status_code == 200  # still there
    assert (await c.get(f"/v1/responses/{rid}", headers=keys["auto"])).status_code == 200  # any model may serve it


async def test_a_chain_holding_another_models_answers_is_refused_too(grid: Any) -> None:
    """A small-1b answer that continued a large-70b one holds that answer in its history: it is refused as it is."""
    c, keys, _ = grid
    first = await _stored(c, keys["full"], "large-70b", "large secret")
    own = await _stored(c, keys["small"], "small-1b", "mine")
    assert (await c.get(f"/v1/responses/{own}", headers=keys["small"])).status_code == 200  # its own model's
    assert (await c.get(f"/v1/responses/{own}/input_items", headers=keys["small"])).status_code == 200
    chained = await _stored(c, keys["full"], "small-1b", "go on", previous_response_id=first)
    _refused(await c.get(f"/v1/responses/{chained}", headers=keys["small"]), "response_id")
    r = await c.post("/v1/responses", headers=keys["small"], json={"model": "small-1b", "input": "and on",
                                                                    "previous_response_id": chained})
    _refused(r, "previous_response_id")
    assert (await c.delete(f"/v1/responses/{own}", headers=keys["small"])).status_code == 200


async def test_an_automatically_compacted_chain_keeps_the_models_its_summary_read(grid: Any) -> None:
    """A continuation compacted first (`context_management`) stores its summary of the chain, not the chain: the
    large-70b answer summarised is in it, so a key narrowed to small-1b may not read or continue it either (until
    review RV2 of the thirty-fifth session its record kept only its own model's)."""
    c, keys, _ = grid
    first = await _stored(c, keys["full"], "large-70b", "large secret")
    compacted = await _stored(c, keys["full"], "small-1b", "go on", previous_response_id=first,
                              context_management=[{"type": "compaction", "compact_threshold": 1}])
    assert (await c.get(f"/v1/responses/{compacted}", headers=keys["full"])).json()["output"][0]["type"] == "compaction"
    _refused(await c.get(f"/v1/responses/{compacted}", headers=keys["small"]), "response_id")
    r = await c.post("/v1/responses", headers=keys["small"], json={"model": "small-1b", "input": "and on",
                                                                    "previous_response_id": compacted})
    _refused(r, "previous_response_id")
    assert (await c.get(f"/v1/responses/{compacted}", headers=keys["auto"])).status_code == 200

async def test_a_conversation_holding_another_models_answers_is_refused(grid: Any) -> None:
    """Each response served in a conversation adds its model to it; a key narrowed to other models is refused on
    every Conversations route and in a response naming it; one holding only its own models' answers it uses."""
    c, keys, _ = grid
    cid = (await c.post("/v1/conversations", headers=keys["full"], json={})).json()["id"]
    await _stored(c, keys["full"], "large-70b", "large secret", conversation=cid)
    item = (await c.get(f"/v1/conversations/{cid}/items", headers=keys["full"])).json()["data"][0]["id"]
    for method, path, body in (("GET", f"/v1/conversations/{cid}", None), ("GET", f"/v1/conversations/{cid}/items", None),
                               ("GET", f"/v1/conversations/{cid}/items/{item}", None),
                               ("POST", f"/v1/conversations/{cid}", {"metadata": {"k": "v"}}),
                               ("POST", f"/v1/conversations/{cid}/items",
                                {"items": [{"type": "message", "role": "user", "content": "hi"}]}),
                               ("DELETE", f"/v1/conversations/{cid}/items/{item}", None),
                               ("DELETE", f"/v1/conversations/{cid}", None)):
        _refused(await c.request(method, path, headers=keys["small"], json=body), "conversation_id")
    r = await c.post("/v1/responses", headers=keys["small"], json={"model": "small-1b", "input": "go on",
                                                                    "conversation": cid})
    _refused(r, "conversation")
    assert (await c.get(f"/v1/conversations/{cid}/items", headers=keys["auto"])).status_code == 200
    mine = (await c.post("/v1/conversations", headers=keys["small"], json={})).json()["id"]
    await _stored(c, keys["small"], "small-1b", "mine", conversation=mine)
    assert (await c.get(f"/v1/conversations/{mine}/items", headers=keys["small"])).status_code == 200


async def test_a_background_response_of_a_creator_of_other_models_is_not_followed_cancelled_or_deleted(
        grid: Any) -> None:
    """Before its answer is stored, a background response's models are those that may serve its creator (kept with
    its placeholder): a key narrowed to small-1b may not follow, cancel or delete one a large-70b key made."""
    c, keys, gw = grid
    running, ended = "resp_large_running", "resp_large_ended"
    creator = Scopes(models=frozenset({"large-70b"})).to_dict()
    for rid in (running, ended):
        gw.responses.add_pending(Pending(rid, "default", "large-70b", 0, "in_progress", key_id="k", scopes=creator))
    gw.responses.mark("default", ended, "failed", {"code": "server_error", "message": "engine gone"})
    gw.responses.events.append("default", ended, 0, [event("response.output_text.delta", 0, delta="large secret"),
                                                     event("response.failed", 1, response={"id": ended})], True)
    _refused(await c.get(f"/v1/responses/{ended}?stream=true", headers=keys["small"]), "response_id")
    _refused(await c.post(f"/v1/responses/{running}/cancel", headers=keys["small"]), "response_id")
    _refused(await c.delete(f"/v1/responses/{ended}", headers=keys["small"]), "response_id")
    r = await c.get(f"/v1/responses/{ended}?stream=true", headers=keys["full"])
    assert r.status_code == 200 and "large secret" in r.text, r.text
