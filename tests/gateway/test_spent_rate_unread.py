"""A tenant past its requests per minute had each later request's body read, parsed, validated and its texts walked
before admission's 429 (thirty-eighth session, brief ATK9): on 127.0.0.1, a tenant of 2 requests a minute, spent,
posting 570 KB bodies from 8 clients (all 429) took another tenant's 60 KB chat requests from a median of 382 ms to
5.9 s (one run on a loaded host: docs/security.md). Once admission finds a requests-per-minute limit full, the
caller's requests are refused before their body is read until the window ends (Quotas.refuse_spent): here a body that is not JSON, answered 400 invalid_json before, is
the quota's 429 at once, on each door that reads a body."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import httpx

from aigrid.gateway.app import build_app
from aigrid.security.quotas import QuotaLimits
from aigrid.spec.models import QuotaSpec
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.metered_gateway import TENANT, metered_gateway
from tests.gateway.socket_grid import TENANT as SOCKET_TENANT
from tests.gateway.socket_grid import served

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


def _answers(s: socket.socket, until: bytes) -> bytes:
    """What the server sent on `s` up to and with `until` (or whatever came before it closed or 10 s passed)."""
    got = b""
    s.settimeout(10)
    while until not in got:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


def test_the_unread_body_is_drained_and_the_connection_serves_the_next_request(tmp_path: Path) -> None:
    """(review RV4) The 429 is sent before the body arrives; the body sent after it is skipped as the request's body,
    never read as a request of its own (here it ends with one: a GET of /livez), and the client's next request on
    the same keep-alive connection is answered: with a Content-Length, and chunked."""
    with served(tmp_path) as grid:
        quotas = grid.gw.guard.quotas
        quotas.rules = replace(quotas.rules, tenants={**quotas.rules.tenants,
                                                      "metered": QuotaLimits(requests_per_min=1)})
        with httpx.Client(base_url=f"http://127.0.0.1:{grid.port}") as c:
            assert c.post("/v1/chat/completions", json=CHAT, headers=SOCKET_TENANT).status_code == 200
            assert c.post("/v1/chat/completions", json=CHAT, headers=SOCKET_TENANT).status_code == 429
        body = b'{"model": "x", "pad": "' + b"a" * 200_000 + b'"}' + b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-aigrid-tenant: metered\r\n"
                b"content-type: application/json\r\n")
        sent = {"content-length": (head + b"content-length: %d\r\n\r\n" % len(body) + body[:1000], body[1000:]),
                "chunked": (head + b"transfer-encoding: chunked\r\n\r\n" + b"3e8\r\n" + body[:1000] + b"\r\n",
                            b"%x\r\n" % len(body[1000:]) + body[1000:] + b"\r\n0\r\n\r\n")}
        for framing, (start, rest) in sent.items():
            with socket.create_connection(("127.0.0.1", grid.port)) as s:
                s.sendall(start)
                refused = _answers(s, b"}}")
                assert refused.startswith(b"HTTP/1.1 429 "), (framing, refused[:200])
                assert b"requests per minute" in refused, (framing, refused)
                s.sendall(rest + b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                after = _answers(s, b'"object":"list"')
                assert after.count(b"HTTP/1.1 ") == 1 and after.startswith(b"HTTP/1.1 200 "), (framing, after[:300])
                assert b'"object":"list"' in after, (framing, after[:300])
