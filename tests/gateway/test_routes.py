"""The gateway end to end in process, against FAKE engines: routing, headers, SSE relay, errors."""

from __future__ import annotations

import httpx
import orjson

from aigrid.gateway.app import Gateway
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}


async def chat(client: httpx.AsyncClient, location: str | None = None, **extra: object) -> httpx.Response:
    headers = {} if location is None else {"x-aigrid-client-location": location}
    return await client.post("/v1/chat/completions", json={**CHAT, **extra}, headers=headers)


async def test_tokyo_client_is_served_by_nrt_and_frankfurt_by_fra(client: httpx.AsyncClient) -> None:
    tokyo = await chat(client, "Tokyo")
    frankfurt = await chat(client, "Frankfurt")
    assert tokyo.status_code == 200 and frankfurt.status_code == 200
    assert tokyo.headers["x-aigrid-site"] == "nrt"
    assert frankfurt.headers["x-aigrid-site"] == "fra"
    assert tokyo.json()["choices"][0]["message"]["content"] == "Hello from the grid"


async def test_lat_lon_location_and_decision_is_explainable(client: httpx.AsyncClient) -> None:
    r = await chat(client, "-23.5,-46.6")
    assert r.headers["x-aigrid-site"] == "gru"
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["chosen"] == "gru-smollm2" and d["served_by"] == "gru-smollm2"
    assert len(d["candidates"]) == 4
    first = d["candidates"][0]
    assert set(first["scores"]) == {"ttft", "cost", "affinity", "headroom", "proximity"}
    assert first["predicted_ttft_ms"] < d["candidates"][-1]["predicted_ttft_ms"]


async def test_stream_relays_sse_bytes_untouched(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                             headers={"x-aigrid-client-location": "Paris"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join([c async for c in r.aiter_raw()])
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "Hello from the grid"
    assert orjson.loads(events[-2])["usage"]["completion_tokens"] == 4
    assert fakes["fra-smollm2"].received[-1]["model"] == "smollm2-135m"


async def test_tokyo_goes_elsewhere_when_nrt_is_down_and_decision_says_why(
        client: httpx.AsyncClient, gateway: Gateway, fakes: dict[str, FakeEngine]) -> None:
    fakes["nrt-smollm2"].down = True
    await gateway.scraper.scrape_once()
    r = await chat(client, "Tokyo")
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert {"endpoint": "nrt-smollm2", "site": "nrt", "filter": "health"}.items() <= d["rejected"][0].items()
    health = (await client.get("/healthz")).json()
    assert "nrt-smollm2" not in health["healthy"]


async def test_failure_before_first_byte_retries_next_candidate(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    fakes["nrt-smollm2"].down = True  # down, but the scraper has not noticed yet
    r = await chat(client, "Tokyo")
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["attempts"][0]["endpoint"] == "nrt-smollm2" and d["attempts"][0]["ok"] is False
    assert d["attempts"][1]["ok"] is True


async def test_circuit_opens_after_repeated_failures(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    fakes["nrt-smollm2"].down = True  # the scraper has not noticed: only real failures can open the circuit
    jp_only = {"x-aigrid-client-location": "Tokyo", "x-aigrid-residency": "JP"}
    for _ in range(3):
        r = await client.post("/v1/chat/completions", json=CHAT, headers=jp_only)
        assert r.status_code == 502
    r = await client.post("/v1/chat/completions", json=CHAT, headers=jp_only)
    assert r.status_code == 503 and "circuit breaker open" in r.json()["error"]["message"]
    assert len(fakes["nrt-smollm2"].received) == 0


async def test_mid_stream_break_ends_with_error_event(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    fakes["fra-smollm2"].break_after = 2
    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                             headers={"x-aigrid-client-location": "Frankfurt"}) as r:
        raw = b"".join([c async for c in r.aiter_raw()])
    last = [line for line in raw.split(b"\n") if line.startswith(b"data: ")][-1]
    assert orjson.loads(last[6:])["error"]["code"] == "stream_interrupted"


async def test_residency_keeps_eu_tenant_in_eu_even_from_tokyo(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT,
                          headers={"x-aigrid-client-location": "Tokyo", "x-aigrid-tenant": "eu-bank"})
    assert r.headers["x-aigrid-site"] == "fra" and r.headers["x-aigrid-jurisdiction"] == "EU"


async def test_no_eligible_site_is_503_with_reasons(client: httpx.AsyncClient, gateway: Gateway,
                                                    fakes: dict[str, FakeEngine]) -> None:
    fakes["fra-smollm2"].down = True
    await gateway.scraper.scrape_once()
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-tenant": "eu-bank"})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "no_eligible_endpoint" and "residency" in err["message"] and "health" in err["message"]


async def test_every_candidate_failing_is_502(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    for f in fakes.values():
        f.down = True
    r = await chat(client, "Tokyo")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"


async def test_prefix_affinity_is_remembered(client: httpx.AsyncClient) -> None:
    r1 = await chat(client, "Tokyo")
    r2 = await chat(client, "Tokyo")
    d = (await client.get(f"/v1/decisions/{r2.headers['x-aigrid-decision']}")).json()
    assert r1.headers["x-aigrid-site"] == "nrt"
    assert "cache warm" in " ".join(d["candidates"][0]["notes"])


async def test_models_health_metrics(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert {m["id"] for m in models["data"]} == {"smollm2-135m", "auto"}
    await chat(client, "Tokyo")
    metrics = (await client.get("/metrics")).text
    assert 'aigrid_requests_total{endpoint="nrt-smollm2",outcome="ok",site="nrt"} 1.0' in metrics
    assert (await client.get("/healthz")).json()["status"] == "ok"
