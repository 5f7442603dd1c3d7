"""Shared stores (`gateway.stores`): stored Responses, background placeholders and Conversations in a REAL
redis-server (tests/security/redis_server.py), shared by two independent gateways (two build_gateway calls,
no hub) with the official openai SDK as the client, against FAKE engines: what one gateway stores the other
reads, continues, cancels and deletes; residency (a jurisdiction without a Redis keeps its records in
memory, never in Redis); TTLs; a Redis that stops answering is a 503 in the OpenAI envelope for what needs
it (logged once) while the rest is served; a restarted gateway keeps the conversation; workers use Redis
directly, not their hub."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import redis

from aigrid.errors import SpecError
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.background import BackgroundRuns
from aigrid.gateway.conversation_store import MAX_CONVERSATION_BYTES
from aigrid.gateway.footprint import footprint
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient
from aigrid.gateway.response_store import Pending, ResponseStore, StoredResponse
from aigrid.gateway.stores import MemoryResponses, Responses
from aigrid.gateway.stores_redis import RedisStore, _pending
from aigrid.spec.load import load_spec, parse_spec
from tests.gateway.background_grid import Stalling, reached_an_engine, stalled, until
from tests.gateway.conftest import DEMO, _no_sleep, spec_in
from tests.security.redis_server import redis_server

MODEL = "smollm2-135m"
ANSWER = "Hello from the grid"
TOKYO = {"x-aigrid-client-location": "Tokyo"}
IN_EU = {**TOKYO, "x-aigrid-residency": "EU"}
IN_US = {**TOKYO, "x-aigrid-residency": "US"}
EU_BANK = {"x-aigrid-tenant": "eu-bank"}


def url(port: int, db: int = 0) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


def resp_key(jurisdiction: str, rid: str, tenant: str = "default") -> str:
    return f"aigrid:demo:resp:{jurisdiction}:{{{tenant}}}:{rid}"


def conv_key(cid: str, tenant: str = "default") -> str:
    return f"aigrid:demo:conv:{{{tenant}}}:{cid}"


def pending_key(rid: str, tenant: str = "default") -> str:
    return f"aigrid:demo:pending:{{{tenant}}}:{rid}"


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    with redis_server(tmp_path) as p:
        yield p


async def gateway_on(tmp: Path, stores: dict[str, str], engines: dict[str, Stalling],
                     ttl_days: float = 30.0) -> Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    spec = spec_in(tmp)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(
        update={"stores": stores, "store_ttl_days": ttl_days})})
    gw = build_gateway(spec, engines, rng=random.Random(1), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    return gw


@dataclass
class Side:
    gw: Gateway
    oai: openai.AsyncOpenAI
    engines: dict[str, Stalling]

    def received(self, endpoint: str) -> list[dict[str, Any]]:
        return self.engines[endpoint].received


async def side(tmp: Path, stores: dict[str, str], **kw: Any) -> Side:
    """A gateway on `stores`, its engines FAKE ones whose answers wait while a test closes their gate."""
    engines = {e.id: Stalling(e.id) for e in spec_in(tmp).endpoints}
    gw = await gateway_on(tmp, stores, engines, **kw)
    gw.background = BackgroundRuns(poll_s=0.02)
    return Side(gw, openai_for(gw), engines)


def openai_for(gw: Gateway) -> openai.AsyncOpenAI:
    from tests.gateway.sdk_clients import openai_client

    return openai_client(build_app(gw)).with_options(default_headers=TOKYO)


async def close(*sides: Side) -> None:
    for s in sides:
        for e in s.engines.values():
            e.gate.set()
        await s.gw.background.stop()
        await s.oai.close()
        assert s.gw.stores is not None
        await s.gw.stores.aclose()


@pytest.fixture
async def two(tmp_path: Path, port: int) -> AsyncIterator[tuple[Side, Side, redis.Redis, redis.Redis]]:
    """Gateways A and B (each its own engines and memory) on one Redis: EU and JP in db 0, the placeholders
    and unbound conversations in db 1 (another store: a conversation moves when its first response binds
    it, a background answer is stored across two stores)."""
    stores = {"EU": url(port), "JP": url(port), "unbound": url(port, 1)}
    a, b = await side(tmp_path / "a", stores), await side(tmp_path / "b", stores)
    r0, r1 = redis.Redis(port=port, db=0), redis.Redis(port=port, db=1)
    try:
        yield a, b, r0, r1
    finally:
        await close(a, b)
        r0.close()
        r1.close()


# --- two gateways, one Redis ------------------------------------------------------------------------------
async def test_a_response_stored_on_one_gateway_is_read_continued_and_deleted_on_another(
        two: tuple[Side, Side, redis.Redis, redis.Redis]) -> None:
    a, b, r0, _ = two
    first = await a.oai.responses.create(model=MODEL, input="My name is Ada.", extra_headers=IN_EU)
    assert r0.exists(resp_key("EU", first.id)) and a.gw.responses.jurisdictions_of("default", first.id) == []
    read = await b.oai.responses.with_raw_response.retrieve(first.id)
    assert read.headers["x-aigrid-stored-jurisdiction"] == "EU" and read.headers["x-aigrid-site"] == "fra"
    assert read.parse().output_text == ANSWER
    # continued on B, from Tokyo: its history is A's turn, and it is served and stored in the EU
    follow = await b.oai.responses.with_raw_response.create(model=MODEL, input="What is my name?",
                                                            previous_response_id=first.id)
    assert follow.headers["x-aigrid-site"] == "fra"
    assert b.received("fra-smollm2")[-1]["messages"] == [
        {"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "What is my name?"}]
    follow_id = follow.parse().id
    assert r0.exists(resp_key("EU", follow_id))
    items = [i async for i in a.oai.responses.input_items.list(follow_id)]
    assert [i.content[0].text for i in items] == ["What is my name?"]
    # another tenant sees none of it; asking for another jurisdiction is refused, as in memory
    with pytest.raises(openai.NotFoundError):
        await b.oai.responses.retrieve(first.id, extra_headers=EU_BANK)
    with pytest.raises(openai.BadRequestError) as elsewhere:
        await a.oai.responses.create(model=MODEL, input="x", previous_response_id=follow_id, extra_headers=IN_US)
    assert elsewhere.value.body["code"] == "conversation_residency"
    # a chain that lost a turn is refused (400 previous_response_not_found), never answered from part of it
    chained = await a.oai.responses.create(model=MODEL, input="And now?", previous_response_id=follow_id)
    r0.delete(resp_key("EU", first.id))
    sent = len(b.received("fra-smollm2"))
    with pytest.raises(openai.BadRequestError) as broken:
        await b.oai.responses.create(model=MODEL, input="x", previous_response_id=chained.id)
    assert broken.value.body["param"] == "previous_response_id" and first.id in broken.value.body["message"]
    assert len(b.received("fra-smollm2")) == sent
    # deleted on B: gone on A
    await b.oai.responses.delete(follow_id)
    with pytest.raises(openai.NotFoundError):
        await a.oai.responses.retrieve(follow_id)


async def test_a_conversation_made_on_one_gateway_is_used_on_another(
        two: tuple[Side, Side, redis.Redis, redis.Redis]) -> None:
    a, b, r0, r1 = two
    conv = await a.oai.conversations.create(items=[{"role": "user", "content": "My name is Ada."}],
                                            metadata={"app": "demo"})
    # not bound yet (the default tenant may use every jurisdiction; no header): in the unbound store
    assert r1.exists(conv_key(conv.id)) and not r0.exists(conv_key(conv.id))
    assert (await b.oai.conversations.retrieve(conv.id)).metadata == {"app": "demo"}
    await b.oai.conversations.update(conv.id, metadata={"app": "b"})
    # its first response, on B from Tokyo, reads A's item and binds it to JP: moved to JP's store
    await b.oai.responses.create(model=MODEL, input="What is my name?", conversation=conv.id)
    assert b.received("nrt-smollm2")[-1]["messages"] == [
        {"role": "user", "content": "My name is Ada."}, {"role": "user", "content": "What is my name?"}]
    assert not r1.exists(conv_key(conv.id))
    assert orjson.loads(r0.get(conv_key(conv.id)))["jurisdiction"] == "JP"
    listed = [i async for i in a.oai.conversations.items.list(conv.id, order="asc")]
    assert [i.content[0].text for i in listed] == ["My name is Ada.", "What is my name?", ANSWER]
    got = await a.oai.conversations.with_raw_response.retrieve(conv.id)
    assert got.headers["x-aigrid-stored-jurisdiction"] == "JP" and got.parse().metadata == {"app": "b"}
    # items added on A, one deleted on B, both seen on the other
    added = await a.oai.conversations.items.create(conv.id, items=[{"role": "user", "content": "Thanks"}])
    await b.oai.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    assert len([i async for i in a.oai.conversations.items.list(conv.id)]) == 3
    # a conversation bound at creation goes straight to its jurisdiction's store
    eu = await a.oai.conversations.create(extra_headers=IN_EU)
    assert orjson.loads(r0.get(conv_key(eu.id)))["jurisdiction"] == "EU" and not r1.exists(conv_key(eu.id))
    # it holds at most MAX_CONVERSATION_BYTES there too: the add past it is refused, and nothing of it written
    heavy = [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "a"}] * 1000}] * 20
    with pytest.raises(openai.BadRequestError) as full:
        for _ in range(12):
            await a.oai.conversations.items.create(eu.id, items=heavy, extra_headers=IN_EU)
    assert full.value.body["code"] == "conversation_too_large"
    assert footprint(orjson.loads(r0.get(conv_key(eu.id)))["items"]) <= MAX_CONVERSATION_BYTES
    with pytest.raises(openai.NotFoundError):
        await b.oai.conversations.retrieve(conv.id, extra_headers=EU_BANK)
    await b.oai.conversations.delete(conv.id)
    with pytest.raises(openai.NotFoundError):
        await a.oai.conversations.retrieve(conv.id)


async def test_a_background_run_on_one_gateway_is_polled_and_cancelled_from_another(
        two: tuple[Side, Side, redis.Redis, redis.Redis]) -> None:
    a, b, r0, r1 = two
    await stalled(a.engines)
    created = await a.oai.responses.create(model=MODEL, input="Say hello", background=True, max_output_tokens=7)
    await reached_an_engine(a.engines)
    assert r1.exists(pending_key(created.id))  # the placeholder: in the unbound store, no content
    assert set(r1.hgetall(pending_key(created.id))) == {b"id", b"tenant", b"model", b"created_at", b"status",
                                                        b"error", b"owner", b"key_id", b"settings", b"scopes"}
    # what its creator was allowed (responses_api._may_follow compares it), read back as written
    assert _pending(r1.hgetall(pending_key(created.id))).scopes == a.gw.guard.tenants["default"].scopes.to_dict()
    assert r1.hget(pending_key(created.id), "owner") == a.gw.background.owner.encode()
    running = await b.oai.responses.retrieve(created.id)  # its placeholder, read from Redis
    assert running.status == "in_progress" and running.max_output_tokens == 7
    cancelled = await b.oai.responses.cancel(created.id)  # B marks it in Redis; A's run polls and stops
    assert cancelled.status == "cancelled"
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if not a.gw.background.owns(created.id):
            break
        await asyncio.sleep(0.01)
    assert not a.gw.background.owns(created.id)
    for e in a.engines.values():  # the engine's late answer is never stored
        e.gate.set()
    await asyncio.sleep(0.05)
    assert (await a.oai.responses.retrieve(created.id)).status == "cancelled"
    assert not r0.exists(resp_key("JP", created.id))
    # a run that completes on A is read whole on B: stored in JP's store, its placeholder dropped
    done = await a.oai.responses.create(model=MODEL, input="Say hello", background=True)
    assert (await until(b.oai, done.id, "completed")).output_text == ANSWER
    # across two stores the placeholder is marked completed, then dropped (stores.Responses.complete): B can
    # read the answer in between (seen on a loaded machine), so its dropping is waited for
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if not r1.exists(pending_key(done.id)):
            break
        await asyncio.sleep(0.01)
    assert r0.exists(resp_key("JP", done.id)) and not r1.exists(pending_key(done.id))
    again = await b.oai.responses.cancel(done.id)  # an ended one is returned unchanged
    assert again.status == "completed" and again.output_text == ANSWER
    with pytest.raises(openai.NotFoundError):
        await b.oai.responses.retrieve(done.id, extra_headers=EU_BANK)


# --- records of another version (a rolling upgrade, a rollback: gateways of two versions on one Redis) ----------
def newer(raw: bytes, **fields: Any) -> bytes:
    """A record as a newer aigrid writes it: with fields this one does not know."""
    return orjson.dumps({**orjson.loads(raw), **fields})


async def test_records_a_newer_aigrid_wrote_are_read_its_fields_ignored_and_logged_once(
        two: tuple[Side, Side, redis.Redis, redis.Redis], caplog: pytest.LogCaptureFixture) -> None:
    """Before (review RV1 of the thirty-eighth session) a reader rebuilt them with StoredResponse(**d): a field it did
    not know (`listed`, added this session) made every read of the record a 500 on an older gateway."""
    caplog.set_level(logging.INFO, "aigrid.gateway")
    a, b, r0, r1 = two
    first = await a.oai.responses.create(model=MODEL, input="My name is Ada.", extra_headers=IN_EU)
    key = resp_key("EU", first.id)
    r0.hset(key, "r", newer(r0.hget(key, "r"), stored_by_a_newer_gateway={"x": [1]}))
    assert (await b.oai.responses.retrieve(first.id)).output_text == ANSWER
    await b.oai.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    assert b.received("fra-smollm2")[-1]["messages"] == [
        {"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "What is my name?"}]
    # a conversation: read, listed, and written to (the unknown field is not this version's to keep)
    conv = await a.oai.conversations.create(items=[{"role": "user", "content": "My name is Ada."}],
                                            metadata={"app": "demo"})
    r1.set(conv_key(conv.id), newer(r1.get(conv_key(conv.id)), stored_by_a_newer_gateway=True), keepttl=True)
    assert (await b.oai.conversations.retrieve(conv.id)).metadata == {"app": "demo"}
    await b.oai.conversations.items.create(conv.id, items=[{"role": "user", "content": "Thanks"}])
    listed = [i async for i in b.oai.conversations.items.list(conv.id, order="asc")]
    assert [i.content[0].text for i in listed] == ["My name is Ada.", "Thanks"]
    # a background placeholder: a hash field of its own
    await stalled(a.engines)
    created = await a.oai.responses.create(model=MODEL, input="Say hello", background=True)
    await reached_an_engine(a.engines)
    r1.hset(pending_key(created.id), "stored_by_a_newer_gateway", "1")
    assert (await b.oai.responses.retrieve(created.id)).status in ("queued", "in_progress")
    assert (await b.oai.responses.cancel(created.id)).status == "cancelled"
    told = sorted(r.getMessage().split(" record")[0] for r in caplog.records
                  if "'stored_by_a_newer_gateway'" in r.getMessage() and r.levelno == logging.INFO)
    # once each, though read again (a field of its own: the log says each pair once per process)
    assert told == ["a Pending", "a StoredConversation", "a StoredResponse"]


async def test_a_record_no_aigrid_wrote_is_absent_and_logged_never_a_500(
        two: tuple[Side, Side, redis.Redis, redis.Redis], caplog: pytest.LogCaptureFixture) -> None:
    a, b, r0, r1 = two
    first = await a.oai.responses.create(model=MODEL, input="My name is Ada.", extra_headers=IN_EU)
    key = resp_key("EU", first.id)
    r0.hset(key, "r", newer(r0.hget(key, "r"), response="not an object"))
    with pytest.raises(openai.NotFoundError):
        await b.oai.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as follow:
        await b.oai.responses.create(model=MODEL, input="x", previous_response_id=first.id)
    assert follow.value.body["param"] == "previous_response_id"
    # an earlier turn of a chain unreadable: the chain is broken there (a 400 naming it), as where a turn is gone
    second = await a.oai.responses.create(model=MODEL, input="Hi", extra_headers=IN_EU)
    third = await a.oai.responses.create(model=MODEL, input="Again", previous_response_id=second.id)
    r0.hset(resp_key("EU", second.id), "t", orjson.dumps({"role": "user"}))
    with pytest.raises(openai.BadRequestError) as broken:
        await b.oai.responses.create(model=MODEL, input="x", previous_response_id=third.id)
    assert broken.value.body["param"] == "previous_response_id" and second.id in broken.value.body["message"]
    conv = await a.oai.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    r1.set(conv_key(conv.id), b"{not json", keepttl=True)
    with pytest.raises(openai.NotFoundError):
        await b.oai.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        await b.oai.conversations.items.create(conv.id, items=[{"role": "user", "content": "Thanks"}])
    await stalled(a.engines)
    created = await a.oai.responses.create(model=MODEL, input="Say hello", background=True)
    await reached_an_engine(a.engines)
    r1.hset(pending_key(created.id), "created_at", "yesterday")
    with pytest.raises(openai.NotFoundError):
        await b.oai.responses.retrieve(created.id)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"a stored response in Redis ({first.id}) is unreadable (field 'response': expected dict[str, Any]"
               in m for m in said), said
    assert any(f"the turn of stored response {second.id} in Redis is unreadable (not a list of objects but dict)"
               in m for m in said), said
    assert any("a conversation in Redis is unreadable (not JSON" in m for m in said), said
    assert any("a background placeholder in Redis is unreadable (ValueError" in m for m in said), said


# --- residency and TTL --------------------------------------------------------------------------------------
async def test_only_the_jurisdictions_given_a_redis_are_kept_there(tmp_path: Path, port: int) -> None:
    """EU in Redis, every other jurisdiction (and the placeholders) in the gateway's memory."""
    s = await side(tmp_path / "g", {"EU": url(port)}, ttl_days=2)
    r = redis.Redis(port=port)
    try:
        eu = await s.oai.responses.create(model=MODEL, input="x", extra_headers=IN_EU)
        us = await s.oai.responses.create(model=MODEL, input="x", extra_headers=IN_US)
        assert r.exists(resp_key("EU", eu.id)) and s.gw.responses.jurisdictions_of("default", eu.id) == []
        assert 2 * 86400 - 60 < r.ttl(resp_key("EU", eu.id)) <= 2 * 86400
        assert not r.keys(f"*{us.id}*") and s.gw.responses.jurisdictions_of("default", us.id) == ["US"]
        assert (await s.oai.responses.retrieve(us.id)).output_text == ANSWER
        conv_eu = await s.oai.conversations.create(extra_headers=IN_EU)
        conv_us = await s.oai.conversations.create(extra_headers=IN_US)
        assert r.exists(conv_key(conv_eu.id)) and 0 < r.ttl(conv_key(conv_eu.id)) <= 2 * 86400
        assert not r.keys(f"*{conv_us.id}*") and s.gw.conversations.get("default", conv_us.id) is not None
        # a background answer served in the EU: its placeholder in memory, its answer in Redis only
        job = await s.oai.responses.create(model=MODEL, input="x", background=True, extra_headers=IN_EU)
        assert (await until(s.oai, job.id, "completed")).output_text == ANSWER
        assert r.exists(resp_key("EU", job.id)) and s.gw.responses.lookup("default", job.id) is None
        # the records, and the tenant's ledger of what it holds (stores_redis._Ledger)
        assert {k.decode().split(":")[2] for k in r.keys("aigrid:demo:*")} == {"resp", "conv", "held", "sizes"}
        assert {k.decode().split(":")[3] for k in r.keys("aigrid:demo:resp:*")} == {"EU"}
    finally:
        await close(s)
        r.close()


# --- failures -------------------------------------------------------------------------------------------
async def test_a_redis_that_stops_is_a_503_for_what_needs_it_and_nothing_else(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with redis_server(tmp_path) as port:
        s = await side(tmp_path / "g", {"EU": url(port), "unbound": url(port)})
        first = await s.oai.responses.create(model=MODEL, input="My name is Ada.", extra_headers=IN_EU)
        conv = await s.oai.conversations.create(extra_headers=IN_EU)
    try:
        with caplog.at_level(logging.WARNING, logger="aigrid.gateway"):
            failures = [s.oai.responses.retrieve(first.id),
                        s.oai.responses.create(model=MODEL, input="Again?", previous_response_id=first.id),
                        s.oai.conversations.retrieve(conv.id),
                        s.oai.responses.create(model=MODEL, input="x", conversation=conv.id),
                        s.oai.responses.create(model=MODEL, input="x", background=True)]
            for call in failures:
                with pytest.raises(openai.InternalServerError) as down:
                    await call
                assert down.value.status_code == 503
                assert down.value.body["code"] == "store_unavailable"
                assert down.value.body["type"] == "service_unavailable_error"
            assert s.received("fra-smollm2")[-1]["messages"][-1]["content"] == "My name is Ada."  # none served
            # the plain chat route does not need the store; a Responses answer is served, just not stored
            chat = await s.oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            assert chat.choices[0].message.content == ANSWER
            unstored = await s.oai.responses.create(model=MODEL, input="x", extra_headers=IN_EU)
            assert unstored.output_text == ANSWER
        outage = [r for r in caplog.records if "(Redis) did not answer" in r.message]
        assert len(outage) == 1 and outage[0].levelno == logging.ERROR  # once per outage, not per request
        assert any("could not be stored" in r.message and unstored.id in r.message for r in caplog.records)
        (tmp_path / "again").mkdir()
        with redis_server(tmp_path / "again", port=port), caplog.at_level(logging.WARNING, logger="aigrid.gateway"):
            with pytest.raises(openai.NotFoundError):  # a Redis without persistence came back empty: a 404 now
                await s.oai.responses.retrieve(first.id)
            assert any("answers again" in r.message for r in caplog.records)
    finally:
        await close(s)


async def test_a_restarted_gateway_keeps_the_stored_conversation(tmp_path: Path, port: int) -> None:
    stores = {"EU": url(port), "JP": url(port), "unbound": url(port)}
    first = await side(tmp_path / "1", stores)
    conv = await first.oai.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    answered = await first.oai.responses.create(model=MODEL, input="What is my name?", conversation=conv.id)
    stored = await first.oai.responses.create(model=MODEL, input="I live in Paris.")
    await close(first)
    again = await side(tmp_path / "2", stores)  # a new process: empty memory, the same Redis
    try:
        listed = [i async for i in again.oai.conversations.items.list(conv.id, order="asc")]
        assert [i.content[0].text for i in listed] == ["My name is Ada.", "What is my name?", ANSWER]
        assert [i.id for i in listed][-1] == answered.output[0].id
        await again.oai.responses.create(model=MODEL, input="Where do I live?", previous_response_id=stored.id)
        assert again.received("nrt-smollm2")[-1]["messages"][0] == {"role": "user", "content": "I live in Paris."}
    finally:
        await close(again)


# --- workers: Redis directly, not through the hub ------------------------------------------------------------
async def test_workers_use_redis_for_its_jurisdictions_and_the_hub_for_the_others(tmp_path: Path, port: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="aigrid-rs-"))  # short: a Unix socket path has ~100 bytes
    hub = Hub(work / "hub.sock", None)
    await hub.start()
    sides: list[Side] = []
    r = redis.Redis(port=port)
    try:
        for n in range(2):
            (tmp_path / str(n)).mkdir()
            engines = {e.id: Stalling(e.id) for e in spec_in(tmp_path / str(n)).endpoints}
            gw = await gateway_on(tmp_path / str(n), {"EU": url(port)}, engines)
            gw.hub = HubClient(hub.path, hub.token)  # as workers.py does, before the app is built
            sides.append(Side(gw, openai_for(gw), engines))
        one, two = sides
        eu = await one.oai.responses.create(model=MODEL, input="x", extra_headers=IN_EU)
        jp = await one.oai.responses.create(model=MODEL, input="x")
        assert r.exists(resp_key("EU", eu.id)) and hub.responses.jurisdictions_of("default", eu.id) == []
        assert not r.keys(f"*{jp.id}*") and hub.responses.jurisdictions_of("default", jp.id) == ["JP"]
        assert (await two.oai.responses.retrieve(eu.id)).output_text == ANSWER
        assert (await two.oai.responses.retrieve(jp.id)).output_text == ANSWER
        conv = await two.oai.conversations.create(extra_headers=IN_EU)
        assert r.exists(conv_key(conv.id)) and len(hub.conversations) == 0
    finally:
        for s in sides:
            await close(s)
            assert s.gw.hub is not None
            await s.gw.hub.aclose()
        await hub.stop()
        shutil.rmtree(work, ignore_errors=True)
        r.close()


# --- the store itself ---------------------------------------------------------------------------------------
async def test_in_one_redis_an_answer_and_its_placeholder_move_in_one_step(port: int) -> None:
    store = RedisStore.from_url(url(port), "t", ["EU", "unbound"], ttl_s=60)
    book = store.responses
    try:
        for rid in ("r1", "r2", "r3"):
            await book.pending_add(Pending(rid, "t", "m", 1))
        assert (await book.mark("t", "r1", "cancelled")).status == "cancelled"  # type: ignore[union-attr]
        assert await book.cancelled([("t", "r1"), ("t", "r2"), ("u", "r1")]) == {"r1": "cancelled"}
        assert await book.complete(StoredResponse("r1", "t", "EU", "fra", {"id": "r1"}), None) == "cancelled"
        assert isinstance(await book.lookup("t", "r1"), Pending)  # the late answer was not stored
        late = await book.mark("t", "r1", "failed", {"code": "server_error", "message": "x"})
        assert late is not None and late.status == "cancelled" and late.error is None  # final never moves
        assert await book.complete(StoredResponse("r2", "t", "EU", "fra", {"id": "r2"}), None) == "stored"
        assert isinstance(await book.lookup("t", "r2"), StoredResponse) and await book.mark("t", "r2", "x") is None
        assert await book.complete(StoredResponse("r3", "t", "US", "iad", {}), frozenset({"EU"})) == "refused"
        failed = await book.lookup("t", "r3")
        assert isinstance(failed, Pending) and failed.status == "failed" and failed.error is not None
        await book.pending_add(Pending("r4", "t", "m", 1, "in_progress"))
        assert (await book.pending_delete("t", "r4")).status == "in_progress"  # type: ignore[union-attr]
        assert await book.lookup("t", "r4") is not None  # a running one is not removed
        assert (await book.pending_delete("t", "r3")) is not None and await book.lookup("t", "r3") is None
        assert await book.lookup("u", "r2") is None  # another tenant's id: absent
    finally:
        await store.aclose()


async def test_across_two_stores_a_cancel_during_the_write_wins_as_a_whole(port: int) -> None:
    """Placeholders in memory, EU's answers in Redis: a cancel that lands while the answer is being written
    removes the answer again, so the cancel's client and every later read agree."""
    store = RedisStore.from_url(url(port), "t", ["EU"], ttl_s=60)
    pend = MemoryResponses(ResponseStore())
    home = store.responses
    book = Responses({"EU": home}, pend, pend, ["EU", "US"])
    r = redis.Redis(port=port)
    try:
        write = home.put

        async def cancelled_meanwhile(record: StoredResponse, allowed: frozenset[str] | None) -> bool:
            await book.mark(record.tenant, record.id, "cancelled")  # another gateway's cancel, mid-write
            return await write(record, allowed)

        await book.pending_add(Pending("r1", "t", "m", 1, "in_progress"))
        home.put = cancelled_meanwhile  # type: ignore[method-assign]
        assert await book.complete(StoredResponse("r1", "t", "EU", "fra", {"id": "r1"}), None) == "cancelled"
        home.put = write  # type: ignore[method-assign]
        found = await book.lookup("t", "r1")
        assert isinstance(found, Pending) and found.status == "cancelled" and not r.exists("aigrid:t:resp:EU:{t}:r1")
        await book.pending_add(Pending("r2", "t", "m", 1))
        assert await book.complete(StoredResponse("r2", "t", "EU", "fra", {"id": "r2"}), None) == "stored"
        assert r.exists("aigrid:t:resp:EU:{t}:r2") and pend.store.lookup("t", "r2") is None
        assert isinstance(await book.lookup("t", "r2"), StoredResponse)
        await book.pending_add(Pending("r3", "t", "m", 1))
        assert await book.complete(StoredResponse("r3", "t", "EU", "fra", {}), frozenset({"US"})) == "refused"
        assert (await book.lookup("t", "r3")).status == "failed"  # type: ignore[union-attr]
    finally:
        await store.aclose()
        r.close()


async def test_a_read_between_an_answer_written_and_its_placeholder_dropped_still_finds_it() -> None:
    """Across two stores the answer is written before its placeholder is dropped; a lookup asks both at once,
    so it may read the answer's store just before the write and the placeholder's just after the drop: it
    then reads the answer's store again rather than answer a 404."""

    class WrittenJustAfterTheFirstRead(MemoryResponses):
        reads = 0

        async def lookup(self, tenant: str, rid: str) -> StoredResponse | Pending | None:
            self.reads += 1
            return None if self.reads == 1 else await super().lookup(tenant, rid)

    home = WrittenJustAfterTheFirstRead(ResponseStore())
    home.store.put(StoredResponse("r1", "t", "EU", "fra", {"id": "r1"}), None)
    book = Responses({"EU": home}, home, MemoryResponses(ResponseStore()), ["EU"])
    assert isinstance(await book.lookup("t", "r1"), StoredResponse) and home.reads == 2
    assert await book.lookup("t", "r2") is None


def test_the_spec_names_a_store_of_no_sites_jurisdiction_and_a_url_that_is_not_redis() -> None:
    raw = load_spec(DEMO).model_dump(mode="json")
    raw["gateway"]["stores"] = {"EU": "redis://eu-redis:6379/0", "unbound": "redis://eu-redis:6379/1"}
    assert parse_spec(raw).gateway.stores["EU"] == "redis://eu-redis:6379/0"
    raw["gateway"]["stores"] = {"CH": "redis://ch:6379/0", "US": "http://us-redis"}
    with pytest.raises(SpecError) as bad:
        parse_spec(raw)
    assert "gateway.stores.CH: no site is in jurisdiction 'CH'" in str(bad.value)
    assert "gateway.stores.US: 'http://us-redis' is not a Redis URL" in str(bad.value)
