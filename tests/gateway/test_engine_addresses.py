"""An engine's internal address (its base URL, host:port) never reaches a tenant: not in a 502's or a 503's message,
not in /v1/grid's `reason`, not in its own decisions (their attempts' errors, their rejections). It names the
endpoint by its id instead; an operator's /v1/grid and decisions, and the log, keep the address."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.dashboard.feed import Feed
from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.proxy import EngineNames
from aigrid.security.keys import KeyRing
from aigrid.spec.models import TenantSpec
from tests.gateway.conftest import _no_sleep, spec_in

SECRET = "test-secret-0123456789abcdef"
CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
INTERNAL = "engines.internal"


def address(endpoint_id: str) -> str:
    return f"http://{endpoint_id}.{INTERNAL}:8000"


def engine_side(request: httpx.Request) -> httpx.Response:
    """Every engine is healthy; fra's metrics fail (its scrape marks it unhealthy, with the engine's error as its
    reason); every engine refuses the connection of a request (ConnectError, naming its host and port)."""
    if request.method == "POST":
        raise httpx.ConnectError(f"connect failed ('{request.url.host}', {request.url.port})", request=request)
    if request.url.path == "/metrics":
        return httpx.Response(500 if request.url.host.startswith("fra-") else 200, text="")
    return httpx.Response(200, text="ok")


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway,
                                                                                      dict[str, str]]]:
    ring = KeyRing(SECRET.encode())
    keys = {"tenant": ring.issue("default").api_key, "bank": ring.issue("eu-bank").api_key,
            "ops": ring.issue("ops").api_key}
    ring.save(tmp_path / "keys.json")
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "ops": TenantSpec(operator=True)}})
    async with httpx.AsyncClient(transport=httpx.MockTransport(engine_side)) as up:
        engines = {e.id: OpenAICompatEngine("vllm", address(e.id), up) for e in spec.endpoints}
        gw = build_gateway(spec, engines, rng=random.Random(3), sleep=_no_sleep)
        await gw.scraper.scrape_once()
        await gw.guard.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            yield c, gw, {k: f"Bearer {v}" for k, v in keys.items()}
        await gw.guard.stop()


async def test_a_tenant_reads_the_endpoints_ids_where_the_engines_addresses_were(
        grid: tuple[httpx.AsyncClient, Gateway, dict[str, str]]) -> None:
    c, gw, keys = grid
    tenant, bank, ops = ({"authorization": keys[k]} for k in ("tenant", "bank", "ops"))
    assert INTERNAL in gw.store.state("fra-smollm2").reason  # what the engine said, with its address
    failed = await c.post("/v1/chat/completions", json=CHAT, headers=tenant)  # every engine refuses the connection
    assert failed.status_code == 502, failed.text
    message = failed.json()["error"]["message"]
    assert INTERNAL not in message and "8000" not in message, message
    assert "iad-smollm2: vllm engine at iad-smollm2: /v1/chat/completions failed" in message, message
    assert "ConnectError: connect failed iad-smollm2;" in message, message  # its ("host", port) too
    none = await c.post("/v1/chat/completions", json=CHAT, headers=bank)  # EU only: fra, unhealthy by its metrics
    assert none.status_code == 503, none.text
    message = none.json()["error"]["message"]
    assert INTERNAL not in message and "vllm engine at fra-smollm2: fra-smollm2/metrics answered HTTP 500" in message

    seen = (await c.get("/v1/grid", headers=tenant)).json()["endpoints"]
    assert INTERNAL not in orjson.dumps(seen).decode()
    assert {e["id"]: e["reason"] for e in seen}["iad-smollm2"].startswith("vllm engine at iad-smollm2: ")
    operator = {e["id"]: e for e in (await c.get("/v1/grid", headers=ops)).json()["endpoints"]}
    assert operator["iad-smollm2"]["reason"].startswith(f"vllm engine at {address('iad-smollm2')}: ")

    mine = (await c.get("/v1/decisions", headers=tenant)).json()["data"]
    assert mine and mine[0]["attempts"] and INTERNAL not in orjson.dumps(mine).decode()
    one = (await c.get(f"/v1/decisions/{failed.headers['x-aigrid-decision']}", headers=tenant)).json()
    assert one["attempts"][0]["error"].startswith(f"vllm engine at {one['attempts'][0]['endpoint']}: "), one
    banks = (await c.get(f"/v1/decisions/{none.headers['x-aigrid-decision']}", headers=bank)).json()
    assert banks["rejected"] and INTERNAL not in orjson.dumps(banks).decode()
    everyone = (await c.get("/v1/decisions", headers=ops)).json()["data"]  # an operator's: the engines' own words
    assert INTERNAL in orjson.dumps(everyone).decode()


def test_only_whole_addresses_are_named_and_a_shared_one_by_every_endpoint_on_it() -> None:
    class At:
        def __init__(self, base_url: str) -> None:
            self.base_url = base_url

    names = EngineNames({"a": At("http://10.0.0.1:1"), "b": At("http://10.0.0.1:1/"),  # type: ignore[dict-item]
                         "c": At("https://gpu.example")})
    assert names.hide("http://10.0.0.1:1 refused; ('10.0.0.1', 1) too") == "a/b refused; a/b too"
    assert names.hide("http://10.0.0.1:1 refused", endpoint="b") == "b refused"
    assert names.hide("10.0.0.1:10 and 110.0.0.1 are others") == "a/b:10 and 110.0.0.1 are others"
    assert names.hide("OpenAICompatEngine(kind='openai', base_url='https://gpu.example'): gpu.example:443 down") == \
        "c down"


def test_the_address_an_engines_host_name_resolved_to_is_hidden_too() -> None:
    """An engine named by a host name (a service's DNS name) that refused a connection: asyncio's error names the
    address the name resolved to, as ('10.0.0.7', 8000) (each one tried, IPv6 with its flow and scope), which no
    form of the base URL matched, so a tenant read the engine's internal IP in its 502, 503 and decisions."""
    class At:
        def __init__(self, base_url: str) -> None:
            self.base_url = base_url

    names = EngineNames({"a": At(address("a"))})  # type: ignore[dict-item]
    one = f"cannot connect to a.{INTERNAL}:8000: [Errno 111] Connect call failed ('10.0.0.7', 8000)"
    assert names.hide(one, endpoint="a") == "cannot connect to a: [Errno 111] Connect call failed a"
    both = (f"cannot connect to a.{INTERNAL}:8000: Multiple exceptions: [Errno 111] Connect call failed "
            "('10.0.0.7', 8000), [Errno 99] Cannot assign requested address ('fd00::7', 8000, 0, 0)")
    hidden = names.hide(both)
    assert "10.0.0.7" not in hidden and "fd00" not in hidden and hidden.count("<engine>") == 2, hidden


async def test_without_keys_no_caller_reads_an_engines_address(tmp_path: Path) -> None:
    """With security.enforce off (the demo default) the gateway cannot tell an operator from anyone else (any caller
    names its own tenant): every caller read every decision and /v1/grid as an operator, the engines' addresses
    included (`url`, a failing endpoint's `reason`, the attempts' errors and rejections: `aigrid explain`), and the
    live map showed a failing endpoint's reason whole. Now each is named by its endpoint's id, for everyone; what
    every caller may read is unchanged (every tenant's decisions, every endpoint)."""
    spec = spec_in(tmp_path, enforce=False)
    async with httpx.AsyncClient(transport=httpx.MockTransport(engine_side)) as up:
        engines = {e.id: OpenAICompatEngine("vllm", address(e.id), up) for e in spec.endpoints}
        gw = build_gateway(spec, engines, rng=random.Random(3), sleep=_no_sleep)
        await gw.scraper.scrape_once()
        await gw.guard.start()
        try:
            assert INTERNAL in gw.store.state("fra-smollm2").reason  # what the engine said, with its address
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
                failed = await c.post("/v1/chat/completions", json=CHAT)  # every engine refuses the connection
                assert failed.status_code == 502, failed.text
                none = await c.post("/v1/chat/completions", json=CHAT,  # another tenant's: EU only, fra unhealthy
                                    headers={"x-aigrid-tenant": "eu-bank"})
                assert none.status_code == 503, none.text
                decision = failed.headers["x-aigrid-decision"]
                one = (await c.get(f"/v1/decisions/{decision}")).json()
                banks = (await c.get(f"/v1/decisions/{none.headers['x-aigrid-decision']}")).json()
                recent = (await c.get("/v1/decisions", params={"limit": 1000})).json()["data"]
                seen = (await c.get("/v1/grid")).json()["endpoints"]
            feed = Feed(gw)
            assert banks["rejected"], banks
            shown = {"decision": one, "rejected": banks, "recent": recent, "grid": seen, "feed": feed.tick(0.0)}
            for where, body in shown.items():
                assert INTERNAL not in orjson.dumps(body).decode(), (where, body)
            assert one["attempts"] and one["attempts"][0]["error"].startswith(
                f"vllm engine at {one['attempts'][0]['endpoint']}: "), one
            assert {r["id"] for r in recent} >= {decision, none.headers["x-aigrid-decision"]}  # every tenant's still
            assert all("url" not in e for e in seen) and len(seen) == len(spec.endpoints)
            assert {e["id"]: e["reason"] for e in seen}["fra-smollm2"].startswith("vllm engine at fra-smollm2: ")
            grid_state = dict(feed.tick(1.0))["grid"]
            assert {e["id"]: e["reason"] for e in grid_state["endpoints"]}["fra-smollm2"].startswith(
                "vllm engine at fra-smollm2: ")
        finally:
            await gw.guard.stop()
