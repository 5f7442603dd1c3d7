"""Workers' abuse digests through a real hub on a Unix socket: verdicts over all workers, and each worker's
own verdicts when the hub does not answer (logged once, never a refused request)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.abuse_sync import AbuseSync
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient
from aigrid.security.firewall.abuse import AbuseAction, AbuseMonitor, AbuseRules, RequestTraits
from aigrid.security.firewall.abuse_shared import SharedAbuseMonitor
from tests.gateway.started_hub import started_hub

RULES = AbuseRules(window_s=60.0, min_requests=5, max_requests=10)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with started_hub("aigrid-abuse-", abuse_rules=RULES) as h:
        yield h


async def test_digests_of_two_workers_are_counted_together(hub: Hub) -> None:
    clients = [HubClient(hub.path, hub.token) for _ in range(2)]
    monitors = [SharedAbuseMonitor(AbuseMonitor(RULES)) for _ in range(2)]
    syncs = [AbuseSync(m, c.abuse_exchange, 0.05) for m, c in zip(monitors, clients, strict=True)]
    try:
        for i in range(12):  # 6 per worker, one prompt: each alone is far under max_requests=10
            assert monitors[i % 2].observe("k", RequestTraits("hello")).action == AbuseAction.ALLOW
        for s in syncs:
            assert await s.sync_once()
        assert await syncs[0].sync_once()  # worker 0 learns of worker 1's requests at its next batch
        for m in monitors:
            v = m.observe("k", RequestTraits("hello"))
            assert (v.action, v.signals, v.shared) == (AbuseAction.FLAG, ("volume",), True)
        assert monitors[0].observe("other", RequestTraits("hello")).action == AbuseAction.ALLOW
        assert hub.abuse.monitor.verdict("k").requests_in_window == 12
    finally:
        for c in clients:
            await c.aclose()


async def test_without_the_hub_each_worker_answers_alone_and_says_so_once(
        hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    client = HubClient(hub.path, hub.token)
    monitor = SharedAbuseMonitor(AbuseMonitor(RULES))
    sync = AbuseSync(monitor, client.abuse_exchange, 0.05)
    for _ in range(11):
        monitor.observe("k", RequestTraits("hello"))
    assert await sync.sync_once()
    assert monitor.shared("k") is not None and monitor.shared("k").requests_in_window == 11  # type: ignore[union-attr]
    await hub.stop()
    await client.aclose()
    with caplog.at_level(logging.WARNING, logger="aigrid.abuse"):
        assert not await sync.sync_once()
        assert not await sync.sync_once()
    assert sync.unreachable and monitor.shared("k") is None
    assert len([r for r in caplog.records if "did not answer" in r.message]) == 1
    v = monitor.observe("k", RequestTraits("hello"))  # its own 12 requests: still a verdict, no error
    assert v.action == AbuseAction.FLAG and not v.shared
    await client.aclose()


async def test_the_hub_relays_its_workers_digests_to_other_gateways_and_counts_theirs(tmp_path: Path) -> None:
    from aigrid.security.firewall.abuse import digest
    from aigrid.security.firewall.abuse_redis import RedisAbuseRelay
    from aigrid.security.firewall.abuse_shared import request_to_wire
    from tests.security.redis_server import redis_server

    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        other = RedisAbuseRelay.from_url(url, "hub-test")
        hub = Hub(tmp_path / "unused.sock", None, abuse_rules=RULES,
                  abuse_relay=RedisAbuseRelay.from_url(url, "hub-test"))
        try:
            await other.relay([])
            await hub._relay_abuse()  # started: reading from the end
            mine = [("k", digest(RequestTraits(f"probe {i}"), 32)) for i in range(4)]
            await hub.handle("abuse", request_to_wire(0, mine))  # a worker's batch
            await hub._relay_abuse()
            assert await other.relay([("k", digest(RequestTraits("elsewhere"), 32))] * 7) == mine
            await hub._relay_abuse()
            v = hub.abuse.monitor.verdict("k")
            assert v.requests_in_window == 11 and "volume" in v.signals  # 4 here + 7 on the other gateway
        finally:
            await hub.stop()
            await other.aclose()


async def test_lone_gateways_share_abuse_signals_through_redis(tmp_path: Path, fakes: dict[str, Any]) -> None:
    """Two single-process gateways with gateway.shared_state_url: one key's requests alternate between
    them, 6 each against a volume threshold of 8; the 9th request of the key is refused (429) by whichever
    gateway serves it, because each counts the other's digests."""
    import random

    import httpx

    from aigrid.gateway.app import build_app, build_gateway
    from aigrid.spec.models import AbuseSpec
    from tests.gateway.conftest import spec_in
    from tests.security.redis_server import redis_server

    with redis_server(tmp_path) as port:
        gws = []
        for i in range(2):
            spec = spec_in(tmp_path / f"g{i}", abuse=AbuseSpec(action="throttle", min_requests=5, max_requests=8))
            spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(
                update={"shared_state_url": f"redis://127.0.0.1:{port}/0"})})
            gw = build_gateway(spec, fakes, rng=random.Random(i))
            await gw.scraper.scrape_once()
            gws.append(gw)
        syncs = [gw.guard.abuse_sync for gw in gws]
        assert all(s is not None for s in syncs)
        for s in syncs:  # what each gateway's lifespan does at start: read the stream from its end
            assert await s.sync_once()  # type: ignore[union-attr]
        statuses = []
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://g")
                   for gw in gws]
        try:
            for i in range(12):
                body = {"model": "smollm2-135m", "max_tokens": 4,
                        "messages": [{"role": "user", "content": f"probe number {i}"}]}
                r = await clients[i % 2].post("/v1/chat/completions", json=body)
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "abuse_throttled" and r.headers["retry-after"] == "60"
                for s in syncs * 2:  # each publishes, then each reads the other's (two intervals)
                    assert await s.sync_once()  # type: ignore[union-attr]
        finally:
            for c in clients:
                await c.aclose()
            for gw in gws:
                await gw.guard.stop()
        assert statuses == [200] * 8 + [429] * 4, statuses
