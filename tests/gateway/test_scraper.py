"""The scraper's own metrics take an engine's numbers as telemetry reads them (telemetry/store.bounded_stats); one
engine that does not answer its probes holds no other endpoint's scrape."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from aigrid.gateway.app import Gateway
from aigrid.gateway.scraper import Scraper
from aigrid.spec import load
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.test_hostile_engines import grid, sane


async def test_the_waiting_gauge_takes_the_engines_number_bounded(gateway: Gateway,
                                                                  fakes: dict[str, FakeEngine]) -> None:
    """The aigrid_endpoint_waiting gauge was set from the engine's raw number: an engine reporting 1e300 requests
    waiting put 1e300 on /metrics (telemetry itself caps it since 2a5591d)."""
    engine = fakes["fra-smollm2"]
    engine.stats_value = replace(engine.stats_value, waiting=10**300)
    await gateway.scraper.scrape_once()
    value = gateway.metrics.registry.get_sample_value("aigrid_endpoint_waiting",
                                                       {"site": "fra", "endpoint": "fra-smollm2"})
    assert value is not None and value <= 1_000_000


async def test_an_engine_that_does_not_answer_its_probe_delays_no_other_endpoint_s_scrape(
        gateway: Gateway, fakes: dict[str, FakeEngine]) -> None:
    """S (twenty-third session): every endpoint's scrape was one tick (awaited together), so an engine whose probe
    does not answer (a site whose network went dark, or an engine that drips its /metrics: each GET up to the
    probe timeout, 2 s, health then metrics then power) held every other endpoint's next scrape until it gave up:
    their health and load refreshed every few seconds instead of every interval. Each endpoint is now scraped on
    its own loop."""
    stuck, scraped = asyncio.Event(), {ep: 0 for ep in fakes}

    async def hangs() -> bool:
        await stuck.wait()
        return True

    def counting(ep: str, probe: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
        async def health() -> bool:
            scraped[ep] += 1
            return await probe()
        return health

    fakes["fra-smollm2"].health = hangs  # type: ignore[method-assign]
    for ep, engine in fakes.items():
        engine.health = counting(ep, engine.health)  # type: ignore[method-assign]
    scraper = Scraper(gateway.store, fakes, load.endpoints(gateway.spec), gateway.metrics, 0.01)
    start = asyncio.ensure_future(scraper.start())
    try:
        others = [ep for ep in scraped if ep != "fra-smollm2"]
        for _ in range(3000):  # polled, up to 30 s: a loaded machine runs the loops late, not fewer of them
            if all(scraped[ep] >= 5 for ep in others):
                break
            await asyncio.sleep(0.01)
        assert all(scraped[ep] >= 5 for ep in others), scraped  # before: 1 each, for as long as one hangs
        assert scraped["fra-smollm2"] == 1
    finally:
        stuck.set()
        await start
        await scraper.stop()


async def test_the_unhealthy_line_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An `openai` endpoint whose models path answers 404 (a url whose base is wrong: until 6 Dec 2026 one ending in
    /v1, asked /v1/v1/models) was logged "endpoint X is now UNHEALTHY" and nothing more: the adapter's health probe
    said False, the 404 unsaid. The probe now says why, and the scraper's line carries it."""
    with caplog.at_level("WARNING", logger="aigrid.scraper"):
        async for g in grid(tmp_path, sane, kind="openai"):  # the engines serve GET /health and /metrics only
            assert not g.gw.store.snapshot().state("nrt-smollm2").healthy
    lines = [r for r in caplog.records if r.name == "aigrid.scraper" and "UNHEALTHY" in r.getMessage()]
    assert lines, caplog.text
    for line in lines:
        assert "/v1/models answered HTTP 404 (no such path there" in line.getMessage(), line.getMessage()
        assert "answered HTTP 404" in line.aigrid_fields["reason"]  # type: ignore[attr-defined]


async def test_an_engine_without_a_reason_is_unhealthy_saying_its_check_failed(
        gateway: Gateway, fakes: dict[str, FakeEngine], caplog: pytest.LogCaptureFixture) -> None:
    await gateway.scraper.scrape_once()
    fakes["fra-smollm2"].down = True
    with caplog.at_level("WARNING", logger="aigrid.scraper"):
        await gateway.scraper.scrape_once()
    assert [r.getMessage() for r in caplog.records if r.name == "aigrid.scraper"] == [
        "endpoint fra-smollm2 is now UNHEALTHY: health check failed"]
