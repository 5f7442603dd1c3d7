"""`GET /v1/decisions` (the list) answers up to 1,000 of the caller's tenant's decisions, each read, its engines named
and written out as JSON on the event loop: about 2.7 MB and 60 ms a call at 1,000 decisions, 0.19 s with the
machine busy. It counted in no quota, so a tenant that had sent requests (its decisions kept) could repeat it without
end: on a live `aigrid up` (127.0.0.1, one worker, 1,000 decisions held), four clients looping on it took another
tenant's `GET /v1/models` from a median of 4.9 ms to 600 ms (p95 9.6 -> 1,010 ms). Such a read grows with what the
tenant's traffic stored, as a page of items or a file's content does: it counts as one request against requests per
minute (`routes.authenticate(..., heavy=True)`); one decision (`aigrid explain`) does not."""

from __future__ import annotations

from pathlib import Path

import httpx

from aigrid.gateway.app import build_app
from aigrid.spec.models import QuotaSpec
from tests.gateway.conftest import audit_rows
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.metered_gateway import TENANT, metered_gateway

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}


async def test_listing_decisions_counts_against_the_requests_per_minute(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    gw = await metered_gateway(tmp_path, fakes, QuotaSpec(requests_per_min=3))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            served = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)  # the 1st request
            assert served.status_code == 200, served.text
            decision = served.headers["x-aigrid-decision"]
            listed = [await c.get("/v1/decisions?limit=1000", headers=TENANT) for _ in range(2)]  # the 2nd and 3rd
            over = await c.get("/v1/decisions?limit=1000", headers=TENANT)
            one = await c.get(f"/v1/decisions/{decision}", headers=TENANT)  # `aigrid explain`: not counted
        assert [r.status_code for r in listed] == [200, 200], [r.text for r in listed]
        assert [d["id"] for d in listed[0].json()["data"]] == [decision]
        assert over.status_code == 429 and "retry-after" in over.headers, over.text
        assert "requests per minute" in over.json()["error"]["message"]
        assert one.status_code == 200 and one.json()["id"] == decision, one.text
        rows = await audit_rows(gw)
        assert [r["outcome"] for r in rows][-2:] == ["error:rate_limit_exceeded", "ok"]
    finally:
        await gw.guard.stop()


def test_the_api_document_says_the_list_may_be_a_429() -> None:
    """/openapi.json listed only the 400 for `GET /v1/decisions` (review RV5 of 9b0c8444): a client generated from it
    was not told the list is counted, nor either read that a 401 or the audit log's 503 may answer it."""
    from aigrid.gateway.openapi import openapi_document

    paths = openapi_document("test")["paths"]
    assert set(paths["/v1/decisions"]["get"]["responses"]) == {"200", "400", "401", "429", "503"}
    assert set(paths["/v1/decisions/{decision_id}"]["get"]["responses"]) == {"200", "401", "404", "503"}
