"""The gateway learns from what it proxies (FAKE engines): the in-flight ledger books and releases every
attempt, each streamed answer calibrates its endpoint, the health probe measures the round trip, and a
baseline can be selected per request for a live A/B."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.telemetry.prefill_book import NOTHING_PENDING
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello " * 40}], "max_tokens": 8,
        "stream": True}


async def stream(client: httpx.AsyncClient, city: str, policy: str | None = None,
                 body: dict | None = None) -> httpx.Response:
    headers = {"x-aigrid-client-location": city, **({"x-aigrid-policy": policy} if policy else {})}
    async with client.stream("POST", "/v1/chat/completions", json=body or CHAT, headers=headers) as r:
        await r.aread()
    return r


async def test_every_streamed_answer_calibrates_its_endpoint_and_the_ledger_empties(
        client: httpx.AsyncClient, gateway: Gateway) -> None:
    for _ in range(10):
        r = await stream(client, "Frankfurt")
        assert r.status_code == 200 and r.headers["x-aigrid-site"] == "fra"
    cal = gateway.store.calibration("fra-smollm2")
    assert cal.n == 10 and cal.ready
    assert gateway.store.inflight("fra-smollm2") == 0
    state = gateway.store.state("fra-smollm2")
    assert (state.pending_requests, state.pending_prompt_tokens, state.decoding) == (0, 0, 0)
    # the book of pending prompts is empty too
    assert state.prefill_queue == NOTHING_PENDING
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    chosen = d["candidates"][0]
    assert chosen["predicted_ttft_p90_ms"] >= chosen["predicted_ttft_ms"] > 0 and d["ttft_ms"] is not None
    metrics = (await client.get("/metrics")).text
    assert 'aigrid_ttft_observed_over_predicted_ratio_count{endpoint="fra-smollm2"} 10.0' in metrics


class StoppedClock:
    """The gateway's clock, moved only by the test: a decision made after another sees it as if no time had
    passed, however late a loaded machine runs it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("reached", [True, False], ids=["after-it-arrived", "before-it-arrived"])
async def test_a_request_waiting_for_its_first_token_is_pending_with_its_prompt(
        fakes: dict[str, FakeEngine], tmp_path: Path, reached: bool) -> None:
    """The next decision sees the work ahead of it. It failed once under load (queue_ms 0): on the wall clock
    the next decision came after the pending prompt's predicted prefill, which the predictor then counts as
    done (a longer prompt only made that rarer). Time is now the test's: the gateway's clock moves only when
    the test moves it (to 1 ms after the first request reached the engine, or 1 ms after it was sent) and the
    engine holds the first token until told, so the first request is pending, with all but 1 ms of its predicted
    prefill ahead, when the next is decided.
    S (twenty-third session): the emulated network slept the whole round trip before the send and booked the
    prompt's arrival at its end, while the predictor places a request's arrival at half of it, so a prompt sent
    less than half a round trip before the next was not ahead of it (queue_ms 0, `before-it-arrived`): half is
    now slept before the send, the arrival booked there, and half before the first byte is relayed."""
    clock, first_token = StoppedClock(), asyncio.Event()
    fra = fakes["fra-smollm2"]
    answer = fra._sse

    async def held(req: dict) -> AsyncIterator[bytes]:
        await first_token.wait()
        async for chunk in answer(req):
            yield chunk

    fra._sse = held  # type: ignore[method-assign]
    gateway = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep, clock=clock)
    await gateway.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gateway)), base_url="http://gw") as client:
        task = asyncio.ensure_future(stream(client, "Frankfurt"))
        async with asyncio.timeout(30):  # a wait for the request to reach the engine, not a measurement
            while not fra.received:
                await asyncio.sleep(0.001)
        s = gateway.store.state("fra-smollm2")
        assert s.pending_requests == 1 and s.pending_prompt_tokens > 50 and s.decoding == 0
        # placed in time: it reached the engine (half the measured round trip after it left), all its tokens
        grid = {e["id"]: e for e in (await client.get("/v1/grid")).json()["endpoints"]}
        book = grid["fra-smollm2"]["prefill_queue"]
        assert book["prompts"] == 1 and book["tokens"] == s.pending_prompt_tokens
        # (half a round trip from now: the measured one, else the modelled Frankfurt one, a few ms)
        assert 0.0 <= book["first_arrival_ms"] <= (grid["fra-smollm2"]["measured_rtt_ms"] or 0.0) / 2 + 25.0
        # the next request sent 1 ms after the first reached the engine, or 1 ms after the first was sent: both
        # reach the engine half the emulated round trip after they leave, the first 1 ms before the next
        clock.now += (book["first_arrival_ms"] / 1000.0 if reached else 0.0) + 0.001
        other = asyncio.ensure_future(stream(client, "Frankfurt"))  # the next decision sees that work ahead
        async with asyncio.timeout(30):  # (and may go elsewhere for it: since d84cef73 a queue ahead can lose fra
            while sum(len(f.received) for f in fakes.values()) < 2:  # a Frankfurt request)
                await asyncio.sleep(0.001)
        first_token.set()
        first, second = await task, await other
        d = (await client.get(f"/v1/decisions/{second.headers['x-aigrid-decision']}")).json()
        mine = (await client.get(f"/v1/decisions/{first.headers['x-aigrid-decision']}")).json()
    ahead = next(c for c in d["candidates"] if c["endpoint"] == "fra-smollm2")
    alone = next(c for c in mine["candidates"] if c["endpoint"] == "fra-smollm2")
    # the prefill of the prompt ahead (the same prompt), all but the 1 ms that passed still to do
    assert ahead["queue_ms"] >= 0.95 * alone["prefill_ms"] > 0, (ahead, alone)
    assert first.status_code == second.status_code == 200
    assert gateway.store.inflight("fra-smollm2") == 0


@pytest.mark.parametrize("over", [0.0, 0.25], ids=["on-time", "oversleeping"])
async def test_the_emulated_way_back_is_the_client_s_wait_not_the_engine_s(
        fakes: dict[str, FakeEngine], tmp_path: Path, over: float) -> None:
    """Half the emulated round trip is slept after the engine's first byte: the client's TTFT holds the whole
    round trip, the engine's (what calibrates the endpoint) none of it. On a loaded machine the sleeps overrun
    (`over`): the way back was taken as the planned half, so its overrun was booked as the engine's TTFT."""
    clock, slept = StoppedClock(), []

    async def sleep(seconds: float) -> None:  # time moves only while the emulated network holds the request
        slept.append(seconds)
        clock.now += seconds + over

    gateway = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=sleep, clock=clock)
    await gateway.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gateway)), base_url="http://gw") as client:
        r = await stream(client, "Tokyo")
        d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    rtt_s = next(c for c in d["candidates"] if c["endpoint"] == r.headers["x-aigrid-endpoint"])["rtt_ms"] / 1000.0
    assert rtt_s > 0 and slept == [rtt_s / 2, rtt_s / 2]
    assert d["ttft_ms"] == pytest.approx((rtt_s + 2 * over) * 1000.0)  # the client waited through both
    assert gateway.store.state(r.headers["x-aigrid-endpoint"]).ttft_s == pytest.approx(0.0, abs=1e-9)


async def test_health_probe_measures_the_round_trip(client: httpx.AsyncClient, gateway: Gateway) -> None:
    await gateway.scraper.scrape_once()
    grid = (await client.get("/v1/grid")).json()
    rtts = {e["id"]: e["measured_rtt_ms"] for e in grid["endpoints"]}
    assert all(v is not None and v >= 0 for v in rtts.values())
    assert gateway.store.snapshot().state("fra-smollm2").rtt_ms == pytest.approx(rtts["fra-smollm2"], abs=0.01)


@pytest.mark.parametrize("policy", ["round-robin", "least-loaded", "power-of-two", "llm-d", "dynamo"])
async def test_a_baseline_is_selected_by_header_for_an_a_b(client: httpx.AsyncClient, policy: str) -> None:
    r = await stream(client, "Tokyo", policy)
    assert r.status_code == 200
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["policy"] == policy and d["reason"].startswith(policy)
    bad = await stream(client, "Tokyo", "no-such-policy")
    assert bad.status_code == 400
