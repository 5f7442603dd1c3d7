"""The lease of background runs (background.py): a run whose process died (its owner stopped renewing its
lease: a worker killed, a gateway replica crashed) is failed by the next reader once the lease has passed,
so that a client polling it (GET) or following its stream sees it end (`failed`, `response.failed`) instead of
waiting forever; a live owner's long run is never failed; two readers racing fail it once. Over the workers'
hub (a real one on a Unix socket) and over a REAL redis-server shared by two gateways; the dead owner is a
gateway whose runs hang and whose lease is no longer renewed (its watcher stopped, its lifespan never run),
leases of a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from aigrid.audit.signing import load_public_key
from aigrid.audit.verify import verify
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.background import ABANDONED, BACKGROUND_ROUTE, BackgroundRuns
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient
from aigrid.gateway.response_store import Pending, ResponseStore, StoredResponse
from aigrid.gateway.stores import HubResponses, ResponseBook
from aigrid.gateway.stores_redis import RedisStore
from aigrid.spec.models import QuotaSpec, TenantSpec
from tests.gateway.background_grid import (
    TENANT,
    Stalling,
    hub_path,  # noqa: F401 (a fixture)
    reached_an_engine,
    stalled,
    until,
)
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in
from tests.gateway.sdk_clients import openai_client
from tests.gateway.test_response_store_redis import url
from tests.gateway.test_responses_background_stream import read_all, served
from tests.security.redis_server import redis_server

POLL_S, LEASE_S = 0.05, 1.0
"""A lease of 20 polls: a test process starved of CPU for most of a second (a shared machine) is not dead."""
MODEL = "smollm2-135m"


class Hung(Stalling):
    """A FAKE engine whose answers, whole or streamed, wait for `gate`."""

    async def _sse(self, req: dict) -> AsyncIterator[bytes]:
        await self.gate.wait()
        async for chunk in super()._sse(req):
            yield chunk


async def _gateway(tmp: Path, engines: dict[str, Hung], stores: dict[str, str] | None = None) -> Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    spec = spec_in(tmp)
    gateway = spec.gateway if stores is None else spec.gateway.model_copy(update={"stores": stores})
    metered = TenantSpec(quotas=QuotaSpec(tokens_per_min=1_000_000))  # counted: a run's reservation shows
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "metered": metered}, "gateway": gateway})
    gw = build_gateway(spec, engines, rng=random.Random(3), sleep=_no_sleep)
    gw.guard.quotas.clock = lambda: 1_800_000_030.0  # one quota window for the whole test
    await gw.scraper.scrape_once()
    await gw.guard.start()
    gw.background = BackgroundRuns(poll_s=POLL_S, lease_s=LEASE_S)
    return gw


def _engines(tmp: Path) -> dict[str, Hung]:
    return {e.id: Hung(e.id) for e in spec_in(tmp).endpoints}


async def die(gw: Gateway) -> None:
    """`gw` as if its process were killed: its runs hang where they are, its lease is renewed no more (its
    watcher ends; `stopping` too, since a cancel that lands in a store call may come out as that call's
    failure, which the watcher outlives)."""
    watcher = gw.background._watcher
    assert watcher is not None and not watcher.done()
    gw.background.stopping = True
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher


async def follow(oai: openai.AsyncOpenAI, rid: str) -> list[Any]:
    return await read_all(await oai.responses.retrieve(rid, stream=True))


async def _a_dead_owners_runs_fail_after_the_lease(a: Gateway, engines_a: dict[str, Hung], b: Gateway,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A runs a polled and a streamed response (both hung); B reads them: in progress while A lives, however
    long; failed once A dies and its lease has passed, to two racing pollers and to a stream follower; the
    failure logged once, naming the response and A."""
    await stalled(engines_a)
    on_b = openai_client(build_app(b)).with_options(default_headers=TENANT)
    try:
        async with served(a) as on_a:  # A on a real socket: a streamed create is read as it comes
            polled = await on_a.responses.create(model=MODEL, input="Say hello", background=True)
            stream = await on_a.responses.create(model=MODEL, input="Count", background=True, stream=True)
            streamed = (await stream.__anext__()).response.id
            await stream.close()  # its client leaves: the run goes on
            await reached_an_engine(engines_a)
            for _ in range(round(2 * LEASE_S / POLL_S)):  # two leases and more: A renews, its runs stay running
                assert (await on_b.responses.retrieve(polled.id)).status == "in_progress"
                assert (await on_b.responses.retrieve(streamed)).status == "in_progress"
                await asyncio.sleep(POLL_S)
            follower = asyncio.create_task(follow(on_b, streamed))
            with caplog.at_level(logging.WARNING, logger="aigrid.gateway"):
                await die(a)
                racing = await asyncio.gather(until(on_b, polled.id, "failed"), until(on_b, polled.id, "failed"))
                events = await asyncio.wait_for(follower, 10)
            for got in racing:
                assert got.error is not None and got.error.code == "server_error"
                assert got.error.message == ABANDONED["message"]
            assert events[-1].type == "response.failed" and events[-1].response.status == "failed"
            assert events[-1].response.error.message == ABANDONED["message"]
            assert [e.sequence_number for e in events] == list(range(len(events)))
            assert b.stores is not None
            log_home = await b.stores.responses.events_find("metered", streamed)  # the log itself was ended
            assert log_home is not None and await log_home.events_next("metered", streamed) == (len(events), True)
            assert (await on_b.responses.retrieve(streamed)).status == "failed"
            assert (await on_b.responses.cancel(polled.id)).status == "failed"  # ended: returned unchanged
            for rid in (polled.id, streamed):
                logged = [r.getMessage() for r in caplog.records if rid in r.getMessage()]
                assert len(logged) == 1 and a.background.owner in logged[0], logged
            assert a.background.owns(polled.id)  # its process "dead": it has settled and recorded nothing yet
            await _audited_once_by_the_reader(a, b, [polled.id, streamed])
            await _comes_back(a, [polled.id, streamed])
    finally:
        await b.background.stop()
        await b.guard.stop()
        await on_b.close()
        for gw in (a, b):  # their hub clients, their Redis clients
            if gw.stores is not None:
                await gw.stores.aclose()
            if gw.hub is not None:
                await gw.hub.aclose()
    assert b.spec.security.audit is not None
    audit_db = Path(b.spec.security.audit.path)
    report = verify(audit_db, load_public_key(audit_db.with_suffix(".pub.pem")))
    assert report.ok, report.problems  # `aigrid audit verify` passes with the readers' records in the chain


async def _comes_back(a: Gateway, rids: list[str]) -> None:
    """A was only stalled past its lease: back, it renews and polls again, is told its runs ended (failed) and
    stops them; each run settles its reservation to its usage (its quota no longer charged at it) and writes
    the run's second and last record, outcome `abandoned:settled`, carrying that usage, linked to the
    reader's `abandoned` one by its response id. Before, it settled and wrote nothing, and the reader's record
    said the quota stayed 'charged at its reservation', no longer true."""
    assert a.stores is not None
    principal = a.guard.principal(None, "metered")
    charged = await a.guard.quotas.tokens_this_minute(principal)
    assert charged > 0  # the runs' reservations, as admitted
    a.background.stopping = False
    a.background._watcher = asyncio.create_task(a.background._watch(a.stores.responses))
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if not any(a.background.owns(rid) for rid in rids):
            break
        await asyncio.sleep(0.01)
    assert not any(a.background.owns(rid) for rid in rids)
    settled = [r for r in await audit_rows(a) if r["extra"]["route"] == BACKGROUND_ROUTE]
    assert sorted(r["extra"]["response_id"] for r in settled) == sorted(rids), settled
    for r in settled:
        assert r["outcome"] == "abandoned:settled" and r["tenant"] == "metered"
        assert r["extra"]["settles"].startswith("the abandoned record of this response_id")
        assert (r["prompt_tokens"], r["completion_tokens"]) == (0, 0)  # its usage: no engine answered them
    # settled to that usage: nothing. Their engines held their prompts, but the grid threw the work away (the lease
    # lapsed, background.LAPSED, not a client's cancel): charged nothing beyond what was delivered (docs/reliability.md).
    # From c92da63f to area W (twenty-seventh session) the prompts were charged, the store telling no cancel from this.
    prompts = [d.prompt_tokens for d in a.decisions.recent(10)]
    assert len(prompts) == len(rids) and all(p > 0 for p in prompts), prompts  # the case a charge would come from
    assert await a.guard.quotas.tokens_this_minute(principal) == 0
    assert [r["extra"].get("charged_tokens", 0) for r in settled] == [0] * len(rids), settled  # audit = quota


async def _audited_once_by_the_reader(a: Gateway, b: Gateway, rids: list[str]) -> None:
    """Each dead run's exit has exactly one audit record, written by the one reader (of B) whose atomic step
    failed it, however many read it after: the background route's, outcome `abandoned`, with the tenant, key
    and model of its create, naming the dead owner, charged at its reservation (no usage made up)."""
    created = [r for r in await audit_rows(a) if r["extra"]["route"] == "/v1/responses"]  # the creates, on A
    assert len(created) == len(rids) and all(r["tenant"] == "metered" for r in created)
    key_id = created[0]["key_id"]
    abandoned = [r for r in await audit_rows(b) if r["outcome"] == "abandoned"]
    assert sorted(r["extra"]["response_id"] for r in abandoned) == sorted(rids), abandoned
    for r in abandoned:
        assert r["extra"]["route"] == BACKGROUND_ROUTE
        assert (r["tenant"], r["key_id"], r["model"]) == ("metered", key_id, MODEL)
        assert r["extra"]["owner"] == a.background.owner and a.background.owner in r["extra"]["reason"]
        assert r["extra"]["quota"] == ("charged at its reservation (its usage is unknown here; if its owner comes "
                                       "back, its record of outcome abandoned:settled settles it to its usage)")
        assert (r["prompt_tokens"], r["completion_tokens"]) == (0, 0)
    assert b.metrics.background_abandoned._value.get() == len(rids)


async def test_over_the_hub_a_dead_workers_runs_fail_after_the_lease(
        tmp_path: Path, hub_path: Hub, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    engines_a = _engines(tmp_path)
    a, b = await _gateway(tmp_path / "a", engines_a), await _gateway(tmp_path / "b", _engines(tmp_path))
    a.hub, b.hub = HubClient(hub_path.path, hub_path.token), HubClient(hub_path.path, hub_path.token)
    await _a_dead_owners_runs_fail_after_the_lease(a, engines_a, b, caplog)


async def test_over_redis_a_dead_gateways_runs_fail_after_the_lease(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with redis_server(tmp_path) as port:
        stores = {"EU": url(port), "JP": url(port), "unbound": url(port, 1)}
        engines_a = _engines(tmp_path)
        a = await _gateway(tmp_path / "a", engines_a, stores)
        b = await _gateway(tmp_path / "b", _engines(tmp_path), stores)
        await _a_dead_owners_runs_fail_after_the_lease(a, engines_a, b, caplog)


# --- the stores' own step: once, whoever races ------------------------------------------------------------
async def _race(books: list[ResponseBook], pending: Pending) -> None:
    """`pending`'s owner renews: no reader fails it; it stops: of many racing readers exactly one does, and the
    run's late answer is refused; the owner, were it alive after all, is told to stop it (`cancelled`)."""
    await books[0].pending_add(pending)
    await books[0].heartbeat(pending.owner, LEASE_S)
    assert [await book.abandon(pending, dict(ABANDONED)) for book in books] == [None, None]
    await asyncio.sleep(LEASE_S + 0.1)
    failed = await asyncio.gather(*(book.abandon(pending, dict(ABANDONED)) for book in books * 5))
    won = [f for f in failed if f is not None]
    assert len(won) == 1 and won[0].status == "failed" and won[0].error == ABANDONED
    assert won[0].owner == pending.owner
    found = await books[1].lookup(pending.tenant, pending.id)
    assert isinstance(found, Pending) and found.status == "failed"
    late = StoredResponse(pending.id, pending.tenant, "JP", "tokyo", {"id": pending.id})
    assert await books[1].complete(late, None) == "failed"
    assert await books[0].cancelled([(pending.tenant, pending.id)]) == {pending.id: "failed"}
    # a placeholder of no owner (a gateway's own memory, or written before leases) is never failed
    ownerless = Pending("resp_x", pending.tenant, MODEL, 1)
    await books[0].pending_add(ownerless)
    assert await books[1].abandon(ownerless, dict(ABANDONED)) is None


async def test_the_hub_fails_a_dead_owners_placeholder_once(hub_path: Hub) -> None:  # noqa: F811
    clients = [HubClient(hub_path.path, hub_path.token), HubClient(hub_path.path, hub_path.token)]
    try:
        await _race([HubResponses(c) for c in clients], Pending("resp_h", "t", MODEL, 1, owner="worker-1"))
    finally:
        for c in clients:
            await c.aclose()


async def test_redis_fails_a_dead_owners_placeholder_once(tmp_path: Path) -> None:
    with redis_server(tmp_path) as port:
        stores = [RedisStore.from_url(url(port), "demo", ["unbound", "JP"], ttl_s=60) for _ in range(2)]
        try:
            await _race([s.responses for s in stores], Pending("resp_r", "t", MODEL, 1, owner="gateway-1"))
        finally:
            for s in stores:
                await s.aclose()


def test_in_memory_a_placeholder_is_failed_only_past_its_owners_lease() -> None:
    store = ResponseStore()
    store.add_pending(Pending("r1", "t", MODEL, 1, owner="o1"))
    assert store.abandon(Pending("r1", "t", MODEL, 1, owner="o1"), dict(ABANDONED)) is not None  # never renewed
    store.add_pending(Pending("r2", "t", MODEL, 1, owner="o2"))
    store.heartbeat("o2", 60.0)
    assert store.abandon(Pending("r2", "t", MODEL, 1, owner="o2"), dict(ABANDONED)) is None
    assert store.abandon(Pending("r2", "t", MODEL, 1, owner="other"), dict(ABANDONED)) is None  # not its owner
    store.mark("t", "r2", "cancelled")
    store.heartbeat("o2", -1.0)  # its lease ended: a final placeholder stays as it is
    assert store.abandon(Pending("r2", "t", MODEL, 1, owner="o2"), dict(ABANDONED)) is None
    with pytest.raises(ValueError):
        BackgroundRuns(poll_s=1.0, lease_s=2.0)  # a lease of two polls or less: live runs would be taken for dead
