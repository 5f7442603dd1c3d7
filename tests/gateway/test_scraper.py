"""The scraper's own metrics take an engine's numbers as telemetry reads them (telemetry/store.bounded_stats)."""

from __future__ import annotations

from dataclasses import replace

from aigrid.gateway.app import Gateway
from tests.gateway.fake_engine import FakeEngine


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
