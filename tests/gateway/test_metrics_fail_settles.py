"""A metrics write that fails (a prometheus multiprocess file that cannot grow on a full disk: an OSError from mmap)
never stops a request's settlement (routes.close_exchange, proxy.Proxy.finish through observe.MetricsWrites): the
quota settled with the engine's usage, the audit record written, nothing left in flight, the client answered, and
the failure logged as a WARNING. Until the thirtieth session the OSError of observe() skipped Guard.finish."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import Gauge
from starlette.routing import WebSocketRoute
from starlette.types import Message

from aigrid.engines.openai_compat import ModelCard
from aigrid.engines.protocol import EngineStats
from aigrid.errors import AuditUnavailable, EngineUnavailable, QuotaUnavailable, UpstreamFailed
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.guard import Guard
from aigrid.gateway.hub_client import HubAuditLog, HubClient, HubQuotaBackend
from aigrid.gateway.metrics import GatewayMetrics
from aigrid.gateway.observe import MetricsWrites
from aigrid.gateway.responses_socket import ResponsesSocket
from aigrid.gateway.wiring import upstream
from aigrid.gateway.workers import _worker_gateway, worker_spec
from aigrid.security.keys import KeyRing
from aigrid.security.quota_backend import Counter, MemoryQuotaBackend
from aigrid.spec.models import QuotaSpec, TenantSpec
from aigrid.telemetry.shared import SharedView
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.metered_gateway import TENANT, balance, inflight, metered_gateway, the_one_record

SECRET = "test-secret-0123456789abcdef"
CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}

BROKEN = ("genai_duration", "genai_ttft", "genai_tokens", "genai_tpot", "tpot", "ttft", "ttft_ratio", "requests",
          "tokens", "audit_lost", "audit_waiting", "audit_limit", "quota_unsettled", "retries", "rejected", "hedges",
          "hedge_wins", "continuations")
"""The metrics a request's close and its engine attempts write (close_exchange; Proxy: forward, finish, _fail...)."""


class FullDisk:
    """A metric whose every write raises as a multiprocess metrics file that cannot grow does."""

    writes = 0

    def labels(self, *_: Any) -> FullDisk:
        return self

    def _raise(self, *_: Any) -> None:
        FullDisk.writes += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    inc = dec = set = observe = _raise


@pytest.fixture
async def broken(tmp_path: Path, fakes: dict[str, FakeEngine],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    gw = await metered_gateway(tmp_path, fakes, QuotaSpec(requests_per_min=1000, tokens_per_min=1_000_000))
    for name in BROKEN:
        monkeypatch.setattr(gw.metrics, name, FullDisk())
    gw.metrics._audit_written = [None, None]  # the backlog gauges written at the request's close
    FullDisk.writes = 0
    yield gw
    await gw.guard.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_failing_metrics_write_still_settles_audits_and_answers(
        broken: Gateway, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        if stream:
            async with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=TENANT) as r:
                assert r.status_code == 200
                assert b"[DONE]" in b"".join([chunk async for chunk in r.aiter_raw()])
        else:
            r = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    row = await the_one_record(broken)
    assert row["outcome"] == "ok" and (row["prompt_tokens"], row["completion_tokens"]) == (5, 4)
    assert await balance(broken) == 9  # settled with the engine's usage, not the reservation
    assert inflight(broken) == 0
    assert FullDisk.writes >= 3  # the booking, the close's GenAI metrics and its backlog gauges were tried
    warnings = [r.getMessage() for r in caplog.records if "were not written" in r.getMessage()]
    assert warnings and "No space left on device" in warnings[0]


async def test_a_failing_metrics_write_still_releases_failed_attempts(
        broken: Gateway, fakes: dict[str, FakeEngine], caplog: pytest.LogCaptureFixture) -> None:
    """Every engine down: each failed attempt's count (Proxy._fail) and the refusal's (aigrid_rejected) fail too; the
    client reads the gateway's 502, each attempt released, the record written, nothing charged."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    for f in fakes.values():
        f.down = True
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
    row = await the_one_record(broken)
    assert row["outcome"] == "error:upstream_failed"
    assert await balance(broken) == 0 and inflight(broken) == 0
    assert any("were not written" in r.getMessage() for r in caplog.records)


def test_failed_writes_are_logged_once_per_warn_every(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    monkeypatch.setattr("aigrid.gateway.observe.WARN_EVERY", 10)
    written, done = MetricsWrites(), []

    def fail() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    for _ in range(25):
        written("/v1/chat/completions", fail)
    written("/v1/chat/completions", lambda: done.append(1))
    assert written.failed == 25 and done == [1]
    assert [r.getMessage().split("(")[1].split(" ")[0] for r in caplog.records] == ["1", "11", "21"]


async def test_a_failing_rejected_count_still_answers_the_error_in_its_envelope(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """routes.Audited counts a refusal (503) and a bug's 500 in aigrid_requests_rejected_total before answering it:
    a write that raised left the except block with no answer (Starlette's plain-text 500, no envelope, no
    x-request-id). Written through MetricsWrites: the error's own envelope, the failure logged."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    monkeypatch.setattr(broken.metrics, "rejected", FullDisk())

    async def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    async def busy(*args: object, **kwargs: object) -> None:
        raise QuotaUnavailable("the quota store is unreachable")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        for admit_call, status, code in ((bug, 500, "internal_error"), (busy, 503, QuotaUnavailable.code)):
            monkeypatch.setattr(broken.guard, "admit_call", admit_call)
            r = await c.get("/v1/models", headers=TENANT)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
            assert r.headers["x-request-id"]
    assert FullDisk.writes >= 2  # the two counts tried (and the close's own writes)
    assert [m for m in (r.getMessage() for r in caplog.records) if "were not written" in m]


ADMISSION = ("admission", "admission_wait", "admission_waiting")
"""The admission queue's metrics (admission.py: _count, _gauge, the wait's histogram)."""


@pytest.mark.parametrize("queued", [False, True], ids=["from_the_start", "once_queued"])
async def test_a_failing_admission_write_still_dispatches_the_queued_request_and_settles_the_finished_one(
        broken: Gateway, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, queued: bool) -> None:
    """A request waits in the admission queue while another is held at its engine; the held one's close
    (routes.close_exchange) releases its place, which dispatches the waiting one (Admission.release -> drain), whose
    metrics raise ENOSPC. Until the thirtieth session the release raised: the finished request's quota was not
    settled nor its record written, and the dispatched one (already booked in the ledger) answered a 500; failing
    from the start, the waiting request's entry raised (a 500) and left it in the queue, dispatched later to nobody.
    `queued`: the queue's metrics fail only once the second request waits (the release's writes alone)."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")

    def full_disk() -> None:
        for name in ADMISSION:
            monkeypatch.setattr(broken.metrics, name, FullDisk())

    if not queued:
        full_disk()
    broken.admission.poll_s = 3600.0  # only the held request's release moves the queue
    gate = asyncio.Event()
    for f in fakes.values():
        monkeypatch.setattr(f, "open", _held(f.open, gate))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        first = asyncio.create_task(c.post("/v1/chat/completions", json=CHAT, headers=TENANT))
        assert await _until(lambda: inflight(broken) == 1)  # held at its engine
        for f in fakes.values():  # every engine now reports a full queue: the next request waits
            f.stats_value = EngineStats(running=4, waiting=64)
        await broken.scraper.scrape_once()
        second = asyncio.create_task(c.post("/v1/chat/completions", json=CHAT, headers=TENANT))
        assert await _until(lambda: len(broken.admission.queue) == 1)
        if queued:
            full_disk()
        for f in fakes.values():  # capacity frees: the first one's release dispatches the second
            f.stats_value = EngineStats(running=0, waiting=0)
        await broken.scraper.scrape_once()
        gate.set()
        answers = await asyncio.gather(first, second)
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    rows = await audit_rows(broken)
    assert [(r["outcome"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [("ok", 5, 4)] * 2
    assert await balance(broken) == 18  # both settled with the engine's usage
    assert inflight(broken) == 0 and len(broken.admission.queue) == 0 and not broken.admission.local
    assert broken.proxy.written.failed == FullDisk.writes > 0  # each failed write logged, none the requests'
    assert any("were not written" in r.getMessage() for r in caplog.records)


async def test_a_failing_rejected_count_leaves_a_client_error_its_own_status(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The model routes and embeddings count each refusal (aigrid_requests_rejected_total) just before raising it:
    a write that raised turned the client's 400 into a 500 internal_error. Now the client reads its own error."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    for name in ADMISSION:
        monkeypatch.setattr(broken.metrics, name, FullDisk())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        calls = (("/v1/chat/completions", {"model": "smollm2-135m"}, 400, "missing_required_parameter"),  # no messages
                 ("/v1/embeddings", {"model": "x" * 300, "input": "hi"}, 400, "invalid_request"),
                 # refused by the admission queue (its count too) before any engine: a 503, not a 500
                 ("/v1/chat/completions", {**CHAT, "deadline_ms": 0.5}, 503, "deadline_unmeetable"))
        for path, body, status, code in calls:
            r = await c.post(path, json=body, headers=TENANT)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert [r["outcome"] for r in await audit_rows(broken)] == [
        "error:missing_required_parameter", "error:invalid_request", "error:deadline_unmeetable"]
    assert inflight(broken) == 0
    assert [m for m in (r.getMessage() for r in caplog.records) if "were not written" in m]


def _held(opened: Any, gate: asyncio.Event) -> Any:
    """An engine's `open` that waits for `gate` first."""

    @asynccontextmanager
    async def held(path: str, body: bytes) -> AsyncIterator[Any]:
        await gate.wait()
        async with opened(path, body) as upstream:
            yield upstream

    return held


async def _until(check: Any, timeout: float = 30.0) -> bool:
    """Whether `check()` came true within `timeout` (polled: at once on an idle machine)."""
    for _ in range(int(timeout / 0.01)):
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/v1/responses", b"{not json", "invalid_json"),  # create: the body read (responses_api.create)
    ("/v1/responses/compact", b"{not json", "invalid_json"),  # compact: the body read
    ("/v1/responses", orjson.dumps({"model": "smollm2-135m", "input": "hi", "conversation": "conv_1",
                                    "context_management": [{"type": "compaction"}]}), "not_found"),  # its _prepare's
    ("/v1/responses", orjson.dumps({"model": "no-such-model", "input": "hi", "background": True}), "model_not_found"),
], ids=["create", "compact", "auto_compaction", "background"])
async def test_a_failing_rejected_count_leaves_a_responses_refusal_its_own_status(
        broken: Gateway, caplog: pytest.LogCaptureFixture, path: str, body: bytes, code: str) -> None:
    """The Responses door's refusals (create's and compact's body, automatic compaction's checks, a background
    create's) counted aigrid_requests_rejected_total bare before raising: on a full disk the client's 4xx was a 500
    internal_error until the thirtieth session (X4). Now they go through routes.count_rejected."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        r = await c.post(path, content=body, headers={**TENANT, "content-type": "application/json"})
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == code, r.text
    assert (await the_one_record(broken))["outcome"] == f"error:{code}"
    assert broken.proxy.written.failed >= 1
    assert [m for m in (r.getMessage() for r in caplog.records) if "were not written" in m]


async def test_a_failing_rejected_count_still_refuses_a_socket_with_its_own_error(broken: Gateway) -> None:
    """A refused WebSocket handshake (here a page of another origin: 403) counted its refusal bare: raised, the
    socket got no denial (the server's 500) and no audit record was written. Now: its 403, and its record."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await build_app(broken)(_socket_scope((b"origin", b"http://evil.example")), receive, send)
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403, sent
    assert (await the_one_record(broken))["outcome"] == "error:cross_origin_websocket"
    assert broken.proxy.written.failed >= 1


async def test_a_socket_whose_gauge_cannot_be_written_is_served_and_audited(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """aigrid_responses_sockets (inc at the accept, dec at the close) was written bare: raised at the accept, the
    socket was never answered; raised at the close, the tenant's open count stayed up and close_exchange (its audit
    record) was skipped. Now the socket is accepted, closed, counted back and audited."""
    monkeypatch.setattr(broken.metrics, "responses_sockets", FullDisk())
    messages: Iterator[Message] = iter([{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages, {"type": "websocket.disconnect", "code": 1000})

    async def send(message: Message) -> None:
        sent.append(message)

    app = build_app(broken)
    sockets = next(r.endpoint for r in app.routes if isinstance(r, WebSocketRoute))
    assert isinstance(sockets, ResponsesSocket)
    await app(_socket_scope(), receive, send)
    assert sent and sent[0]["type"] == "websocket.accept", sent
    assert (await the_one_record(broken))["outcome"] == "ok"  # its close audited
    assert (sockets.sockets, sockets.open, sockets.keyed) == (0, {}, {})  # counted back
    assert broken.proxy.written.failed == FullDisk.writes >= 2  # the inc and the dec (and the close's), logged


async def test_a_failing_metrics_write_leaves_an_operator_refusal_its_own_status(
        tmp_path: Path, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused operator check (/metrics with security.metrics: operator; /healthz's details) while the audit log
    takes no records counts audit_lost: written bare, the 401 or 403 was a 500 until the thirtieth session (X4)."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    tenant = ring.issue("eu-bank").api_key
    ring.save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    spec = spec.model_copy(update={"security": spec.security.model_copy(update={"metrics": "operator"})})
    gw = build_gateway(spec, fakes, rng=random.Random(3), sleep=_no_sleep)
    monkeypatch.setattr(gw.metrics, "audit_lost", FullDisk())
    monkeypatch.setattr(gw.guard, "audit_accepting", lambda: False)  # the audit log full or stopped
    FullDisk.writes = 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        keyless = await c.get("/metrics")
        a_tenant = await c.get("/metrics", headers={"authorization": f"Bearer {tenant}"})
    assert (keyless.status_code, keyless.json()["error"]["code"]) == (401, "missing_api_key"), keyless.text
    assert (a_tenant.status_code, a_tenant.json()["error"]["code"]) == (403, "operator_only"), a_tenant.text
    assert gw.proxy.written.failed == FullDisk.writes == 2  # audit_lost's, each logged


async def test_a_scrape_of_metrics_answers_when_its_gauges_cannot_be_written(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /metrics sets the in-flight and audit backlog gauges before the exposition: raised on a full disk, the
    scrape itself failed (a 500), so nothing of the grid could be read while the disk was full. Now it answers."""

    def full(*_: Any) -> None:
        FullDisk().inc()

    monkeypatch.setattr(broken.metrics, "set_inflight", full)
    monkeypatch.setattr(broken.metrics, "set_audit_backlog", full)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and "aigrid_" in r.text, r.text[:300]
    assert broken.proxy.written.failed == FullDisk.writes == 2


def _socket_scope(*extra: tuple[bytes, bytes]) -> dict[str, Any]:
    """The ASGI scope of a WebSocket handshake to /v1/responses by the tenant `metered` (a server that can deny it
    with an HTTP answer), with `extra` headers."""
    return {"type": "websocket", "path": "/v1/responses", "raw_path": b"/v1/responses", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1"), *extra, *((k.encode(), v.encode()) for k, v in TENANT.items())],
            "scheme": "ws", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "subprotocols": [],
            "asgi": {"version": "3.0"}, "extensions": {"websocket.http.response": {}}}


async def test_a_charge_given_up_unreleased_is_counted_without_raising_on_a_full_disk(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Quotas._give_up (a failed charge whose release the store keeps refusing; in the charge's own except when
    the retries are full) told aigrid_quota_unreleased_total bare: raised, the OSError took the place of the store's
    error (the refusal a 500) until the thirtieth session (X4). Now it is counted through Proxy.written."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    # its value's file (the counter's own, as wired at build time): as a multiprocess file that cannot grow raises
    monkeypatch.setattr(broken.metrics.quota_unreleased, "_value", FullDisk())
    broken.guard.quotas._give_up("op-1", "the store did not take its release")
    assert broken.guard.quotas.unreleased == 1 and broken.proxy.written.failed == FullDisk.writes == 1
    assert any("quota releases were not written" in r.getMessage() for r in caplog.records)


class _OnePeer:
    """A shared state whose other gateway holds one request at every endpoint."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints

    async def exchange(self, report: Any) -> SharedView:
        return SharedView(inflight={e: (1, 10, 0) for e in self.endpoints}, peers=1)

    async def aclose(self) -> None:
        return None


async def test_a_shared_state_exchange_is_applied_when_its_metrics_cannot_be_written(
        tmp_path: Path, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared-state exchange's metrics (aigrid_shared_sync_seconds, the in-flight gauge) were written bare
    before the view was applied (SharedSync.sync_once): on a full disk every exchange raised and the gateway routed
    on the view it last had (its last_ok not moved, a failure never marked stale). Now the view is applied and the failed writes logged."""
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, fakes, rng=random.Random(3), sleep=_no_sleep,
                       shared=_OnePeer([e.id for e in spec.endpoints]))
    monkeypatch.setattr(gw.metrics, "shared_sync", FullDisk())
    monkeypatch.setattr(gw.metrics, "set_inflight", lambda *_: FullDisk().inc())
    FullDisk.writes = 0
    assert gw.sync is not None
    await gw.sync.sync_once()
    assert gw.sync.last_ok is not None and gw.sync.stale_since is None
    assert gw.store._live[spec.endpoints[0].id].remote is not None  # the peer's view applied
    assert gw.proxy.written.failed == FullDisk.writes == 2


async def test_a_worker_counts_a_lost_record_or_settlement_without_raising_on_a_full_disk(tmp_path: Path) -> None:
    """A worker's hub client tells aigrid_audit_lost_total / aigrid_quota_unsettled_total of a record or a settlement
    the hub refused (its batch's callbacks, in the hub client's reader): told bare, an OSError of a full disk ended
    the reader (every call waiting then failed: the connection 'broke') until the thirtieth session (X4)."""
    spec = spec_in(tmp_path)
    up = upstream(spec)
    try:
        config = {"spec": worker_spec(spec), "urls": {e.id: "http://127.0.0.1:9" for e in spec.endpoints},
                  "embedded_key": None, "workers": 2}
        gw = _worker_gateway(spec, config, 0, HubClient(tmp_path / "hub.sock"), up)  # built: nothing is called
        for name in ("audit_lost", "quota_unsettled"):  # each counter's value file, as wired at build time
            getattr(gw.metrics, name)._value = FullDisk()
        FullDisk.writes = 0
        audit, quotas = gw.guard._audit_sink, gw.guard.quotas.backend  # the hub's, as wired
        assert isinstance(audit, HubAuditLog) and isinstance(quotas, HubQuotaBackend)
        audit._acknowledged(*_unacked(audit), "the hub refused it")
        quotas._lose("the hub refused it", {"op": None})
        assert (audit.lost, quotas.unsettled) == (1, 1)
        assert gw.proxy.written.failed == FullDisk.writes == 2
    finally:
        await up.aclose()


def _unacked(audit: HubAuditLog) -> tuple[int]:
    """A record the hub has not acknowledged yet (as HubAuditLog.append leaves it), by its number."""
    audit._unacked[7] = "{}"
    return (7,)


class _SettleFails(MemoryQuotaBackend):
    """Admits as usual; settling raises, as Redis or the workers' hub do when they are gone."""

    async def adjust(self, counters: Sequence[Counter], op: str | None = None) -> None:
        raise UpstreamFailed("quota counters unavailable: hub gone")


@pytest.mark.parametrize("failing", ["audit_lost", "audit_waiting"])
async def test_each_of_a_closes_counts_is_written_when_another_cannot_be(
        tmp_path: Path, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """A request whose record is lost (the audit log refusing it) and whose quota is not settled (the store gone):
    its close counts both and writes the audit backlog gauges (routes._count_close). The three were one guarded call
    until the thirty-first session: aigrid_audit_lost_total or the backlog gauge failing (ENOSPC) skipped the writes
    after it, aigrid_quota_unsettled_total uncounted. Now each is its own call."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "metered": TenantSpec(quotas=QuotaSpec(
        tokens_per_min=1_000_000))}})
    gw = build_gateway(spec, fakes, sleep=_no_sleep, guard=Guard(spec, quota_backend=_SettleFails()))
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        async def refused(*_: Any, **__: Any) -> None:
            raise AuditUnavailable("the audit log is not accepting records")

        assert gw.guard.audit is not None
        monkeypatch.setattr(gw.guard.audit, "append", refused)
        monkeypatch.setattr(gw.metrics, failing, FullDisk())
        gw.metrics._audit_written = [None, None]  # the backlog gauges written at the request's close
        FullDisk.writes = 0
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)
        assert r.status_code == 200, r.text
        assert (gw.guard.settle_failures, gw.guard.audit_failures) == (1, 1)
        assert gw.metrics.quota_unsettled._value.get() == 1  # the last write, after the failing one
        if failing == "audit_waiting":
            assert gw.metrics.audit_lost._value.get() == 1
        else:  # the backlog gauges, after the failing audit_lost
            assert gw.metrics._audit_written[1] is not None
            assert gw.metrics.registry.get_sample_value("aigrid_audit_queue_limit") == gw.metrics._audit_written[1]
        assert gw.proxy.written.failed == FullDisk.writes == 1
    finally:
        await gw.guard.stop()


async def test_the_firewall_queues_metrics_go_through_the_one_guarded_writer(
        tmp_path: Path, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The firewall worker's queue tells its metrics from under its lock in Screen.check (on_waiting) and from its
    worker thread (on_wait): a hook that raised there stranded a job or left its caller waiting for ever. Until the
    thirty-first session the screen caught and logged each failure itself (screen._tell: a WARNING every time, not
    counted with the gateway's other failed writes); now the gateway hands it hooks written through Proxy.written
    (observe.MetricsWrites): counted, one WARNING for the first (and every 1000th), the requests screened and served."""
    caplog.set_level(logging.WARNING)
    gw = await metered_gateway(tmp_path, fakes, QuotaSpec(requests_per_min=1000, tokens_per_min=1_000_000))
    # each metric's value file, as the hooks reach it (a multiprocess file that cannot grow raises there)
    monkeypatch.setattr(gw.metrics.firewall_waiting, "_value", FullDisk())
    monkeypatch.setattr(gw.metrics.firewall_wait, "_sum", FullDisk())
    FullDisk.writes = 0
    # past the screen's inline_chars (2,000): read on its worker thread, through its queue
    long = {**CHAT, "messages": [{"role": "user", "content": "Say hello to the grid, please. " * 100}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            answers = await asyncio.wait_for(asyncio.gather(*(
                c.post("/v1/chat/completions", json=long, headers=TENANT) for _ in range(3))), 120)
    finally:
        await gw.guard.stop()
    assert [r.status_code for r in answers] == [200] * 3, [r.text for r in answers]
    screen = gw.guard.screen
    assert screen._jobs == {} and screen._waiting == 0  # nothing left queued
    assert FullDisk.writes >= 9  # each request: waiting up, waiting down, its wait
    assert gw.proxy.written.failed == FullDisk.writes  # counted with the gateway's other failed writes
    warned = [r.getMessage() for r in caplog.records if "were not written" in r.getMessage()]
    assert len(warned) == 1 and "the firewall queue" in warned[0], warned  # rate-limited: the first only


async def test_a_scrape_goes_on_when_its_gauges_cannot_be_written(
        tmp_path: Path, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    """The scraper wrote aigrid_endpoint_healthy / aigrid_endpoint_circuit bare, before the rest of the scrape: on a
    full disk each scrape raised there (logged by its loop, which went on), so an endpoint found down never had its
    checks reset (_recheck: its engine restarted with another context or name was not read again), and a healthy
    one's queue gauge and first checks (its model names) were skipped. Now each gauge goes through Proxy.written."""
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=_no_sleep)
    for name in ("healthy", "circuit"):
        monkeypatch.setattr(gw.metrics, name, FullDisk())
    FullDisk.writes = 0
    served = {e.id: e.served_model or e.model for e in spec.endpoints}
    asked = dict.fromkeys(served, 0)

    def names(endpoint: str) -> Any:
        async def served_models() -> dict[str, ModelCard]:  # the name check's read (GET /v1/models)
            asked[endpoint] += 1
            return {served[endpoint]: ModelCard(None, None)}
        return served_models

    for ep, engine in fakes.items():
        monkeypatch.setattr(engine, "served_models", names(ep), raising=False)
    fakes["fra-smollm2"].stats_value = EngineStats(running=1, waiting=3)
    await gw.scraper.scrape_once()
    assert asked == dict.fromkeys(served, 1)  # each endpoint's names read at its first healthy scrape
    assert gw.metrics.registry.get_sample_value("aigrid_endpoint_waiting",
                                                {"site": "fra", "endpoint": "fra-smollm2"}) == 3

    async def unreachable() -> bool:
        raise EngineUnavailable("connection refused")

    # down: one whose probe says so, one whose probe cannot be reached (the scrape's except)
    fakes["nrt-smollm2"].down = True
    fakes["fra-smollm2"].health = unreachable  # type: ignore[method-assign]
    await gw.scraper.scrape_once()
    fakes["nrt-smollm2"].down = False
    del fakes["fra-smollm2"].health  # back up
    await gw.scraper.scrape_once()
    assert asked == {**dict.fromkeys(served, 1), "nrt-smollm2": 2, "fra-smollm2": 2}  # read again, back up
    assert gw.proxy.written.failed == FullDisk.writes == 3 * 2 * len(served)  # three scrapes' two gauges each


def _sample(gw: Gateway, name: str, **labels: str) -> float | None:
    return gw.metrics.registry.get_sample_value(name, labels)


async def test_an_audit_backlog_gauge_that_failed_is_written_at_the_next_close(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The close writes the audit backlog's two gauges (GatewayMetrics.set_audit_backlog). Until the thirty-first
    session the backlog was kept as written before its writes, in one guarded call: aigrid_audit_queue_waiting
    failing (ENOSPC) skipped aigrid_audit_queue_limit, and neither was tried again until the backlog moved (a queue
    standing still left them stale however long). Now each gauge is its own write, kept as written once it was."""
    metrics = broken.metrics
    waiting, limit = Gauge("w", "", registry=None), Gauge("l", "", registry=None)
    waiting.set(-1)
    limit.set(-1)
    monkeypatch.setattr(metrics, "audit_limit", limit)
    monkeypatch.setattr(metrics, "audit_waiting", FullDisk())
    assert broken.guard.audit is not None
    monkeypatch.setattr(broken.guard.audit, "backlog", lambda: (3, 100))  # standing still
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        assert (await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)).status_code == 200
        assert limit._value.get() == 100  # written though the gauge before it failed
        monkeypatch.setattr(metrics, "audit_waiting", waiting)  # the disk has room again
        assert (await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)).status_code == 200
    assert waiting._value.get() == 3  # tried again at the next close, the backlog unchanged


@pytest.mark.parametrize("failing", ["genai_duration", "genai_ttft", "genai_tokens"])
async def test_each_genai_series_of_a_request_is_written_when_another_cannot_be(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """A streamed answer's close writes its GenAI series (observe.observe -> GatewayMetrics.genai: the duration,
    time to first token, input and output tokens, time per output token, and aigrid_tpot_seconds by site). They were
    one guarded call until the thirty-first session: the first failing (ENOSPC) skipped the rest of the request's.
    Now each is its own write: only the failing one is missing."""
    for name in ("genai_duration", "genai_ttft", "genai_tokens", "genai_tpot", "tpot"):
        monkeypatch.setattr(broken.metrics, name, getattr(GatewayMetrics(), name))  # working series (fresh ones)
    monkeypatch.setattr(broken.metrics, failing, FullDisk())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        async with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=TENANT) as r:
            assert r.status_code == 200
            assert b"[DONE]" in b"".join([chunk async for chunk in r.aiter_raw()])
    await the_one_record(broken)
    m = broken.metrics
    counts = {"genai_duration": lambda: m.genai_duration.labels("chat", "smollm2-135m", "")._sum.get(),
              "genai_ttft": lambda: m.genai_ttft.labels("chat", "smollm2-135m")._sum.get(),
              "genai_tokens": lambda: (m.genai_tokens.labels("chat", "smollm2-135m", "input")._sum.get(),
                                       m.genai_tokens.labels("chat", "smollm2-135m", "output")._sum.get())}
    for name, value in counts.items():
        if name != failing:
            assert value() not in (0, (0, 0)), name
    assert m.genai_tpot.labels("chat", "smollm2-135m")._sum.get() > 0  # after every failing one
    assert sum(child._sum.get() for child in m.tpot._metrics.values()) > 0
    assert broken.proxy.written.failed == FullDisk.writes >= 1


@pytest.mark.parametrize("failing", ["retries", "requests"])
async def test_each_count_of_a_failed_attempt_is_written_when_another_cannot_be(
        broken: Gateway, fakes: dict[str, FakeEngine], monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """An attempt that failed before its first byte counts aigrid_retries_total and aigrid_requests_total's
    failed_before_first_byte (Proxy._count_failed), the second counted by the alert rules: one guarded call until
    the thirty-first session, aigrid_retries_total failing (ENOSPC) skipped it. Now each is its own write."""
    fresh = GatewayMetrics()
    for name in ("retries", "requests"):
        monkeypatch.setattr(broken.metrics, name, getattr(fresh, name))
    monkeypatch.setattr(broken.metrics, failing, FullDisk())
    for f in fakes.values():
        f.down = True
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        assert (await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)).status_code == 502
    attempts = len(broken.decisions.recent(1)[0].attempts)  # each failed before its first byte
    assert attempts >= 2
    if failing == "retries":  # each attempt's retries write failed: its failed_before_first_byte still counted
        assert sum(c._value.get() for k, c in fresh.requests._metrics.items()
                   if k[2] == "failed_before_first_byte") == attempts
    else:
        assert sum(c._value.get() for c in fresh.retries._metrics.values()) == attempts


async def test_a_finished_answers_tokens_are_counted_when_its_request_count_cannot_be(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy._count_finished counts aigrid_requests_total then aigrid_tokens_total (prompt, completion): one guarded
    call until the thirty-first session, the first failing (ENOSPC) skipped the tokens. Now each is its own write."""
    fresh = GatewayMetrics()
    monkeypatch.setattr(broken.metrics, "tokens", fresh.tokens)
    monkeypatch.setattr(broken.metrics, "requests", FullDisk())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        assert (await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)).status_code == 200
    await the_one_record(broken)
    tokens = {k[1]: c._value.get() for k, c in fresh.tokens._metrics.items()}
    assert tokens == {"prompt": 5, "completion": 4}


def test_a_circuits_opening_sets_its_gauge_when_its_count_cannot_be_written() -> None:
    """A circuit's opening counts aigrid_endpoint_circuit_opens_total and sets aigrid_endpoint_circuit open
    (GatewayMetrics.circuit_opened): one guarded call until the thirty-first session, the count failing (ENOSPC)
    left the gauge closed until the next health check. Now each is its own write."""
    metrics, written = GatewayMetrics(), MetricsWrites()
    opened = metrics.count_circuits({"e1": "s1"}, written)
    metrics.circuit_opens = FullDisk()  # type: ignore[assignment]
    FullDisk.writes = 0
    opened("e1")
    assert metrics.registry.get_sample_value("aigrid_endpoint_circuit", {"site": "s1", "endpoint": "e1"}) == 2
    assert written.failed == FullDisk.writes == 1


async def test_an_inflight_gauge_that_failed_is_written_at_the_next_scrape(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /metrics writes each endpoint's aigrid_endpoint_inflight where its count changed
    (GatewayMetrics.set_inflight). Until the thirty-first session the count was kept as written before the write,
    in one guarded call: the first failing (ENOSPC) skipped the endpoints after it, and was not tried again until
    its count moved (an idle endpoint never shown). Now each endpoint's is its own write, kept once written."""
    fresh = GatewayMetrics()
    monkeypatch.setattr(broken.metrics, "inflight", FullDisk())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        assert (await c.get("/metrics")).status_code == 200
        monkeypatch.setattr(broken.metrics, "inflight", fresh.inflight)  # the disk has room again
        assert (await c.get("/metrics")).status_code == 200
    assert {k[1] for k in fresh.inflight._metrics} == {e.id for e in broken.spec.endpoints}
