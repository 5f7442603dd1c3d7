"""Items a narrowed writer adds to a conversation stay where that writer may keep them, even when a response served
elsewhere binds the conversation between the writer's read of its binding and its append.

Until the thirty-fourth session (review RV2 of 414856ad) POST /v1/conversations/{id}/items read the binding (`head`)
and appended separately: a first response of another key binding the conversation to JP in between put the EU
writer's items in JP's store, with only a warning logged. Now the append carries the binding the writer read and
checked (`expect`), and the store refuses it, adding nothing, where the conversation is bound elsewhere; the writer
is then checked again against that binding. The store's check is ConversationStore.append, which the workers' hub and
a jurisdiction's Redis (inside its WATCH/MULTI transaction) run as they are."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.gateway import stores
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.conversation_store import ConversationStore, StoredConversation
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.security.redis_server import redis_server

SECRET = "write-race-secret-0123456789abcdef"
SECRET_TEXT = "EU-only secret 5678"
ITEM = {"items": [{"type": "message", "role": "user", "content": SECRET_TEXT}]}
STORED_IN = "x-aigrid-stored-jurisdiction"
TURN = [{"id": "msg_served_in_jp", "type": "message", "role": "assistant", "content": "served at nrt"}]


@pytest.fixture(params=["memory", "redis"])
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    """Keys enforced; tenant default's keys: one for every jurisdiction, one narrowed to the EU, one to EU and JP.
    Conversations in the gateway's memory, or in a Redis (EU and JP in db 0, unbound ones in db 1: a conversation
    moves when it is bound; its append runs in a WATCH/MULTI transaction)."""
    with contextlib.ExitStack() as stack:
        stores = {}
        if request.param == "redis":
            port = stack.enter_context(redis_server(tmp_path))
            stores = {"EU": f"redis://127.0.0.1:{port}/0", "JP": f"redis://127.0.0.1:{port}/0",
                      "unbound": f"redis://127.0.0.1:{port}/1"}
        async for out in _grid(tmp_path, monkeypatch, stores):
            yield out


async def _grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stores: dict[str, str]) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    scopes = {"whole": None, "eu": frozenset({"EU"}), "eu_jp": frozenset({"EU", "JP"})}
    keys = {name: ring.issue("default", None if j is None else Scopes(jurisdictions=j)).api_key
            for name, j in scopes.items()}
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"stores": stores})})
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(5), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            yield c, {name: {"authorization": f"Bearer {k}"} for name, k in keys.items()}
    finally:
        await gw.guard.stop()
        if gw.stores is not None:
            await gw.stores.aclose()


@pytest.mark.parametrize(("writer", "header", "status", "code"), [
    ("eu", {}, 403, "jurisdiction_not_allowed"),  # the EU key may not use a conversation bound to JP
    ("eu_jp", {"x-aigrid-residency": "EU"}, 400, "conversation_residency"),  # asked to stay in the EU
])
async def test_a_binding_between_the_writers_read_and_its_append_keeps_the_items_out(
        grid: Any, monkeypatch: pytest.MonkeyPatch, writer: str, header: dict[str, str], status: int,
        code: str) -> None:
    c, keys = grid
    made = await c.post("/v1/conversations", headers=keys["whole"], json={})
    assert made.status_code == 200 and STORED_IN not in made.headers, made.text
    cid = made.json()["id"]
    call = stores.Conversations.call
    raced: list[str] = []

    async def binds_first(self: stores.Conversations, op: str, arg: list[Any]) -> Any:
        """The writer's append (it binds the conversation to the EU) comes after a response served at nrt (JP)
        added its turn, binding the conversation to JP and moving it to JP's store: the race, made certain."""
        if op == "append" and arg[3] == "EU" and not raced:
            raced.append(cid)
            assert (await call(self, "append", [arg[0], cid, TURN, "JP"]))["jurisdiction"] == "JP"
        return await call(self, op, arg)

    monkeypatch.setattr(stores.Conversations, "call", binds_first)
    added = await c.post(f"/v1/conversations/{cid}/items", headers={**keys[writer], **header}, json=ITEM)
    assert raced == [cid]
    assert added.status_code == status and added.json()["error"]["code"] == code, added.text
    monkeypatch.setattr(stores.Conversations, "call", call)
    seen = await c.get(f"/v1/conversations/{cid}/items", headers=keys["whole"])
    assert seen.status_code == 200 and SECRET_TEXT not in seen.text, seen.text  # nothing of the writer's kept
    assert [i["id"] for i in seen.json()["data"]] == ["msg_served_in_jp"], seen.text
    assert (await c.get(f"/v1/conversations/{cid}", headers=keys["whole"])).headers.get(STORED_IN) == "JP"


def test_the_stores_append_refuses_a_writer_that_read_another_binding() -> None:
    """The wire form the workers' hub and a jurisdiction's Redis run: `expect` (the binding the writer read) that is
    not the conversation's refuses the append, adding nothing; without it (a served response's turn) as before."""
    store = ConversationStore()
    store.create(StoredConversation("conv_1", "t", 0, jurisdiction="JP"))
    item = {"type": "message", "role": "user", "content": "x"}
    assert store.apply("append", ["t", "conv_1", [item], "EU", 1_000_000, None]) == {"bound_elsewhere": "JP"}
    assert store.apply("append", ["t", "conv_1", [item], "EU", 1_000_000, "EU"]) == {"bound_elsewhere": "JP"}
    assert store.get("t", "conv_1").items == []  # type: ignore[union-attr]
    assert store.apply("append", ["t", "conv_1", [item], None, 1_000_000, "JP"])["jurisdiction"] == "JP"
    assert store.apply("append", ["t", "conv_1", [item], "EU"])["jurisdiction"] == "JP"  # a served turn: as before
    assert len(store.get("t", "conv_1").items) == 2  # type: ignore[union-attr]
