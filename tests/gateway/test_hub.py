"""The workers' hub through a real hub on a Unix socket. It relays calibration observations: every worker's
TTFT calibration learns from every worker's outcomes, none gets its own back, the relay is bounded. What a
worker hands over without waiting (settlements, audit records, decisions) leaves in one frame per event-loop
turn, acknowledged once, in order, and none of it is lost on a worker's stop."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord
from aigrid.audit.verify import verify
from aigrid.core.calibration import Calibration
from aigrid.core.predict import predict
from aigrid.core.types import EndpointState, Prediction, RequestInfo
from aigrid.errors import AuditUnavailable
from aigrid.gateway import hub as hub_module
from aigrid.gateway import hub_client as hub_client_module
from aigrid.gateway import hub_protocol
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.decisions import Latest
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubAuditLog, HubClient, HubError, HubQuotaBackend, HubSharedState
from aigrid.security.keys import KeyRing
from aigrid.security.quota_backend import Counter
from aigrid.spec.models import TenantSpec
from aigrid.telemetry.shared import LocalReport
from aigrid.telemetry.store import TelemetryStore
from aigrid.telemetry.sync import SharedSync
from tests.core.grid import CITIES, MODELS, SITES, endpoint
from tests.core.test_calibration import TRUE_PREFILL_TPS, true_engine_ms
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.security.test_quota_ops import until

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
    clients = [HubClient(hub.path, hub.token) for _ in range(count)]
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
        t = time.time()  # wall time: a worker's times within an hour of the hub's are read
        queues = {EP.id: ((t - 1.0, t - 2.0), ((t + 6.0, 100),))}
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


# --- what a worker posts without waiting: settlements, audit records, decisions ------------------------------

class FakeDecision:
    """What the hub client reads of a DecisionRecord: its id and its dict."""

    def __init__(self, rid: str) -> None:
        self.decision = SimpleNamespace(request_id=rid)
        self.status = "running"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.decision.request_id, "status": self.status}


def counting(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Every frame the hub reads, as read."""
    frames: list[list[Any]] = []
    read = hub_module.read_frame

    async def read_and_count(reader: asyncio.StreamReader) -> Any:
        payload = await read(reader)
        frames.append(payload)
        return payload

    monkeypatch.setattr(hub_module, "read_frame", read_and_count)
    return frames


def audit_record(i: int) -> AuditRecord:
    return AuditRecord(ts=1_700_000_000.0 + i, request_id=f"r{i}", tenant="t", key_id="k", model="m")


async def test_one_frame_per_turn_for_the_settlements_records_and_decisions_of_its_requests(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten requests ending in one turn: their settlements, audit records and decisions leave in one frame,
    answered once; the chain holds the records in the worker's order and verifies; the counters are exact;
    a check with no counters costs no call."""
    frames = counting(monkeypatch)
    key = Ed25519PrivateKey.generate()
    hub = Hub(work / "hub.sock", AuditLog(work / "audit.db", key))
    await hub.start()
    client = HubClient(hub.path, hub.token)
    audit, quotas = HubAuditLog(client), HubQuotaBackend(client)
    await audit.start()
    try:
        counter = Counter("q:tpm", 100, 1000, time.time() + 60, 60.0)
        for _ in range(10):  # the reservations: one call each (the hub admits against every worker)
            assert (await quotas.consume([counter]))[0] is None
        assert await quotas.consume([]) == (None, [])  # no limit applies: admitted without asking
        assert await quotas.consume([Counter("q:rpm", 1, 5, counter.expires_at, 60.0)]) == (None, [1])
        frames.clear()
        for i in range(10):  # the ends of ten requests in one turn (no await in between waits)
            await quotas.adjust([Counter("q:tpm", -90, 1000, counter.expires_at, 60.0)])
            await audit.append(audit_record(i))
            await client.publish_decision({"id": f"d{i}", "status": "ok"})
        assert len(audit._unacked) == 10  # posted, not yet acknowledged
        await audit.flush()  # acknowledged: one answer for the batch
        assert len(frames) == 1 and frames[0][1] == "batch" and len(frames[0][2]) == 30, frames
        assert await quotas.value("q:tpm") == 10 * 10  # the posted settlements came before this call
        assert [d["id"] for d in await client.recent_decisions(20)] == [f"d{i}" for i in reversed(range(10))]
        assert audit.lost == 0
    finally:
        await audit.stop()
        await client.aclose()
        await hub.stop()
    report = verify(work / "audit.db", key.public_key())
    assert report.ok and report.records == 10, report.problems
    bodies = [orjson.loads(r[0]) for r in sqlite3.connect(work / "audit.db").execute(
        "SELECT body FROM audit_records ORDER BY seq")]
    assert [b["request_id"] for b in bodies] == [f"r{i}" for i in range(10)]


async def test_a_record_the_hub_refuses_or_never_acknowledges_is_counted_lost(work: Path) -> None:
    """The hub without an audit log refuses the records: each is logged and counted (lost, on_lost), and
    stops counting against accepting(); records posted into a connection that breaks count too."""
    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = HubClient(hub.path, hub.token)
    audit = HubAuditLog(client, max_pending=3, stop_wait_s=0.5)
    lost: list[int] = []
    audit.on_lost = lambda: lost.append(1)
    await audit.start()
    try:
        for i in range(3):
            await audit.append(audit_record(i))
        assert not audit.accepting()  # three unacknowledged: the gateway refuses new requests
        assert audit.backlog() == (3, 3)  # what the worker's aigrid_audit_queue_waiting / _limit show
        await audit.flush()
        assert audit.accepting() and audit.lost == 3 and len(lost) == 3
        assert audit.backlog() == (0, 3)
        await audit.append(audit_record(3))
    finally:
        await hub.stop()  # before it acknowledged the fourth (or refused it)
    await audit.flush()
    assert audit.lost == 4 and len(lost) == 4
    while not client._writer.is_closing():  # the worker has seen its connection end
        await asyncio.sleep(0.01)
    with pytest.raises(AuditUnavailable):  # the hub gone: refused to the caller, as before
        await audit.append(audit_record(9))
    await audit.stop()
    await client.aclose()
    assert audit.lost == 4


async def audited_hub(work: Path) -> tuple[Ed25519PrivateKey, Hub, HubClient, HubAuditLog]:
    """A started hub with an audit log, and one worker's client and audit log on it."""
    key = Ed25519PrivateKey.generate()
    hub = Hub(work / "hub.sock", AuditLog(work / "audit.db", key))
    await hub.start()
    client = HubClient(hub.path, hub.token)
    audit = HubAuditLog(client)
    await audit.start()
    return key, hub, client, audit


async def test_nothing_posted_is_lost_when_a_worker_stops(work: Path) -> None:
    """Records and decisions posted in the very turn the worker closes its connection reach the hub: stop()
    waits for the records' acknowledgement, aclose() writes what is still gathered."""
    key, hub, client, audit = await audited_hub(work)
    try:
        for i in range(50):
            await audit.append(audit_record(i))
        await audit.stop()
        assert audit.lost == 0 and not audit._unacked
        await client.publish_decision({"id": "last", "status": "ok"})
        await client.aclose()  # same turn as the post
        reader = HubClient(hub.path, hub.token)
        for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
            if await reader.decision("last") is not None:
                break
            await asyncio.sleep(0.01)
        assert await reader.decision("last") == {"id": "last", "status": "ok"}
        await reader.aclose()
    finally:
        await hub.stop()
    assert verify(work / "audit.db", key.public_key()).records == 50


async def until_decision(reader: HubClient, decision_id: str, expected: dict, timeout_s: float = 10.0) -> bool:
    """Whether the hub has `expected` for `decision_id` within `timeout_s` (asked every 10 ms)."""
    deadline = time.monotonic() + timeout_s
    while await reader.decision(decision_id) != expected:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_decision_is_posted_once_unless_its_request_runs_long(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short request's decision goes to the hub once, with its outcome; a long one's also while it runs
    (after one to two ticks), so another worker's `aigrid explain` finds it then."""
    monkeypatch.setattr(hub_client_module, "DECISION_INFLIGHT_S", 0.05)
    frames = counting(monkeypatch)
    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client, other = HubClient(hub.path, hub.token), HubClient(hub.path, hub.token)
    try:
        short, long = FakeDecision("short"), FakeDecision("long")
        client.decision_made(short)
        client.decision_made(long)
        short.status = "ok"
        await client.publish_decision(short.to_dict())
        # two ticks (0.1 s) and the hub's answer: waited for, not a fixed 0.2 s (timers run late on a loaded machine)
        assert await until_decision(other, "long", {"id": "long", "status": "running"})
        long.status = "ok"
        await client.publish_decision(long.to_dict())
        assert await until_decision(other, "long", {"id": "long", "status": "ok"})
        posted = [m[1]["id"] for f in frames if f[1] == "batch" for m in f[2]]
        assert posted == ["short", "long", "long"], posted
        assert client._tick is None  # nothing running: no timer
    finally:
        await client.aclose()
        await other.aclose()
        await hub.stop()


async def test_a_hub_out_of_reach_is_logged_and_the_decisions_fall_back_to_this_workers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A worker whose hub cannot be asked: the decision list was empty and a lookup "not found", each without a
    word, and a decision's post was dropped silently. Now each is a warning, and the list shows this worker's."""
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    gw.hub = HubClient(tmp_path / "no-hub.sock")
    await gw.scraper.scrape_once()
    try:
        with caplog.at_level("WARNING", logger="aigrid.hub"):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
                r = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "max_tokens": 4,
                                                                "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
                decision_id = r.headers["x-aigrid-decision"]
                listed = (await c.get("/v1/decisions")).json()["data"]
                assert [d["id"] for d in listed] == [decision_id]  # this worker's own (was: [])
                assert (await c.get("/v1/decisions/dec-0000000000000000")).status_code == 404
        said = [r.getMessage() for r in caplog.records]
        assert any(f"decision {decision_id} not published" in m for m in said), said
        assert any("recent decisions: the workers' hub could not be asked" in m for m in said), said
        assert any("decision dec-0000000000000000: the workers' hub could not be asked" in m for m in said), said
    finally:
        await gw.hub.aclose()


async def test_a_call_too_large_for_a_frame_fails_alone(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame past MAX_FRAME was sent, and its reader dropped the connection: a tenant's conversation of 5 items of
    4 MiB (control characters, 6 bytes each in JSON; 25 such appends make a 93 MiB page), its items listed, broke
    its worker's connection to the hub, failing every other tenant's call in flight there and losing the audit
    records the worker had posted. Now the one call fails (the hub's answer, or the worker's request, not sent),
    and posted messages past a frame's size go in the next frame. (MAX_FRAME made small here.)"""
    monkeypatch.setattr(hub_protocol, "MAX_FRAME", 64 * 1024)
    key, hub, client, audit = await audited_hub(work)
    try:
        await client.call("conversation_create", [{"id": "conv_1", "tenant": "a", "created_at": 0}])
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "\x01" * 4_000}]}
        for _ in range(5):  # 24 KB each in JSON
            assert "items" in await client.call("conversation_append", ["a", "conv_1", [item], None])
        other = asyncio.ensure_future(client.call("value", "q:{b}:tpm"))  # another tenant's, in flight meanwhile
        for i in range(3):
            await audit.append(audit_record(i))
        with pytest.raises(HubError, match="too large"):  # 120 KB of items in one page
            await client.call("conversation_page", ["a", "conv_1", None, 20, "asc"])
        assert await other == 0
        with pytest.raises(HubError, match="too large"):  # the worker's side: a request past a frame
            await client.call("conversation_append", ["a", "conv_1", [item] * 3, None])
        for i in range(40):  # 40 decisions of 4 KB in one turn: more than one frame's worth, all delivered
            await client.publish_decision({"id": f"d{i}", "status": "ok", "note": "n" * 4_000})
        assert [(await client.decision(f"d{i}") or {}).get("id") for i in (0, 20, 39)] == ["d0", "d20", "d39"]
        await audit.flush()
        assert audit.lost == 0 and not client._writer.is_closing()
    finally:
        await audit.stop()
        await client.aclose()
        await hub.stop()
    assert verify(work / "audit.db", key.public_key()).records == 3


class OtherTenants(FakeDecision):
    """A decision of another tenant, as the decision log holds it."""

    tenant = "eu-bank"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "tenant": self.tenant}


async def test_a_tenants_latest_decisions_are_read_where_they_are_kept(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's `GET /v1/decisions?limit=1` had the hub (or this worker's log) send the newest 1,000 decisions of
    every tenant and kept its own: about 2.6 MB from the hub a call at its 20,000 decisions
    (scripts/decisions_read_cost.py), for a GET no rate limit counts, and a tenant whose decisions were older than
    those 1,000 saw none. The hub and the log now answer the tenant's newest only."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "test-secret-0123456789abcdef")
    ring = KeyRing(b"test-secret-0123456789abcdef")
    tenant = {"authorization": f"Bearer {ring.issue('default').api_key}"}
    ops = {"authorization": f"Bearer {ring.issue('ops').api_key}"}
    ring.save(work / "keys.json")
    spec = spec_in(work, enforce=True)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "ops": TenantSpec(operator=True)}})
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = gw.hub = HubClient(hub.path, hub.token)
    answered: list[int] = []
    call = client.call

    async def counted(op: str, arg: Any, timeout: float = 5.0) -> Any:
        got = await call(op, arg, timeout)
        if op == "decisions_recent":
            answered.append(len(got))
        return got

    monkeypatch.setattr(client, "call", counted)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "max_tokens": 4,
                                                            "messages": [{"role": "user", "content": "hi"}]},
                             headers=tenant)
            mine = r.headers["x-aigrid-decision"]
            for i in range(1200):  # newer, of another tenant: in the hub and in this worker's log
                other = OtherTenants(f"dec-{i:016x}")
                gw.decisions.add(other)  # type: ignore[arg-type]
                await client.publish_decision(other.to_dict())
            assert [d["id"] for d in (await c.get("/v1/decisions?limit=2", headers=ops)).json()["data"]] == \
                ["dec-00000000000004af", "dec-00000000000004ae"]  # every tenant's, to an operator
            answered.clear()
            got = (await c.get("/v1/decisions?limit=1", headers=tenant)).json()["data"]
            assert [d["id"] for d in got] == [mine] and answered == [1]  # the hub sent the one answered
            gw.hub = None  # one process: this worker's log
            got = (await c.get("/v1/decisions?limit=5", headers=tenant)).json()["data"]
            assert [d["id"] for d in got] == [mine]
    finally:
        await gw.guard.stop()
        await client.aclose()
        await hub.stop()


def test_the_latest_forget_the_oldest_and_each_tenants_read_alone() -> None:
    latest: Latest[int] = Latest(3)
    for i, tenant in enumerate("abab"):
        latest.add(f"k{i}", tenant, i)
    assert latest.recent(5) == [3, 2, 1] and latest.get("k0") is None  # k0 forgotten, from a's too
    assert latest.recent(5, "a") == [2] and latest.recent(1, "b") == [3] and latest.recent(5, "c") == []
    latest.add("k1", "b", 10)  # the same id again: the newest, once
    assert latest.recent(5) == [10, 3, 2] and latest.recent(5, "b") == [10, 3]
    latest.add("k4", "c", 4)  # over: b holds the most (two), its oldest goes
    assert latest.recent(5) == [4, 10, 2]
    latest.add("k5", "c", 5)  # over: now c holds the most
    assert latest.recent(5) == [5, 10, 2] and latest._of_tenant.keys() == {"a", "b", "c"}


def test_one_tenants_traffic_does_not_push_the_others_decisions_out() -> None:
    latest: Latest[str] = Latest(100)
    for i in range(10):
        latest.add(f"quiet-{i}", "quiet", f"q{i}")
    for i in range(10_000):
        latest.add(f"noisy-{i}", "noisy", f"n{i}")
    assert latest.recent(100, "quiet") == [f"q{i}" for i in reversed(range(10))]  # before: none left
    assert latest.get("quiet-0") == "q0"
    assert latest.recent(1, "noisy") == ["n9999"] and len(latest.recent(1000)) == 100


def test_one_worker_s_pending_prompts_neither_void_nor_crowd_out_another_s(tmp_path: Path) -> None:
    """R (twenty-second session's review): the hub merged the workers' pending prompts unbounded, so one worker's
    anchor at 1e308 won the merge and voided the others' once the receiver bounded it, and one worker's 10,000
    arrivals filled the receiver's 4,096 cut. Each worker's report is bounded first (store.merge_peer_reports)."""
    hub, now = Hub(tmp_path / "hub.sock", None), time.time()
    flood = [[now + 1 + i / 1e5, 1] for i in range(10_000)]
    reports = {"evil": {"fra": [[1e308, 1e308], flood]}, "good": {"fra": [[now - 1, now - 2], [[now + 9, 70]]]}}
    for worker, queues in reports.items():
        hub.exchange({"gateway": worker, "inflight": {}, "circuits": {}, "affinity": [], "queues": queues})
    anchor, arrivals = hub.exchange({"gateway": "me", "inflight": {}, "circuits": {}, "affinity": []})["queues"]["fra"]
    assert anchor == [now - 1, now - 2]  # before: [1e308, 1e308]
    assert [now + 9, 70] in arrivals and len(arrivals) <= 4096  # before: 10,001 (the receiver kept the first 4,096)


def test_one_tenants_affinity_flood_leaves_the_others_entries_in_a_new_workers_replay(tmp_path: Path) -> None:
    """(7 Dec 2026, thirty-seventh session, brief FIX9) The hub relays the affinity entries the workers learn and a
    new worker replays them all at its first exchange; past `affinity_max` the oldest of all went, so one tenant's
    flood of sessions pushed every other tenant's entries out of the replay. Now the tenant holding the most
    (shared.affinity_tag) loses its oldest: the quiet tenant's entries stay, the noisy one's newest are kept."""
    hub = Hub(tmp_path / "hub.sock", None, affinity_max=10)
    quiet = [[f"quiet.k{i}", "fra-a"] for i in range(3)]
    noisy = [[f"noisy.k{i}", "iad-b"] for i in range(50)]
    for report in (quiet, noisy):
        hub.exchange({"gateway": "w1", "inflight": {}, "circuits": {}, "affinity": report})
    replay = hub.exchange({"gateway": "new", "inflight": {}, "circuits": {}, "affinity": []})["affinity"]
    assert replay == quiet + noisy[-7:], replay  # before: the noisy tenant's newest 10, the quiet one's none
    assert hub.exchange({"gateway": "new", "inflight": {}, "circuits": {}, "affinity": []})["affinity"] == []
    hub.exchange({"gateway": "w1", "inflight": {}, "circuits": {}, "affinity": [["quiet.k3", "fra-a"]]})
    assert hub.exchange({"gateway": "new", "inflight": {}, "circuits": {}, "affinity": []})["affinity"] == [
        ["quiet.k3", "fra-a"]]  # read from where it left off, as before


@pytest.mark.parametrize("applied", [True, False])
async def test_a_settlement_whose_connection_broke_before_the_reply_is_sent_again_and_applied_once(
        work: Path, applied: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The connection breaks between the settlement's post and the hub's acknowledgement, the hub having applied it
    or not: the counters end exactly as if nothing broke, nothing counted unsettled. Before, the settlement was
    logged lost: the reservation stood where the hub had not applied it (300 tokens charged for 120 used). Past
    RESEND_WITHIN_S of its first post (the hub may have forgotten its op) it is lost, logged and counted."""
    from aigrid.security.quotas import Quotas
    from tests.security.test_quota_extend import ALICE, BUDGET, NOW, RPM, RULES, TPM

    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = HubClient(hub.path, hub.token)
    backend = HubQuotaBackend(client)
    quotas = Quotas(RULES, backend, clock=lambda: NOW)
    handle, breaks = hub.handle, [1]
    adjusts: list[str] = []  # the op of each settlement that reached the hub
    copied = asyncio.Event()  # the second one handled

    async def breaking(op: str, arg: Any) -> Any:
        if op == "adjust":
            adjusts.append(arg["op"])
        if op == "adjust" and breaks:
            breaks.pop()
            result = await handle(op, arg) if applied else None
            assert client._writer is not None
            client._writer.transport.abort()  # the worker's end: the hub's reply never arrives
            return result
        result = await handle(op, arg)
        if op == "adjust" and len(adjusts) == 2:
            copied.set()
        return result

    async def counters() -> tuple[int, int, int]:  # read in the hub's own store (not over the breaking connection)
        return await hub.quotas.value(RPM), await hub.quotas.value(TPM), await hub.quotas.value(BUDGET)

    monkeypatch.setattr(hub, "handle", breaking)
    try:
        r = await quotas.admit(ALICE, 300)
        await quotas.settle(r, 120)
        await asyncio.wait_for(copied.wait(), 30)  # the copy, posted on a new connection, handled by the hub
        assert len(adjusts) == 2 and adjusts[0] == adjusts[1] and adjusts[0]  # the first post and its copy, one op
        assert await counters() == (1, 120, 120)  # applied once (the copy, where the first was applied, applied nothing)
        assert await until(lambda: not client._batches and not backend._resend)  # the copy acknowledged: no more
        assert len(adjusts) == 2 and backend.unsettled == 0 and await counters() == (1, 120, 120)
        assert not breaks  # the connection did break

        breaks.append(1)  # again, the copy sent too late
        backend._resend.within_s = 0.0
        r = await quotas.admit(ALICE, 300)
        await quotas.settle(r, 100)
        for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
            if backend.unsettled:
                break
            await asyncio.sleep(0.01)
        assert backend.unsettled == 1 and "quota settlement lost" in caplog.text
        assert await counters() == ((2, 220, 220) if applied else (2, 420, 420))
    finally:
        await client.aclose()
        await hub.stop()


async def test_settlements_waiting_to_be_sent_again_are_counted_lost_when_the_worker_stops(work: Path) -> None:
    """The hub out of reach after the connection broke: the settlement waits (tried every RESEND_PAUSE_S); the worker
    stopping, it is lost, logged and counted, not dropped silently."""
    from aigrid.security.quotas import Quotas
    from tests.security.test_quota_extend import ALICE, NOW, RULES

    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = HubClient(hub.path, hub.token)
    backend = HubQuotaBackend(client)
    quotas = Quotas(RULES, backend, clock=lambda: NOW)
    handle = hub.handle

    async def breaking(op: str, arg: Any) -> Any:
        if op == "adjust":
            client.path = work / "gone.sock"  # no hub there: every try to reach it again fails
            assert client._writer is not None
            client._writer.transport.abort()
            return None
        return await handle(op, arg)

    hub.handle = breaking  # type: ignore[method-assign]
    try:
        await quotas.settle(await quotas.admit(ALICE, 300), 120)
        for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
            if backend._resend:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(backend._resend) == 1 and backend.unsettled == 0  # waiting, tried again
        await client.aclose()
        assert not backend._resend and backend.unsettled == 1
    finally:
        await hub.stop()


async def test_a_settlement_posted_while_the_hub_cannot_be_reached_is_sent_once_it_can(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub out of reach for a moment when a request settles (no connection can be opened; nothing sent): the
    settlement waits under its op and is sent once the hub is back; the counters end exactly as if nothing broke,
    nothing counted unsettled. Before, it was tried once more at once, failed again and was counted unsettled: the
    reservation stood (300 tokens charged for 120 used)."""
    from aigrid.security.quotas import Quotas
    from tests.security.test_quota_extend import ALICE, BUDGET, NOW, RPM, RULES, TPM

    monkeypatch.setattr(hub_client_module, "RESEND_PAUSE_S", 0.02)
    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = HubClient(hub.path, hub.token)
    backend = HubQuotaBackend(client)
    quotas = Quotas(RULES, backend, clock=lambda: NOW)

    async def counters() -> tuple[int, int, int]:
        return await hub.quotas.value(RPM), await hub.quotas.value(TPM), await hub.quotas.value(BUDGET)

    handle, adjusts = hub.handle, list[str]()  # the op of each settlement that reached the hub

    async def counting(op: str, arg: Any) -> Any:
        if op == "adjust":
            adjusts.append(arg["op"])
        return await handle(op, arg)

    monkeypatch.setattr(hub, "handle", counting)
    try:
        r = await quotas.admit(ALICE, 300)
        client.path = work / "gone.sock"  # the hub out of reach: no connection can be opened
        assert client._writer is not None
        client._writer.transport.abort()
        await asyncio.sleep(0.01)
        await quotas.settle(r, 120)  # before: UpstreamFailed after a second try (the reservation stood)
        await asyncio.sleep(0.1)
        assert len(backend._resend) == 1 and await counters() == (1, 300, 300)  # waiting, tried again
        client.path = hub.path  # back
        assert await until(lambda: not backend._resend and bool(adjusts) and not client._batches)  # sent, acknowledged
        assert len(adjusts) == 1  # sent once: nothing more waits to be sent, so no later copy can come
        assert await counters() == (1, 120, 120) and backend.unsettled == 0
    finally:
        await client.aclose()
        await hub.stop()


@pytest.mark.parametrize("order", ["connection-first", "death-first"])
async def test_a_dead_worker_s_unsettled_reservations_are_released_once_its_connection_is_read_to_its_end(
        work: Path, order: str) -> None:
    """A worker (its connection's peer pid: here this process) dies with requests in flight: the reservations it
    charged and never settled are released, those it settled stay as settled (one settled with nothing to correct, one
    whose settlement was posted just before it died), and a connection that broke and came back loses nothing. Before,
    a killed worker's in-flight reservations stayed charged for their windows (a day, for a budget)."""
    from aigrid.security.quotas import Quotas
    from tests.security.test_quota_extend import ALICE, BUDGET, NOW, RPM, RULES, TPM

    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = HubClient(hub.path, hub.token)
    quotas = Quotas(RULES, HubQuotaBackend(client), clock=lambda: NOW)

    async def counters() -> tuple[int, int, int]:
        return await hub.quotas.value(RPM), await hub.quotas.value(TPM), await hub.quotas.value(BUDGET)

    try:
        running = await quotas.admit(ALICE, 100)  # in flight when the worker dies, a tool loop's second turn charged
        assert await quotas.extend(running, 100) is not None
        await quotas.settle(await quotas.admit(ALICE, 100), 50)
        await quotas.settle(await quotas.admit(ALICE, 100), 100)  # used what it reserved: nothing to correct
        await quotas.settle(await quotas.admit(ALICE, 0, requests_only=True), 0)  # a file upload: counted, settled
        assert client._writer is not None
        client._writer.transport.abort()  # the connection breaks; the worker reconnects at its next call
        last = await quotas.admit(ALICE, 100)
        assert await counters() == (5, 450, 450)
        handle, go = hub.handle, asyncio.Event()

        async def slow(op: str, arg: Any) -> Any:  # the hub behind on the worker's frames (a full audit queue)
            if op == "adjust":
                await go.wait()
            return await handle(op, arg)

        if order == "death-first":
            hub.handle = slow  # type: ignore[method-assign]
        await quotas.settle(last, 30)  # posted: in the worker's last frame when it dies
        await asyncio.sleep(0.01)  # the frame written to the socket

        def kill() -> None:  # the worker's process ends: its connection closes, it never connects again
            client.path = work / "gone.sock"
            assert client._writer is not None
            client._writer.transport.abort()

        if order == "connection-first":
            kill()
            assert await until(lambda: not hub._conns)  # read to its end
            assert await counters() == (5, 380, 380)  # not known dead yet: kept (a worker may reconnect)
            await hub.worker_lost("w0", 0, os.getpid(), -9)
        else:
            kill()
            await hub.worker_lost("w0", 0, os.getpid(), -9)  # known dead before its connection is read to its end
            assert await counters() == (5, 450, 450)  # nothing released while its last settlement waits unread
            go.set()
        assert await until(lambda: _is(counters(), (4, 180, 180)))  # the running one's 200 tokens given back
        assert hub.held._by_pid == {} and hub.held._pid_of == {}
    finally:
        await client.aclose()
        await hub.stop()


async def _is(got: Awaitable[Any], want: Any) -> bool:
    return bool(await got == want)
