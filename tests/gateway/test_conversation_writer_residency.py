"""What a key narrowed to some jurisdictions (or a request asking to stay in some, x-aigrid-residency) writes into a
conversation not yet bound stays where that key may be served.

Until the thirty-fourth session such a write left the conversation unbound: a key of tenant default narrowed to the
EU added "EU-only secret" as an item, its tenant's unrestricted key then answered a response in the conversation from
Tokyo, and the EU key's text went to the engine at nrt (JP), which bound the conversation there and locked the EU key
out of its own items (403 jurisdiction_not_allowed). Now the write binds the conversation to the one jurisdiction the
writer keeps its data in, or is the client's 400 `conversation_residency` naming x-aigrid-residency where it may keep
it in several and names none; a writer that may use every jurisdiction and asks for none leaves it unbound, as
before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.residency_grid import reached, residency_grid

MODEL = "smollm2-135m"
SECRET = "writer-residency-secret-0123456789"
SCOPES = {"whole": None, "eu": frozenset({"EU"}), "eu_jp": frozenset({"EU", "JP"})}
SECRET_TEXT = "EU-only secret 1234"
ITEM = {"items": [{"type": "message", "role": "user", "content": SECRET_TEXT}]}
STORED_IN = "x-aigrid-stored-jurisdiction"


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, dict[str, str]], dict[str, FakeEngine]]]:
    """Keys enforced; tenant default's keys: one for every jurisdiction, one narrowed to the EU, one to EU and JP."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    keys = {name: ring.issue("default", None if j is None else Scopes(jurisdictions=j)).api_key
            for name, j in SCOPES.items()}
    keys["two"] = ring.issue("two").api_key  # a key of a tenant that may use EU and JP, no narrower than it
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "two": TenantSpec(allowed_jurisdictions=["EU", "JP"])}})
    async with residency_grid(spec, keys) as grid:
        yield grid


async def _unbound(c: httpx.AsyncClient, headers: dict[str, str]) -> str:
    made = await c.post("/v1/conversations", headers=headers, json={})
    assert made.status_code == 200 and STORED_IN not in made.headers, made.text
    return str(made.json()["id"])


async def test_an_eu_keys_items_bind_the_conversation_to_the_eu(grid: Any) -> None:
    c, keys, engines = grid
    cid = await _unbound(c, keys["whole"])
    added = await c.post(f"/v1/conversations/{cid}/items", headers=keys["eu"], json=ITEM)
    assert added.status_code == 200, added.text
    assert (await c.get(f"/v1/conversations/{cid}", headers=keys["eu"])).headers.get(STORED_IN) == "EU"
    # the tenant's unrestricted key, asking from Tokyo: served in the EU, where the EU key's text may go
    r = await c.post("/v1/responses", headers={**keys["whole"], "x-aigrid-client-location": "Tokyo"},
                     json={"model": MODEL, "input": "summarize", "conversation": cid})
    assert r.status_code == 200 and r.headers["x-aigrid-jurisdiction"] == "EU", r.text
    assert reached(engines, SECRET_TEXT) == {"fra-smollm2"}
    assert (await c.get(f"/v1/conversations/{cid}/items", headers=keys["eu"])).status_code == 200


async def test_a_writer_kept_to_several_jurisdictions_names_one(grid: Any) -> None:
    c, keys, engines = grid
    for create in (False, True):  # items added to an unbound conversation, and a conversation created with them
        cid = await _unbound(c, keys["whole"])
        r = await (c.post("/v1/conversations", headers=keys["eu_jp"], json=ITEM) if create else
                   c.post(f"/v1/conversations/{cid}/items", headers=keys["eu_jp"], json=ITEM))
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("conversation_residency", "x-aigrid-residency"), err
        assert "EU, JP" in err["message"]
    # naming one binds it there; a request of the unrestricted key asking for the EU binds it too
    for who in ("eu_jp", "whole"):
        cid = await _unbound(c, keys["whole"])
        added = await c.post(f"/v1/conversations/{cid}/items", headers={**keys[who], "x-aigrid-residency": "EU"},
                             json=ITEM)
        assert added.status_code == 200, added.text
        assert (await c.get(f"/v1/conversations/{cid}", headers=keys["whole"])).headers.get(STORED_IN) == "EU"
    made = await c.post("/v1/conversations", headers={**keys["eu_jp"], "x-aigrid-residency": "JP"}, json=ITEM)
    assert made.status_code == 200 and made.headers.get(STORED_IN) == "JP", made.text
    assert reached(engines, SECRET_TEXT) == set()


async def test_a_writer_no_narrower_than_its_tenant_leaves_the_conversation_unbound(grid: Any) -> None:
    """A key that may use every jurisdiction, or all its tenant's (tenant `two`: EU and JP), asking for none: every
    response of the tenant binds the conversation where the writer may read it, as before."""
    c, keys, _ = grid
    cid = await _unbound(c, keys["two"])
    added = await c.post(f"/v1/conversations/{cid}/items", headers=keys["two"], json=ITEM)
    assert added.status_code == 200, added.text
    assert STORED_IN not in (await c.get(f"/v1/conversations/{cid}", headers=keys["two"])).headers
    cid = await _unbound(c, keys["whole"])
    added = await c.post(f"/v1/conversations/{cid}/items", headers=keys["whole"], json=ITEM)
    assert added.status_code == 200, added.text
    assert STORED_IN not in (await c.get(f"/v1/conversations/{cid}", headers=keys["whole"])).headers
    made = await c.post("/v1/conversations", headers=keys["whole"], json=ITEM)
    assert made.status_code == 200 and STORED_IN not in made.headers, made.text


async def test_a_writers_residency_is_read_as_the_model_doors_read_it(grid: Any) -> None:
    """Review RV2 of 414856ad: `eu, Mars` (one no site is in beside one that is), which the chat door serves in the
    EU (tests/gateway/test_errors.py), was a 400 on a write into an unbound conversation, and `,` (naming none) a
    400 saying the items "may be kept only in : name the one". Now the first binds it to the EU; the second is the
    chat door's 400."""
    c, keys, _ = grid
    cid = await _unbound(c, keys["whole"])
    added = await c.post(f"/v1/conversations/{cid}/items", headers={**keys["whole"], "x-aigrid-residency": "eu, Mars"},
                         json=ITEM)
    assert added.status_code == 200, added.text
    assert (await c.get(f"/v1/conversations/{cid}", headers=keys["whole"])).headers.get(STORED_IN) == "EU"
    made = await c.post("/v1/conversations", headers={**keys["whole"], "x-aigrid-residency": "eu, Mars"}, json=ITEM)
    assert made.status_code == 200 and made.headers.get(STORED_IN) == "EU", made.text
    for create in (False, True):
        cid = await _unbound(c, keys["whole"])
        r = await (c.post("/v1/conversations", headers={**keys["whole"], "x-aigrid-residency": ","}, json=ITEM)
                   if create else c.post(f"/v1/conversations/{cid}/items",
                                         headers={**keys["whole"], "x-aigrid-residency": ","}, json=ITEM))
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "x-aigrid-residency" and "names (none)" in err["message"], err


async def test_a_writer_kept_to_every_site_of_the_grid_leaves_the_conversation_unbound(grid: Any) -> None:
    """Review RV2 of 97f63f76: a key of a tenant of every jurisdiction naming every jurisdiction of the grid (BR, EU,
    JP, US) is kept no narrower than its tenant (no response can be served elsewhere), yet its write was the 400
    asking it to name one."""
    c, keys, _ = grid
    cid = await _unbound(c, keys["whole"])
    added = await c.post(f"/v1/conversations/{cid}/items",
                         headers={**keys["whole"], "x-aigrid-residency": "BR, EU, JP, US"}, json=ITEM)
    assert added.status_code == 200, added.text
    assert STORED_IN not in (await c.get(f"/v1/conversations/{cid}", headers=keys["whole"])).headers
