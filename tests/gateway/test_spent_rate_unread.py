"""A tenant past its requests per minute had each later request's body read, parsed, validated and its texts walked
before admission's 429 (thirty-eighth session, brief ATK9): on 127.0.0.1, a tenant of 2 requests a minute, spent,
posting 570 KB bodies from 8 clients (all 429) took another tenant's 60 KB chat requests from a median of 176 ms to
4.7 s. Once admission finds a requests-per-minute limit full, the caller's requests are refused before their body is
read until the window ends (Quotas.refuse_spent): here a body that is not JSON, answered 400 invalid_json before, is
the quota's 429 at once, on each door that reads a body."""

from __future__ import annotations

from pathlib import Path

import httpx

from aigrid.gateway.app import build_app
from aigrid.spec.models import QuotaSpec
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.metered_gateway import TENANT, metered_gateway

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}
DOORS = ("/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses", "/v1/responses/compact",
         "/v1/embeddings")
NOT_JSON = b'{"model": "smollm2-135m", "messages": ['


async def test_a_spent_requests_per_minute_refuses_before_the_body_is_read(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    gw = await metered_gateway(tmp_path, fakes, QuotaSpec(requests_per_min=1))
    json_type = {"content-type": "application/json"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            served = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)
            over = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)  # admission's 429: the body read
            unread = {door: await c.post(door, content=NOT_JSON, headers={**TENANT, **json_type}) for door in DOORS}
            other = await c.post("/v1/chat/completions", content=NOT_JSON,
                                 headers={"x-aigrid-tenant": "default", **json_type})
            gw.guard.quotas.clock = lambda: 1_800_000_090.0  # the next minute: read again
            later = await c.post("/v1/chat/completions", content=NOT_JSON, headers={**TENANT, **json_type})
        assert served.status_code == 200, served.text
        assert over.status_code == 429, over.text
        for door, r in unread.items():
            assert r.status_code == 429, (door, r.status_code, r.text)
            assert r.headers["retry-after"] == "30", (door, r.headers)
            assert "requests per minute" in r.text, (door, r.text)
        assert unread["/v1/chat/completions"].headers["x-ratelimit-remaining-requests"] == "0"
        assert unread["/v1/messages"].json()["type"] == "error"  # Anthropic's envelope, as admission's 429 there
        assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_json", other.text
        assert later.status_code == 400 and later.json()["error"]["code"] == "invalid_json", later.text
    finally:
        await gw.guard.stop()
