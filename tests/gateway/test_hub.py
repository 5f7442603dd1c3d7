"""The workers' hub relays calibration observations through a real hub on a Unix socket: every worker's
TTFT calibration learns from every worker's outcomes, none gets its own back, the relay is bounded."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from aigrid.core.calibration import Calibration
from aigrid.core.predict import predict
from aigrid.core.types import EndpointState, Prediction, RequestInfo
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient, HubSharedState
from aigrid.telemetry.shared import LocalReport
from aigrid.telemetry.store import TelemetryStore
from aigrid.telemetry.sync import SharedSync
from tests.core.grid import CITIES, MODELS, SITES, endpoint
from tests.core.test_calibration import TRUE_PREFILL_TPS, true_engine_ms

EP = replace(endpoint("fra"), prefill_tps=TRUE_PREFILL_TPS * 4)  # the spec's prefill rate is 4x wrong
PREDICTION = Prediction(0.0, 0.0, 0.0, model_ahead_ms=10.0, model_own_ms=100.0)


@pytest.fixture
async def work() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aigrid-hub-"))  # short: a Unix socket path has ~100 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def store(shares: bool = True) -> TelemetryStore:
    return TelemetryStore(SITES, (EP,), MODELS, time.monotonic, shares=shares)


def outcomes(n: int, seed: int = 1) -> list[tuple[Prediction, float]]:
    """n requests to EP: the decision's prediction (its uncalibrated modelled parts) and the observed TTFT."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, pending = rng.randint(50, 4000), rng.choice([0, 0, 0, 2000, 8000])
        state = EndpointState(pending_requests=1 if pending else 0, pending_prompt_tokens=pending)
        req = RequestInfo(f"r{i}", "small", prompt_tokens=prompt, client_location=CITIES["frankfurt"])
        p = predict(req, EP, SITES["fra"], state)
        out.append((p, true_engine_ms(prompt, pending, rng) / 1000.0))
    return out


async def workers(hub: Hub, count: int) -> tuple[list[TelemetryStore], list[SharedSync], list[HubClient]]:
    clients = [HubClient(hub.path) for _ in range(count)]
    stores = [store() for _ in range(count)]
    syncs = [SharedSync(s, HubSharedState(c), f"w{i}", time.time) for i, (s, c) in
             enumerate(zip(stores, clients, strict=True))]
    return stores, syncs, clients


async def test_observations_reach_the_other_workers_only_and_the_relay_is_bounded(work: Path) -> None:
    hub = Hub(work / "hub.sock", None, calibration_max=5)
    await hub.start()
    (a, b), (sync_a, sync_b), clients = await workers(hub, 2)
    try:
        for ms in (100, 120, 140):
            a.record_success(EP.id, ms / 1000.0, PREDICTION)
        assert await sync_a.sync_once() and await sync_b.sync_once()
        assert b.calibration(EP.id) == a.calibration(EP.id) and b.calibration(EP.id).n == 3
        assert await sync_a.sync_once()
        assert a.calibration(EP.id).n == 3  # A's own outcomes did not come back to it
        for ms in range(8):  # more than the hub keeps: a late worker gets the newest calibration_max
            a.record_success(EP.id, (200 + ms) / 1000.0, PREDICTION)
        assert await sync_a.sync_once()
        late = store()
        late_sync = SharedSync(late, HubSharedState(clients[0]), "w-late", time.time)
        assert await late_sync.sync_once()
        assert late.calibration(EP.id).n == 5
        assert len(hub._observations) == 5
        assert await sync_b.sync_once() and b.calibration(EP.id).n == 3 + 5
        # three workers reporting: each hears of two others, whose outcomes count a half each
        view = await HubSharedState(clients[1]).exchange(LocalReport("w1", {}, {}, ()))
        assert view.peers == 2
        # pending prompts in time travel through the hub too, merged over the other workers
        queues = {EP.id: ((5.0, 4.0), ((6.0, 100),))}
        await HubSharedState(clients[0]).exchange(LocalReport("w0", {}, {}, (), {}, (), queues))
        view = await HubSharedState(clients[1]).exchange(LocalReport("w1", {}, {}, ()))
        assert view.queues == queues
    finally:
        for c in clients:
            await c.aclose()
        await hub.stop()


async def test_a_4x_wrong_spec_is_corrected_as_fast_with_the_outcomes_split_over_two_workers(work: Path) -> None:
    """One store that sees all 500 outcomes against two workers that each serve every other one and exchange
    through the hub: after every request, the same fit to the last bit; every 10 requests (one 0.1 s
    interval at 100 a second), a fit within a few per cent, from all 500 outcomes rather than the 250 each
    worker served."""
    runs = outcomes(500)
    single = store(shares=False)
    for p, ttft in runs:
        single.record_success(EP.id, ttft, p)
    truth = single.calibration(EP.id)
    assert truth.ready and 3.0 < truth.prefill_coef < 5.0  # the spec's 4x too fast prefill, corrected
    for every in (1, 10):
        hub = Hub(work / f"hub{every}.sock", None)
        await hub.start()
        stores, syncs, clients = await workers(hub, 2)
        try:
            for i, (p, ttft) in enumerate(runs):
                stores[i % 2].record_success(EP.id, ttft, p)
                if (i + 1) % every == 0:  # the worker that served first, then the other
                    for s in (syncs[i % 2], syncs[1 - i % 2]):
                        assert await s.sync_once()
            for s in syncs:  # the last outcomes reach the other worker
                assert await s.sync_once()
            cals = [s.calibration(EP.id) for s in stores]
        finally:
            for c in clients:
                await c.aclose()
            await hub.stop()
        assert all(c.n == 500 for c in cals)
        if every == 1:
            assert cals == [truth, truth]
        for cal in cals:
            for field in ("prefill_coef", "queue_coef"):
                assert abs(getattr(cal, field) / getattr(truth, field) - 1) < 0.05, (every, field, cal, truth)
            assert errors(cal, runs[-100:]) < 0.25


def errors(cal: Calibration, runs: list[tuple[Prediction, float]]) -> float:
    """Median |calibrated prediction - observed| / observed over runs."""
    errs = sorted(abs(cal.engine_ms(p.model_ahead_ms, p.model_own_ms) - t * 1000) / (t * 1000) for p, t in runs)
    return errs[len(errs) // 2]
