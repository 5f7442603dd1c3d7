"""Stored responses and conversations stay with the keys and requests that may use their jurisdiction.

A response is stored, and a conversation bound, in one jurisdiction. A key of the same tenant narrowed to other
jurisdictions (or a tenant whose jurisdictions no longer include it) could read, page, change and delete them
through GET/DELETE /v1/responses/{id}, its input items and every Conversations route, although it could not
continue them (403 jurisdiction_not_allowed); and a request asking to stay in one jurisdiction
(x-aigrid-residency) added its items to a conversation bound to another. Now: 403 jurisdiction_not_allowed
naming the id for such a key on every route, and 400 conversation_residency for such a write."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.event_log import event
from aigrid.gateway.response_store import Pending
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
SECRET = "stored-residency-secret-0123456789"
FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}


async def enforcing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *only: str | None) -> tuple[Gateway, list[Any]]:
    """A started gateway with keys enforced, and one key of tenant default per entry of `only`: narrowed to that
    jurisdiction, or (None) for every one (its guard to be stopped by the caller)."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    keys = [ring.issue("default", None if j is None else Scopes(jurisdictions=frozenset({j}))) for j in only]
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(5), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    return gw, keys


@pytest.fixture
async def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    """Keys enforced; tenant default with a key for every jurisdiction and one narrowed to the US."""
    gw, (full, us) = await enforcing(tmp_path, monkeypatch, None, "US")
    keys = {name: {"authorization": f"Bearer {k.api_key}", **FRANKFURT} for name, k in (("full", full), ("us", us))}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            yield c, keys
    finally:
        await gw.guard.stop()


def refused(r: httpx.Response, status: int, code: str, param: str) -> None:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param), err


async def test_a_key_outside_a_stored_responses_jurisdiction_cannot_read_or_delete_it(keyed: Any) -> None:
    c, keys = keyed
    made = await c.post("/v1/responses", headers=keys["full"], json={"model": MODEL, "input": "EU secret", "store": True})
    assert made.status_code == 200 and made.headers["x-aigrid-jurisdiction"] == "EU", made.text
    rid = made.json()["id"]
    for method, path in (("GET", f"/v1/responses/{rid}"), ("GET", f"/v1/responses/{rid}/input_items"),
                         ("POST", f"/v1/responses/{rid}/cancel"), ("DELETE", f"/v1/responses/{rid}")):
        r = await c.request(method, path, headers=keys["us"])
        refused(r, 403, "jurisdiction_not_allowed", "response_id")
        assert "EU secret" not in r.text
    r = await c.post("/v1/responses", headers=keys["us"], json={"model": MODEL, "input": "go on",
                                                                 "previous_response_id": rid})
    refused(r, 403, "jurisdiction_not_allowed", "previous_response_id")
    assert (await c.get(f"/v1/responses/{rid}", headers=keys["full"])).status_code == 200  # still there


async def test_a_key_outside_a_conversations_jurisdiction_cannot_touch_it(keyed: Any) -> None:
    c, keys = keyed
    made = await c.post("/v1/conversations", headers={**keys["full"], "x-aigrid-residency": "EU"},
                        json={"items": [{"type": "message", "role": "user", "content": "EU secret"}]})
    cid = made.json()["id"]
    item = (await c.get(f"/v1/conversations/{cid}/items", headers=keys["full"])).json()["data"][0]["id"]
    new_items = {"items": [{"type": "message", "role": "user", "content": "x"}]}
    for method, path, body in (("GET", f"/v1/conversations/{cid}", None),
                               ("POST", f"/v1/conversations/{cid}", {"metadata": {"k": "v"}}),
                               ("GET", f"/v1/conversations/{cid}/items", None),
                               ("POST", f"/v1/conversations/{cid}/items", new_items),
                               ("GET", f"/v1/conversations/{cid}/items/{item}", None),
                               ("DELETE", f"/v1/conversations/{cid}/items/{item}", None),
                               ("DELETE", f"/v1/conversations/{cid}", None)):
        r = await c.request(method, path, headers=keys["us"], json=body)
        refused(r, 403, "jurisdiction_not_allowed", "conversation_id")
        assert "EU secret" not in r.text
    r = await c.post("/v1/responses", headers=keys["us"], json={"model": MODEL, "input": "go on", "conversation": cid})
    refused(r, 403, "jurisdiction_not_allowed", "conversation")
    items = (await c.get(f"/v1/conversations/{cid}/items", headers=keys["full"])).json()["data"]
    assert [i["content"][0]["text"] for i in items] == ["EU secret"]  # untouched


async def test_a_request_that_must_stay_elsewhere_adds_nothing_to_a_bound_conversation(keyed: Any) -> None:
    c, keys = keyed
    cid = (await c.post("/v1/conversations", headers={**keys["full"], "x-aigrid-residency": "EU"}, json={})).json()["id"]
    us_only = {**keys["full"], "x-aigrid-residency": "US"}
    r = await c.post(f"/v1/conversations/{cid}/items", headers=us_only,
                     json={"items": [{"type": "message", "role": "user", "content": "must stay in the US"}]})
    refused(r, 400, "conversation_residency", "conversation_id")
    refused(await c.post(f"/v1/conversations/{cid}", headers=us_only, json={"metadata": {"k": "US data"}}),
            400, "conversation_residency", "conversation_id")
    assert (await c.get(f"/v1/conversations/{cid}/items", headers=keys["full"])).json()["data"] == []
    assert (await c.get(f"/v1/conversations/{cid}", headers=keys["full"])).json()["metadata"] == {}
    # reading it, or writing with the residency it is bound to, is served
    assert (await c.get(f"/v1/conversations/{cid}", headers=us_only)).status_code == 200
    ok = await c.post(f"/v1/conversations/{cid}/items", headers={**keys["full"], "x-aigrid-residency": "EU"},
                      json={"items": [{"type": "message", "role": "user", "content": "hi"}]})
    assert ok.status_code == 200, ok.text


async def test_a_key_outside_a_background_responses_jurisdiction_cannot_follow_its_event_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed background response's event log holds its answer's text before it is stored (and after a run
    that ended without storing one). A key narrowed to the US followed the log of one its tenant's EU-only key
    created (GET ?stream=true reads a placeholder, which holds no content, so no jurisdiction was checked): 403
    jurisdiction_not_allowed now, as for the stored answer; its creator's key, and one that may use every
    jurisdiction its creator's may, still follow it."""
    gw, (full, eu, us) = await enforcing(tmp_path, monkeypatch, None, "EU", "US")
    rid = "resp_eu_running"
    gw.responses.add_pending(Pending(rid, "default", MODEL, 0, "in_progress", key_id=eu.record.key_id))
    gw.responses.mark("default", rid, "failed", {"code": "server_error", "message": "engine gone"})  # the log stays
    gw.responses.events.append("default", rid, 0, [event("response.output_text.delta", 0, delta="EU secret"),
                                                   event("response.failed", 1, response={"id": rid})], True)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.get(f"/v1/responses/{rid}?stream=true", headers={"authorization": f"Bearer {us.api_key}"})
            refused(r, 403, "jurisdiction_not_allowed", "response_id")
            assert "EU secret" not in r.text
            for key in (eu, full):
                r = await c.get(f"/v1/responses/{rid}?stream=true", headers={"authorization": f"Bearer {key.api_key}"})
                assert r.status_code == 200 and "EU secret" in r.text, r.text
    finally:
        await gw.guard.stop()


async def test_a_key_outside_a_background_responses_jurisdiction_cannot_cancel_or_delete_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key narrowed to the US could cancel a background response its tenant's EU-only key was running, and delete
    it (with its event log) once ended, while the same key is refused both on the stored answer: the placeholder
    holds no content, so no jurisdiction was checked. 403 jurisdiction_not_allowed now, by the rule that keeps the
    event log (its creator's key, or a key that may use every jurisdiction that key may); a poll of the
    placeholder (no content) is still answered; the creator's key cancels and deletes it."""
    gw, (eu, us) = await enforcing(tmp_path, monkeypatch, "EU", "US")
    running, ended = "resp_eu_running", "resp_eu_ended"
    for rid in (running, ended):
        gw.responses.add_pending(Pending(rid, "default", MODEL, 0, "in_progress", key_id=eu.record.key_id))
    gw.responses.mark("default", ended, "failed", {"code": "server_error", "message": "engine gone"})
    gw.responses.events.append("default", ended, 0, [event("response.output_text.delta", 0, delta="EU secret"),
                                                     event("response.failed", 1, response={"id": ended})], True)
    as_us, as_eu = ({"authorization": f"Bearer {k.api_key}"} for k in (us, eu))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            refused(await c.post(f"/v1/responses/{running}/cancel", headers=as_us), 403, "jurisdiction_not_allowed",
                    "response_id")
            refused(await c.delete(f"/v1/responses/{ended}", headers=as_us), 403, "jurisdiction_not_allowed",
                    "response_id")
            assert (await c.get(f"/v1/responses/{running}", headers=as_us)).json()["status"] == "in_progress"
            assert gw.responses.events.read("default", ended, -1) is not None  # the log is still there
            assert (await c.post(f"/v1/responses/{running}/cancel", headers=as_eu)).json()["status"] == "cancelled"
            assert (await c.delete(f"/v1/responses/{ended}", headers=as_eu)).json()["deleted"] is True
    finally:
        await gw.guard.stop()
