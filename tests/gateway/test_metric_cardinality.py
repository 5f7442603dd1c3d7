"""No Prometheus label takes a value a client chose: a client sending many distinct model names, headers, tool
names or fields makes no new series on /metrics (each would be memory in the gateway and in Prometheus, for good).
A guard: on 5 Dec 2026 (helper 133) every label was already bounded (sites, endpoints and models of the spec, the
gateway's own error codes and outcomes, urgency classes)."""

from __future__ import annotations

import httpx

from aigrid.gateway.app import Gateway

HI = [{"role": "user", "content": "hi"}]


def series(gw: Gateway) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in gw.metrics.exposition().decode().splitlines()
            if line and not line.startswith("#")}


async def _made_up(client: httpx.AsyncClient, v: str) -> None:
    """One round of requests naming `v` wherever a client may write a name."""
    await client.post("/v1/chat/completions", json={"model": v, "messages": HI})
    await client.post("/v1/chat/completions", json={"model": v, "stream": True, "messages": HI})
    await client.post("/v1/completions", json={"model": v, "prompt": "hi"})
    await client.post("/v1/embeddings", json={"model": v, "input": "hi"})
    await client.post("/v1/messages", json={"model": v, "max_tokens": 8, "messages": HI})
    await client.post("/v1/messages/count_tokens", json={"model": v, "messages": HI})
    await client.post("/v1/responses", json={"model": v, "input": "hi"})
    await client.post("/v1/responses/input_tokens", json={"model": v, "input": "hi"})
    await client.post("/v1/chat/completions", json={"model": "smollm2-135m", "messages": HI},
                      headers={"x-aigrid-priority": v, "x-aigrid-policy": v, "x-aigrid-tenant": v,
                               "user-agent": v, "x-aigrid-residency": v})
    await client.post("/v1/chat/completions", json={
        "model": "smollm2-135m", "messages": HI, "user": v, "metadata": {v: v},
        "tools": [{"type": "function", "function": {"name": v, "parameters": {"type": "object"}}}]})
    await client.post(f"/v1/{v}", json={"model": v})
    await client.get(f"/v1/responses/resp_{v}")


async def test_distinct_names_a_client_sends_make_no_new_series(client: httpx.AsyncClient, gateway: Gateway) -> None:
    for v in ("warm-a", "warm-b"):  # every code and outcome these requests meet, counted once
        await _made_up(client, v)
    before = series(gateway)
    for i in range(30):
        await _made_up(client, f"made-up-{i}")
    after = series(gateway)
    assert after == before, sorted(after - before)[:20]
    assert not [s for s in after if "made-up" in s or "warm-" in s]
