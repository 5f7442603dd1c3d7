"""Workers' abuse digests through a real hub on a Unix socket: verdicts over all workers, and each worker's
own verdicts when the hub does not answer (logged once, never a refused request)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aigrid.gateway.abuse_sync import AbuseSync
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient
from aigrid.security.firewall.abuse import AbuseAction, AbuseMonitor, AbuseRules, RequestTraits
from aigrid.security.firewall.abuse_shared import SharedAbuseMonitor

RULES = AbuseRules(window_s=60.0, min_requests=5, max_requests=10)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    work = Path(tempfile.mkdtemp(prefix="aigrid-abuse-"))  # short: a Unix socket path has ~100 bytes
    h = Hub(work / "hub.sock", None, abuse_rules=RULES)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        shutil.rmtree(work, ignore_errors=True)


async def test_digests_of_two_workers_are_counted_together(hub: Hub) -> None:
    clients = [HubClient(hub.path) for _ in range(2)]
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
    client = HubClient(hub.path)
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
