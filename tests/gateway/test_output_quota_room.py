"""A request with no output limit of its own reserves DEFAULT_OUTPUT_TOKENS a choice at admission, and its engine may
decode no more than its tenant's token limits then give it room for, up to the grid's limit (Guard.widen, routes.route;
brief ATK6, thirty-seventh session). Until then the engine was sent the grid's limit (4,096) while the request held
256 of the quota: on a live gateway of emulated vLLM engines, seven such requests at once of a tenant allowed 2,000
tokens a minute (`ignore_eos`, no max_tokens) were served 28,336 tokens in that minute."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import Gateway
from aigrid.gateway.request_info import DEFAULT_OUTPUT_TOKENS
from aigrid.spec.models import QuotaSpec, TenantSpec
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
LIMIT = 1_000
TENANT = {"x-aigrid-tenant": "metered"}
ASK = [{"role": "user", "content": "Write a long story."}]
DOORS = [
    ("/v1/chat/completions", {"model": MODEL, "messages": ASK, "ignore_eos": True}),
    ("/v1/chat/completions", {"model": MODEL, "messages": ASK, "stream": True}),
    ("/v1/completions", {"model": MODEL, "prompt": "Once upon a time", "ignore_eos": True}),
    ("/v1/responses", {"model": MODEL, "input": "Write a long story."}),
]


class Gated(FakeEngine):
    """A fake engine of a grid whose first request (to any of its engines, `opened` shared) is held until `go` is
    set (an answer still being decoded)."""

    def __init__(self, name: str, go: asyncio.Event, opened: list[str]) -> None:
        super().__init__(name)
        self.go, self.opened = go, opened

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        first = not self.opened
        self.opened.append(self.name)
        async with super().open(path, body) as upstream:
            if first:
                await self.go.wait()
            yield upstream


@asynccontextmanager
async def metered(tmp: Path, quotas: QuotaSpec | None) -> AsyncIterator[tuple[Any, Gateway, dict[str, Gated]]]:
    spec = spec_in(tmp)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "metered": TenantSpec(quotas=quotas)}})
    go, opened = asyncio.Event(), list[str]()
    go.set()
    engines = {e.id: Gated(e.id, go, opened) for e in spec.endpoints}
    async with serving(spec, engines) as (client, gw):
        yield client, gw, engines


def sent(engines: dict[str, Gated]) -> list[dict[str, Any]]:
    return [r for e in engines.values() for r in e.received]


async def minute_spent(gw: Gateway) -> int:
    quotas = gw.guard.quotas
    index = math.floor(quotas.clock() / 60.0)
    return await quotas.backend.value(f"{quotas.prefix}:{{metered}}:tenant:metered:tpm:{index}")


@pytest.mark.parametrize("path, body", DOORS)
async def test_a_request_without_max_tokens_is_sent_no_more_than_its_tokens_per_minute_leave(
        tmp_path: Path, path: str, body: dict[str, Any]) -> None:
    async with metered(tmp_path, QuotaSpec(tokens_per_min=LIMIT)) as (client, gw, engines):
        r = await client.post(path, json=body, headers=TENANT)
        assert r.status_code == 200, r.text
        [req] = sent(engines)
        # more than admission's default (the room was there), never past what the minute had left
        assert DEFAULT_OUTPUT_TOKENS < req["max_tokens"] < LIMIT
        # settled to what the engine counted, not held at the widened reservation
        assert await minute_spent(gw) < DEFAULT_OUTPUT_TOKENS


async def test_a_token_budget_bounds_it_as_well(tmp_path: Path) -> None:
    async with metered(tmp_path, QuotaSpec(token_budget=600)) as (client, _, engines):
        r = await client.post(DOORS[0][0], json=DOORS[0][1], headers=TENANT)
        assert r.status_code == 200, r.text
        [req] = sent(engines)
        assert DEFAULT_OUTPUT_TOKENS < req["max_tokens"] < 600


async def test_without_token_limits_the_engine_gets_the_grids_limit(tmp_path: Path) -> None:
    async with metered(tmp_path, QuotaSpec(requests_per_min=100)) as (client, gw, engines):
        r = await client.post(DOORS[0][0], json=DOORS[0][1], headers=TENANT)
        assert r.status_code == 200, r.text
        [req] = sent(engines)
        assert req["max_tokens"] == gw.spec.gateway.max_output_tokens


async def test_a_client_limit_is_sent_as_it_was_and_not_widened(tmp_path: Path) -> None:
    async with metered(tmp_path, QuotaSpec(tokens_per_min=LIMIT)) as (client, gw, engines):
        r = await client.post(DOORS[0][0], json={"model": MODEL, "messages": ASK, "max_tokens": 50}, headers=TENANT)
        assert r.status_code == 200, r.text
        [req] = sent(engines)
        assert req["max_tokens"] == 50


async def test_requests_at_once_are_sent_no_more_than_the_minute_holds_together(tmp_path: Path) -> None:
    """The first request is still being answered when the second comes: the minute's room went to the first, so the
    second is refused (429) rather than both engines being sent the grid's 4,096 as before."""
    async with metered(tmp_path, QuotaSpec(tokens_per_min=LIMIT)) as (client, _, engines):
        go = next(iter(engines.values())).go
        go.clear()
        path, body = DOORS[0]
        first = asyncio.create_task(client.post(path, json=body, headers=TENANT))
        for _ in range(200):
            if sent(engines):
                break
            await asyncio.sleep(0.01)
        second = await asyncio.wait_for(client.post(path, json=body, headers=TENANT), 30)
        go.set()
        assert (await asyncio.wait_for(first, 30)).status_code == 200
        assert second.status_code == 429, second.text
        assert sum(r["max_tokens"] for r in sent(engines)) < LIMIT


async def test_min_tokens_past_the_default_is_reserved_or_refused(tmp_path: Path) -> None:
    """vLLM's `min_tokens` with no max_tokens: the answer has at least that many tokens, so the request reserves them
    (the engine is sent a max_tokens no lower), or is the quota's 429 naming min_tokens where its limits have no room
    (nothing sent). Before, it reserved 256 and its engine decoded at least min_tokens."""
    async with metered(tmp_path, QuotaSpec(tokens_per_min=LIMIT)) as (client, gw, engines):
        path = "/v1/chat/completions"
        body = {"model": MODEL, "messages": ASK, "ignore_eos": True}
        r = await client.post(path, json={**body, "min_tokens": 700}, headers=TENANT)
        assert r.status_code == 200, r.text
        [req] = sent(engines)
        assert 700 <= req["max_tokens"] < LIMIT
        r = await client.post(path, json={**body, "min_tokens": LIMIT}, headers=TENANT)
        assert r.status_code == 429 and "min_tokens" in r.json()["error"]["message"], r.text
        assert len(sent(engines)) == 1
        assert await minute_spent(gw) < 700  # the refused one's admission given back, the first settled


@pytest.mark.parametrize("path, body", DOORS[:2])
async def test_the_remaining_tokens_header_counts_the_widened_reservation(
        tmp_path: Path, path: str, body: dict[str, Any]) -> None:
    """(brief RV1, review of ATK6) x-ratelimit-remaining-tokens is what a client's throttle reads before its next
    request: it said the room left after admission's 256, not after the widening that sent the engine the rest of
    the minute, so a client read some 700 tokens free where none were (its next request a 429)."""
    async with metered(tmp_path, QuotaSpec(tokens_per_min=LIMIT)) as (client, _, engines):
        r = await client.post(path, json=body, headers=TENANT)
        assert r.status_code == 200, r.text
        [req] = sent(engines)
        assert req["max_tokens"] > DEFAULT_OUTPUT_TOKENS
        assert int(r.headers["x-ratelimit-remaining-tokens"]) <= LIMIT - req["max_tokens"], r.headers


async def test_a_min_tokens_refusal_says_when_to_retry_or_that_no_wait_helps(tmp_path: Path) -> None:
    """(brief RV1, review of 8093429a) The min_tokens 429 carried no Retry-After and let the SDKs retry a request no
    minute can hold: a min_tokens past the whole limit is now refused as admission refuses a request larger than
    a limit (x-should-retry: false), and one the minute has no room for now says Retry-After (the window's end)."""
    async with metered(tmp_path, QuotaSpec(tokens_per_min=LIMIT)) as (client, _, engines):
        path = "/v1/chat/completions"
        body = {"model": MODEL, "messages": ASK, "ignore_eos": True}
        r = await client.post(path, json={**body, "min_tokens": LIMIT}, headers=TENANT)  # never fits a minute
        assert r.status_code == 429 and "min_tokens" in r.json()["error"]["message"], r.text
        assert r.headers["x-should-retry"] == "false" and "retry-after" not in r.headers, r.headers
        go = next(iter(engines.values())).go
        go.clear()  # the first request holds the minute's room while it is answered
        first = asyncio.create_task(client.post(path, json={**body, "max_tokens": 500}, headers=TENANT))
        for _ in range(200):
            if sent(engines):
                break
            await asyncio.sleep(0.01)
        # admitted (its prompt and 256 fit beside the first's 500), its min_tokens not: 600 would fit an empty minute
        r = await client.post(path, json={**body, "min_tokens": 600}, headers=TENANT)
        go.set()
        assert (await asyncio.wait_for(first, 30)).status_code == 200
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60 and r.headers["x-should-retry"] == "true", r.headers


async def test_a_quota_store_failing_at_a_min_tokens_reservation_is_a_503_not_a_429(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(brief RV1, review of 8093429a) A store that fails as the min_tokens are reserved was read as "no room": the
    quota's 429, which tells a throttle the tenant is over its limit. It is the 503 quota_unavailable admission answers
    for a failing store (logged); nothing sent to an engine. A request without min_tokens runs on what admission
    reserved, as before."""
    async with metered(tmp_path, QuotaSpec(tokens_per_min=LIMIT)) as (client, gw, engines):
        async def failing(*_: Any, **__: Any) -> None:
            raise ConnectionError("the quota store is gone")

        monkeypatch.setattr(gw.guard.quotas, "extend", failing)
        path = "/v1/chat/completions"
        body = {"model": MODEL, "messages": ASK, "ignore_eos": True}
        r = await client.post(path, json={**body, "min_tokens": 600}, headers=TENANT)
        assert r.status_code == 503 and r.json()["error"]["code"] == "quota_unavailable", r.text
        assert sent(engines) == []
        r = await client.post(path, json=body, headers=TENANT)
        assert r.status_code == 200, r.text
        assert [q["max_tokens"] for q in sent(engines)] == [DEFAULT_OUTPUT_TOKENS]
