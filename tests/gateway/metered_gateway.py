"""A started gateway with a tenant `metered` of given quotas, and how a test reads what a request left behind: the
tenant's tokens charged this minute, the requests still in flight, the one audit record, the requests booked in the
metrics (test_exit_paths.py, the hostile-engine tests and the engine-refusal tests share these)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from aigrid.gateway.app import Gateway, build_gateway
from aigrid.spec.models import QuotaSpec, TenantSpec
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in
from tests.gateway.fake_engine import FakeEngine

TENANT = {"x-aigrid-tenant": "metered", "x-aigrid-client-location": "Tokyo"}


async def metered_gateway(tmp_path: Path, fakes: dict[str, FakeEngine], quotas: QuotaSpec) -> Gateway:
    """A started gateway with a tenant `metered` of these quotas, in one quota window for the whole test (its
    guard to be stopped by the caller)."""
    spec = spec_in(tmp_path)
    tenants = {**spec.tenants, "metered": TenantSpec(quotas=quotas)}
    gw = build_gateway(spec.model_copy(update={"tenants": tenants}), fakes, rng=random.Random(5), sleep=_no_sleep)
    gw.guard.quotas.clock = lambda: 1_800_000_030.0
    await gw.scraper.scrape_once()
    await gw.guard.start()
    return gw


async def balance(gw: Gateway) -> int:
    return await gw.guard.quotas.tokens_this_minute(gw.guard.principal(None, "metered"))


def inflight(gw: Gateway) -> int:
    return sum(gw.store.inflight(e.id) for e in gw.store.snapshot().endpoints)


async def the_one_record(gw: Gateway) -> dict[str, Any]:
    rows = await audit_rows(gw)
    assert len(rows) == 1, [r["outcome"] for r in rows]
    return rows[0]


def booked(gw: Gateway) -> dict[tuple[str, str], float]:
    """aigrid_requests_total by (endpoint, outcome)."""
    return {(s.labels["endpoint"], s.labels["outcome"]): s.value for m in gw.metrics.registry.collect()
            if m.name == "aigrid_requests" for s in m.samples if s.name == "aigrid_requests_total"}
