"""Anthropic's Message Batches API through the in-process gateway with FAKE engines and the official anthropic
SDK as the client (x-api-key): create, poll, results; each request runs like a live POST /v1/messages through
the one pipeline at urgency `batch`, with its own audit record, on the OpenAI Batch API's runner; validation
400s naming the request's field; a firewall block and an engine failure are errored results; cancel mid-way
(the requests never started are canceled); delete only once ended; tenants never see each other's batches;
a batch stopped by a shutdown resumes in the next gateway; a batch past its window ends with expired results."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types.messages import MessageBatch

from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.message_batch_line import MESSAGE_BATCH_LINE_ROUTE, request_route
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.models import QuotaSpec
from tests.gateway import batch_helpers
from tests.gateway.batch_helpers import (
    ATTACK,
    MODEL,
    TENANT,
    Gated,
    batch_spec,
    engines_for,
    lines_held,
    received,
    started,
    stopped,
    storage_spec,
)
from tests.gateway.conftest import audit_rows, handles_opened_after_a_cancel
from tests.gateway.message_batch_helpers import clients, req, results, until_ended
from tests.gateway.sdk_clients import anthropic_client, openai_client

engines, gw = batch_helpers.engines, batch_helpers.gw  # its fixtures


async def wait_for_slow(engines: dict[str, Gated]) -> None:
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if any("SLOW" in orjson.dumps(r).decode() for r in received(engines)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no SLOW request reached an engine")


async def test_create_poll_and_read_the_results(gw: Gateway, engines: dict[str, Gated]) -> None:
    claude, _ = clients(gw)
    created = await claude.messages.batches.create(requests=[
        req("a", "Name a river."), req("b", "Name a mountain.", system="Be brief.", max_tokens=12),
        req("c", "Name a lake.", temperature=0.2)])
    assert created.type == "message_batch" and created.id.startswith("msgbatch_")
    assert created.processing_status == "in_progress" and created.results_url is None and created.ended_at is None
    assert created.request_counts.processing == 3 and (created.expires_at - created.created_at).total_seconds() == 86400
    done = await until_ended(claude, created.id)
    counts = done.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (0, 3, 0, 0, 0)
    assert done.ended_at is not None and done.results_url == f"http://gw/v1/messages/batches/{created.id}/results"
    got = await results(claude, created.id)
    assert sorted(got) == ["a", "b", "c"]
    for r in got.values():
        assert r.result.type == "succeeded"
        message = r.result.message
        assert message.type == "message" and message.role == "assistant" and message.model == MODEL
        assert message.content[0].type == "text" and message.content[0].text == "Hello from the grid"
        assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    # each request ran like a live POST /v1/messages, translated to chat, as batch work
    sent = received(engines)
    assert len(sent) == 3 and any(r.get("max_tokens") == 12 and r["messages"][0]["role"] == "system" for r in sent)
    rows = [r for r in await audit_rows(gw) if r["extra"]["route"].startswith(MESSAGE_BATCH_LINE_ROUTE)]
    assert sorted(r["extra"]["route"] for r in rows) == sorted(request_route(created.id, c) for c in "abc")
    assert all(r["outcome"] == "ok" and r["tenant"] == "default" and r["extra"]["urgency"]["priority"] == "batch"
               for r in rows)
    for r in rows:
        decision = gw.decisions.get(r["request_id"])
        assert decision is not None and decision.to_dict()["urgency"]["class"] == "batch"
    routes = [r["extra"]["route"] for r in await audit_rows(gw)]
    assert "POST /v1/messages/batches" in routes and "GET /v1/messages/batches/{message_batch_id}/results" in routes
    # the Anthropic list holds it; OpenAI's batches and files do not show a message batch or its files
    assert [b.id async for b in claude.messages.batches.list()] == [created.id]
    oai = openai_client(build_app(gw)).with_options(default_headers=TENANT)
    assert (await oai.batches.list()).data == [] and (await oai.files.list()).data == []
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve("batch_" + created.id.removeprefix("msgbatch_"))


async def test_the_list_pages_newest_first(gw: Gateway) -> None:
    claude, _ = clients(gw)
    ids = [(await claude.messages.batches.create(requests=[req("a", f"hi {i}")])).id for i in range(3)]
    first = await claude.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more and first.last_id == ids[1]
    assert [b.id async for b in claude.messages.batches.list(limit=2)] == ids[::-1]  # the SDK pages on after_id
    newer = await claude.messages.batches.list(before_id=ids[0], limit=1)
    assert [b.id for b in newer.data] == [ids[1]] and newer.has_more
    for bid in ids:
        await until_ended(claude, bid)


BAD = [
    ("missing max_tokens", [req("a", "hi"), {"custom_id": "b", "params": {"model": MODEL, "messages": [
        {"role": "user", "content": "hi"}]}}], "requests.1.params.max_tokens"),
    ("bad custom_id", [req("a b", "hi")], "requests.0.custom_id"),
    ("long custom_id", [req("x" * 65, "hi")], "requests.0.custom_id"),
    ("duplicate custom_id", [req("a", "hi"), req("b", "hi"), req("a", "again")], "requests.2.custom_id"),
    ("unknown model", [req("a", "hi", model="claude-opus-9")], "requests.0.params.model"),
    ("streamed", [req("a", "hi", stream=True)], "requests.0.params.stream"),
    ("bad temperature", [req("a", "hi"), req("b", "hi", temperature=3)], "requests.1.params.temperature"),
    ("bad role", [req("a", "hi"), {"custom_id": "b", "params": {"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "tool", "content": "hi"}]}}], "requests.1.params.messages.0.role"),
    ("too many tokens", [req("a", "hi", max_tokens=10**6)], "requests.0.params.max_tokens"),
    ("empty text", [req("a", "hi"), req("b", "")], "requests.1.params.messages.0"),
    ("too many requests", [req(f"r{i}", "hi") for i in range(4)], "requests"),
    ("no request", [], "requests"),
]


@pytest.mark.parametrize("requests,param", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_a_bad_request_is_a_400_naming_its_field(tmp_path: Path, engines: dict[str, Gated],
                                                       requests: list[dict[str, Any]], param: str) -> None:
    gw = await started(batch_spec(tmp_path, max_lines=3), engines)
    try:
        claude, _ = clients(gw)
        with pytest.raises(anthropic.BadRequestError) as bad:
            await claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        body = bad.value.body
        assert isinstance(body, dict) and body["type"] == "error", body
        message = body["error"]["message"]  # the whole field named, not a longer one that starts with it
        assert body["error"]["type"] == "invalid_request_error", body
        assert message.startswith(f"{param}:") or f"'{param}'" in message, body
        assert [b async for b in claude.messages.batches.list()] == []
        await asyncio.sleep(0.05)
        assert received(engines) == []
    finally:
        await stopped(gw)


async def test_a_body_too_large_or_not_a_json_object_is_refused(tmp_path: Path, engines: dict[str, Gated]) -> None:
    """Create reads at most gateway.batch.max_file_bytes, declared or streamed (413), and the body must be a
    JSON object (400)."""
    gw = await started(batch_spec(tmp_path, max_file_bytes=1000), engines)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers=TENANT) as c:
            big = orjson.dumps({"requests": [req(f"r{i}", "hi") for i in range(6000)]})
            assert len(big) > 1000

            async def chunked() -> AsyncIterator[bytes]:
                yield big

            for content in (big, chunked()):
                r = await c.post("/v1/messages/batches", content=content)
                assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large", r.text
                # one wording for a body past its limit, the figure with separators (thirty-second session)
                assert r.json()["error"]["message"] == ("the batch is larger than 1,000 bytes, the most one batch "
                                                        "may hold (gateway.batch.max_file_bytes)"), r.text
            for content in (b"{", b"[]"):
                r = await c.post("/v1/messages/batches", content=content)
                assert r.status_code == 400 and "JSON body" in r.json()["error"]["message"], r.text
            assert (await c.get("/v1/messages/batches")).json()["data"] == []
    finally:
        await stopped(gw)


async def test_an_unknown_field_is_a_400_naming_it(gw: Gateway) -> None:
    claude, _ = clients(gw)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.post("/v1/messages/batches", body={"requests": [req("a", "hi")], "colour": "red"},
                          cast_to=MessageBatch)
    assert "colour" in bad.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as limit:
        await claude.messages.batches.list(limit=1001)
    assert "limit" in limit.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as ordered:  # not Anthropic's (it was accepted and ignored)
        await claude.messages.batches.list(extra_query={"order": "asc"})
    assert ordered.value.body["error"]["message"].startswith("order: ")  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.cancel("msgbatch_nope")


async def test_a_firewall_block_and_an_engine_failure_are_errored_results(gw: Gateway,
                                                                           engines: dict[str, Gated]) -> None:
    claude, _ = clients(gw)
    created = await claude.messages.batches.create(requests=[req("fine", "Name a river."), req("attack", ATTACK),
                                                             req("broken", "FAIL please")])
    done = await until_ended(claude, created.id)
    assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 2)
    got = await results(claude, created.id)
    assert got["fine"].result.type == "succeeded"
    blocked = got["attack"].result
    assert blocked.type == "errored" and blocked.error.type == "error"
    assert blocked.error.error.type == "invalid_request_error" and "messages.0.content" in blocked.error.error.message
    failed = got["broken"].result
    assert failed.type == "errored" and failed.error.error.type == "api_error"
    assert failed.error.request_id and failed.error.request_id.startswith("dec-")  # aigrid explain reads it
    assert not any(ATTACK in orjson.dumps(r).decode() for r in received(engines))  # no engine read it
    rows = {r["extra"]["route"]: r for r in await audit_rows(gw)}
    attack = rows[request_route(created.id, "attack")]
    assert attack["outcome"] == "error:firewall_blocked" and attack["firewall"][0]["action"] == "blocked"
    assert rows[request_route(created.id, "broken")]["outcome"] == "error:upstream_failed"
    # each errored result names the audit record that holds it: one refused before any decision too (it had none)
    assert blocked.error.request_id and blocked.error.request_id.startswith("req-")
    assert attack["request_id"] == blocked.error.request_id
    assert rows[request_route(created.id, "broken")]["request_id"] == failed.error.request_id


async def test_cancel_mid_way_cancels_the_requests_not_started(tmp_path: Path, engines: dict[str, Gated]) -> None:
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        claude, _ = clients(gw)
        for e in engines.values():
            e.gate.clear()
        created = await claude.messages.batches.create(
            requests=[req("one", "Name a river."), *(req(f"slow{i}", f"SLOW {i}") for i in range(4))])
        await wait_for_slow(engines)
        canceling = await claude.messages.batches.cancel(created.id)
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
        with pytest.raises(anthropic.BadRequestError) as busy:  # Anthropic's rule: cancel it, let it end, delete
            await claude.messages.batches.delete(created.id)
        assert "cancel" in busy.value.body["error"]["message"]  # type: ignore[index]
        for e in engines.values():
            e.gate.set()  # the running request finishes; no other starts
        done = await until_ended(claude, created.id)
        counts = done.request_counts
        assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (0, 2, 0, 3, 0)
        got = await results(claude, created.id)
        assert {cid: r.result.type for cid, r in got.items()} == {
            "one": "succeeded", "slow0": "succeeded", "slow1": "canceled", "slow2": "canceled", "slow3": "canceled"}
        assert len(received(engines)) == 2
        assert (await claude.messages.batches.cancel(created.id)).processing_status == "ended"  # unchanged
        deleted = await claude.messages.batches.delete(created.id)
        assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.batches.retrieve(created.id)
        folder = Path(gw.spec.gateway.batch.dir) / "default"
        assert list(folder.iterdir()) == []  # its requests and results are gone with it
    finally:
        await stopped(gw)


async def test_another_tenant_gets_404(gw: Gateway) -> None:
    claude, other = clients(gw)
    done = await until_ended(claude, (await claude.messages.batches.create(requests=[req("a", "hi")])).id)
    for call in (other.messages.batches.retrieve, other.messages.batches.cancel, other.messages.batches.delete):
        with pytest.raises(anthropic.NotFoundError) as missing:
            await call(done.id)
        assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        await other.get(f"/v1/messages/batches/{done.id}/results", cast_to=object)
    assert [b async for b in other.messages.batches.list()] == []
    assert (await claude.messages.batches.retrieve(done.id)).id == done.id  # still there for its owner
    oai = openai_client(build_app(gw)).with_options(default_headers=TENANT)
    for openai_call in (oai.batches.retrieve, oai.batches.cancel):  # nor can the OpenAI Batch API
        with pytest.raises(openai.NotFoundError):
            await openai_call(done.id)


async def test_a_batch_stopped_by_shutdown_resumes_in_the_next_gateway(tmp_path: Path) -> None:
    first_engines = engines_for(tmp_path)
    first = await started(batch_spec(tmp_path, concurrency=1, drain_s=0.05), first_engines)
    claude, _ = clients(first)
    for e in first_engines.values():
        e.gate.clear()
    created = await claude.messages.batches.create(requests=[
        req("r1", "Name a river."), req("r2", "SLOW river"), req("r3", "Name a lake."), req("r4", "Name a sea.")])
    await wait_for_slow(first_engines)
    await stopped(first)  # r2 is stopped after drain_s; nothing new starts; the claim is released
    second_engines = engines_for(tmp_path)
    second = await started(batch_spec(tmp_path, concurrency=1), second_engines)
    try:
        claude2, _ = clients(second)
        paused = await claude2.messages.batches.retrieve(created.id)
        assert paused.processing_status == "in_progress" and paused.request_counts.succeeded == 1
        assert second.batches is not None
        await second.batches.start()  # what the lifespan does: claim what nobody runs
        done = await until_ended(claude2, created.id)
        assert done.request_counts.succeeded == 4
        got = await results(claude2, created.id)
        assert sorted(got) == ["r1", "r2", "r3", "r4"] and all(r.result.type == "succeeded" for r in got.values())
        assert len(received(second_engines)) == 3  # r1 is not run again
    finally:
        await stopped(second)


async def test_a_batch_past_its_window_ends_with_expired_results(gw: Gateway, engines: dict[str, Gated]) -> None:
    claude, _ = clients(gw)
    assert gw.batches is not None
    await gw.batches.stop()  # nobody runs it while its window is moved into the past
    created = await claude.messages.batches.create(requests=[req("a", "hi"), req("b", "hi")])
    db = sqlite3.connect(Path(gw.spec.gateway.batch.dir) / "index.sqlite3")
    with db:
        db.execute("UPDATE batches SET object = json_set(object, '$.expires_at', ?) WHERE id = ?",
                   (int(time.time()) - 1, created.id))
    db.close()
    await gw.batches.start()
    done = await until_ended(claude, created.id)
    counts = done.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (0, 0, 0, 0, 2)
    assert {cid: r.result.type for cid, r in (await results(claude, created.id)).items()} == {
        "a": "expired", "b": "expired"}
    assert received(engines) == []


@pytest.mark.parametrize(("refusal", "status", "counts"), [
    (RuntimeError("the output file failed"), "completed", (0, 2, 1, 0, 0)),
    (OSError(errno.ENOSPC, "No space left on device"), "failed", (0, 1, 2, 0, 0)),
], ids=["write-failed", "disk-full"])
async def test_a_request_whose_result_was_lost_is_an_errored_result(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch, refusal: Exception, status: str,
        counts: tuple[int, ...]) -> None:
    """A request that ran (charged) whose result the disk refused is in neither file (the batch's OpenAI `errors`
    name it, `result_lost`). The Anthropic view showed it as a request never run: `canceled` in a batch that
    completed (its write failed, the others went on), or errored "not run: its batch failed" where the disk was full.
    It is an `errored` result saying that it ran, counted in request_counts.errored."""
    from aigrid.gateway import batch_output

    real, calls = batch_output._append, [0]

    def refusing(p: Path, text: bytes) -> None:
        calls[0] += 1
        if calls[0] == 2:  # the second request's result
            raise refusal
        real(p, text)

    monkeypatch.setattr(batch_output, "_append", refusing)
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        claude, _ = clients(gw)
        created = await claude.messages.batches.create(requests=[req(f"q{i}", "hi") for i in range(3)])
        done = await until_ended(claude, created.id)
        c = done.request_counts
        assert (c.processing, c.succeeded, c.errored, c.canceled, c.expired) == counts, c
        got = await results(claude, created.id)
        assert sorted(got) == ["q0", "q1", "q2"] and got["q0"].result.type == "succeeded"
        lost = got["q1"].result
        assert lost.type == "errored" and lost.error.error.type == "api_error"
        assert "ran and was charged" in lost.error.error.message
        assert got["q2"].result.type == ("succeeded" if status == "completed" else "errored")
        assert gw.batches is not None
        row = await gw.batches.store.row(created.id)  # the batch as the runner ended it
        assert row is not None and row.obj["status"] == status
        assert [e["code"] for e in row.obj["errors"]["data"]][-1] == "result_lost"
    finally:
        await stopped(gw)


async def test_a_lost_result_carries_its_request_id_and_says_charged_only_where_it_was(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests whose results the disk refused: one answered (charged), one the firewall blocked before any
    engine (nothing charged). Each errored result carries its request id, the one its audit record holds (the
    decision's for the routed one: `aigrid explain`), as every other errored result does; the batch's `result_lost`
    errors keep it as aigrid_request_id; "ran and was charged" only for the one charged. Until the thirtieth session
    a lost result had no request id, and each said it was charged."""
    from aigrid.gateway import batch_output

    real, calls = batch_output._append, [0]

    def refusing(p: Path, text: bytes) -> None:
        calls[0] += 1
        if calls[0] >= 2:  # every result after the first
            raise RuntimeError("the output file failed")
        real(p, text)

    monkeypatch.setattr(batch_output, "_append", refusing)
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        claude, _ = clients(gw)
        created = await claude.messages.batches.create(requests=[req("q0", "hi"), req("blocked", ATTACK),
                                                                 req("answered", "hi")])
        done = await until_ended(claude, created.id)
        assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 2)
        got = await results(claude, created.id)
        rows = {r["extra"]["route"]: r for r in await audit_rows(gw)}
        for cid, charged in (("blocked", False), ("answered", True)):
            lost = got[cid].result
            assert lost.type == "errored" and lost.error.error.type == "api_error"
            assert lost.error.request_id == rows[request_route(created.id, cid)]["request_id"]
            assert ("ran and was charged" in lost.error.error.message) is charged, lost.error.error.message
        assert got["answered"].result.error.request_id.startswith("dec-")  # type: ignore[union-attr]
        assert "nothing charged" in got["blocked"].result.error.error.message  # type: ignore[union-attr]
        assert gw.batches is not None
        row = await gw.batches.store.row(created.id)
        assert row is not None
        assert {e["aigrid_custom_id"]: e["aigrid_request_id"] for e in row.obj["errors"]["data"]} == {
            cid: got[cid].result.error.request_id for cid in ("blocked", "answered")}  # type: ignore[union-attr]
    finally:
        await stopped(gw)


async def test_a_request_larger_than_a_live_one_may_be_is_errored(tmp_path: Path, engines: dict[str, Gated]) -> None:
    """A message batch holds up to max_file_bytes; each of its requests no more than a live POST /v1/messages
    may (gateway.max_body_bytes): a larger one is errored (request_too_large), never read by an engine."""
    spec = batch_spec(tmp_path)
    gw = await started(spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_body_bytes": 4000})}),
                       engines)
    try:
        claude, _ = clients(gw)
        big = "Name a river. " * 400
        created = await claude.messages.batches.create(requests=[req("big", big), req("small", "hi")])
        done = await until_ended(claude, created.id)
        assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 1)
        got = await results(claude, created.id)
        big_result = got["big"].result
        assert big_result.type == "errored" and got["small"].result.type == "succeeded"
        assert big_result.error.error.type == "request_too_large"
        assert big_result.error.error.message == ("this request is larger than 4,000 bytes, the most one request may "
                                                  "hold (gateway.max_body_bytes)"), big_result.error.error.message
        assert all("river" not in orjson.dumps(r).decode() for r in received(engines))
    finally:
        await stopped(gw)


async def test_a_tenants_message_batches_are_bounded_by_its_storage_quota(tmp_path: Path,
                                                                           engines: dict[str, Gated]) -> None:
    """A message batch's requests and results are files of its tenant on the gateway's disk: batch after batch
    filled it, bounded only by max_file_bytes each. They count in the tenant's storage quota (quotas.storage_bytes,
    storage_files) with its Files API uploads: a batch past it is Anthropic's 400 invalid_request_error naming the
    limit; its results count once it has ended; deleting it makes room again. A tenant without room for a batch's
    three files (its requests and two result files) is refused before its body is read (it was read and checked
    whole, up to max_file_bytes, then refused)."""
    gw = await started(storage_spec(tmp_path, 2000, 4), engines)
    try:
        claude, other = clients(gw)
        with pytest.raises(anthropic.BadRequestError) as big:
            await claude.messages.batches.create(requests=[req(f"r{i}", "Name a river. " * 10) for i in range(20)])
        err = big.value.body
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err  # type: ignore[index]
        assert "requests: " in err["error"]["message"] and "2000 bytes (quotas.storage_bytes)" in err["error"]["message"]  # type: ignore[index]
        assert not list(Path(gw.spec.gateway.batch.dir).glob("default/*"))  # nothing of it kept
        done = await until_ended(claude, (await claude.messages.batches.create(requests=[req("a", "hi")])).id)
        assert done.request_counts.succeeded == 1  # its requests and its results: two files, room for two more
        with pytest.raises(anthropic.BadRequestError) as many:
            await claude.messages.batches.create(requests=[req("b", "hi")])
        assert "4 files (quotas.storage_files)" in many.value.body["error"]["message"]  # type: ignore[index]
        assert (await other.messages.batches.create(requests=[req("o", "hi")])).id  # another tenant's room is its own
        read: list[bool] = []

        async def body() -> AsyncIterator[bytes]:
            read.append(True)
            yield orjson.dumps({"requests": [req("c", "hi")]})

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers=TENANT) as c:  # at its limit: refused before its body is read
            r = await c.post("/v1/messages/batches", content=body())
        assert r.status_code == 400 and "4 files (quotas.storage_files)" in r.json()["error"]["message"], r.text
        assert read == []
        await claude.messages.batches.delete(done.id)
        assert (await claude.messages.batches.create(requests=[req("b", "hi")])).id
    finally:
        await stopped(gw)


async def test_reading_the_results_counts_against_the_requests_per_minute(tmp_path: Path,
                                                                          engines: dict[str, Gated]) -> None:
    """Results parse and write again every line of the batch's output (up to max_file_bytes) on the event loop,
    and were counted in no quota: a tenant could read them without end. Each read of the results is now one
    request against requests per minute (Anthropic's 429 rate_limit_error past it, with retry-after); polling
    the batch is not counted."""
    spec = batch_spec(tmp_path)
    spec = spec.model_copy(update={"security": spec.security.model_copy(update={
        "default_quotas": QuotaSpec(requests_per_min=4)})})
    gw = await started(spec, engines)
    gw.guard.quotas.clock = lambda: 1_800_000_030.0  # one quota window for the whole test
    try:
        claude = clients(gw)[0].with_options(max_retries=0)
        done = await until_ended(claude, (await claude.messages.batches.create(requests=[req("a", "hi")])).id)
        # the create and its one request's run count 2; two reads of the results 3 and 4
        assert [sorted(await results(claude, done.id)) for _ in range(2)] == [["a"], ["a"]]
        with pytest.raises(anthropic.RateLimitError) as limited:
            await results(claude, done.id)
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert "retry-after" in limited.value.response.headers
        assert (await claude.messages.batches.retrieve(done.id)).processing_status == "ended"  # a poll: not counted
    finally:
        await stopped(gw)


async def test_a_model_the_key_may_not_use_is_refused_at_creation_whether_it_exists_or_not(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys enforced, a key narrowed to other models: a request naming a model it may not use is the creator's
    403 naming the field, the same for a model of the grid and one that does not exist (before, a name the grid
    lacks was a 400 "does not exist", so the key learned which of its guesses the grid has)."""
    secret = "batch-test-secret-0123456789"
    monkeypatch.setenv("AIGRID_KEY_SECRET", secret)
    ring = KeyRing(secret.encode())
    narrow = ring.issue("default", Scopes(models=frozenset({"llama-*"})))
    ring.save(tmp_path / "keys.json")
    spec = batch_spec(tmp_path)
    gw = await started(spec.model_copy(update={"security": spec.security.model_copy(update={"enforce": True})}),
                       engines)
    try:
        claude = anthropic_client(build_app(gw)).with_options(api_key=narrow.api_key)
        for model in (MODEL, "no-such-model"):
            with pytest.raises(anthropic.PermissionDeniedError) as denied:
                await claude.messages.batches.create(requests=[req("a", "hi", model=model)])  # type: ignore[list-item]
            body = denied.value.body
            assert isinstance(body, dict) and body["error"]["type"] == "permission_error", body
            assert body["error"]["message"].startswith("requests.0.params.model: this key may not use"), body
        assert received(engines) == []
    finally:
        await stopped(gw)


async def test_large_creates_are_checked_one_at_a_time_and_shed_past_their_wait(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """A create reads up to max_file_bytes and checking it takes several times that in memory: creates side by
    side (one tenant or many) took the process past a machine's memory. A body larger than a live request may
    be (gateway.max_body_bytes) is parsed and checked in its turn, one at a time per process: another waits
    (on disk) and past its wait is shed (Anthropic's 429 rate_limit_error, retry-after); a small one is not held
    up; once the first is done the next is served. A body still arriving holds no turn (a slow client cannot
    keep every other large create out)."""
    spec = batch_spec(tmp_path)
    gw = await started(spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_body_bytes": 2000})}),
                       engines)
    try:
        app = build_app(gw)
        assert gw.batches is not None
        api = gw.batches.message_batches_api
        api.large_wait_s = 0.2
        checking, go = threading.Event(), threading.Event()
        check = api._check

        def held_check(*args: Any) -> int:  # the first large create stays in its check until `go`
            if not checking.is_set():
                checking.set()
                go.wait(10)
            return check(*args)

        monkeypatch.setattr(api, "_check", held_check)
        large = orjson.dumps({"requests": [req(f"r{i}", "Name a river.") for i in range(40)]})
        small = orjson.dumps({"requests": [req("s", "hi")]})
        assert len(small) < 2000 < len(large)
        arrived, arriving = asyncio.Event(), asyncio.Event()

        async def chunked() -> AsyncIterator[bytes]:
            yield large

        async def slow() -> AsyncIterator[bytes]:
            yield large[:100]
            arriving.set()  # its first 100 bytes read: the create waits on the rest
            await arrived.wait()
            yield large[100:]

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     headers=TENANT) as c:
            first = asyncio.create_task(c.post("/v1/messages/batches", content=large))
            # its check (a thread) waited for, up to 60 s: a loaded machine can start it late
            assert await asyncio.to_thread(checking.wait, 60), "the first large create was never checked"
            for content in (chunked(), large):  # sent in chunks, or declared past max_body_bytes
                shed = await c.post("/v1/messages/batches", content=content)
                assert shed.status_code == 429, shed.text
                assert shed.json()["error"]["type"] == "rate_limit_error" and shed.headers["retry-after"] == "1"
                assert "retry later" in shed.json()["error"]["message"]
            assert (await c.post("/v1/messages/batches", content=small)).status_code == 200  # a small one is not held
            go.set()
            assert (await first).status_code == 200
            trickling = asyncio.create_task(c.post("/v1/messages/batches", content=slow()))
            await asyncio.wait_for(arriving.wait(), 60)  # still arriving (waited on, not slept for)
            assert (await c.post("/v1/messages/batches", content=large)).status_code == 200  # its turn, not the slow one's
            arrived.set()
            assert (await trickling).status_code == 200
    finally:
        await stopped(gw)


_PEAK = """
import asyncio, sys, tempfile
from pathlib import Path
import httpx, orjson
from aigrid.gateway.app import build_app
from tests.gateway.test_batches import TENANT, batch_spec, engines_for, started, stopped

def rss(key):
    return next(int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in
                Path("/proc/self/status").read_text().splitlines()) if k == key)

async def main():
    tmp = Path(tempfile.mkdtemp())
    gw = await started(batch_spec(tmp), engines_for(tmp))
    turn = "Summarise this paragraph in one sentence. " * 4
    body = orjson.dumps({"requests": [{"custom_id": f"r{i}", "params": {"model": "smollm2-135m", "max_tokens": 64,
        "messages": [{"role": r, "content": [{"type": "text", "text": f"{turn} {i}"}]} for r in ("user", "assistant") * 3
                     ] + [{"role": "user", "content": "Go."}]}} for i in range(4000)]})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                 headers=TENANT) as c:
        assert (await c.post("/v1/messages/batches", content=b'{"requests": 1}')).status_code == 400  # warm
        Path("/proc/self/clear_refs").write_text("5")  # the peak RSS from here
        base = rss("VmRSS")
        r = await c.post("/v1/messages/batches", content=body)
        assert r.status_code == 200, r.text
        print((rss("VmHWM") - base) / len(body))
    await stopped(gw)

asyncio.run(main())
"""


def test_checking_a_batch_holds_its_parsed_json_not_also_a_validated_copy() -> None:
    """Create held the body's bytes, its parsed JSON, every request validated again as objects, and the input
    file twice (a buffer and its copy) at once: 10.7 x the body at its peak (RSS above the body, 91 MiB of
    multi-turn requests: 976 MiB). The body is dropped once parsed, each request once written (to a file past a
    megabyte). Measured in a process of its own (a test's process reuses memory freed before): the peak RSS of
    one create of 7 MiB through the in-process client (its own copies of the body included), above what was
    resident, was 13.4 x the body, and is under 11 x (9.2 x)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the peak RSS is read from Linux's /proc")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _PEAK], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    ratio = float(done.stdout.split()[-1])
    assert ratio < 11, f"{ratio:.1f} x the body"


async def test_a_message_batchs_body_is_spooled_on_the_stores_disk(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """A create's body and the requests' file were spooled past a megabyte into the system's temporary folder, a disk
    the floor (gateway.batch.min_free_bytes) did not watch. Both are spooled in the tenant's folder now, on the
    store's disk, as files with no name (nothing left behind by a process that dies)."""
    import tempfile

    places: list[Any] = []
    real = tempfile.SpooledTemporaryFile

    def watched(*args: Any, **kwargs: Any) -> Any:
        places.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr("aigrid.gateway.message_batches_api.tempfile.SpooledTemporaryFile", watched)
    claude, _ = clients(gw)
    await until_ended(claude, (await claude.messages.batches.create(requests=[req("a", "hi")])).id)
    folder = Path(gw.spec.gateway.batch.dir).resolve() / "default"
    assert places == [str(folder), str(folder)], places


async def test_the_results_of_requests_never_run_are_read_without_holding_them(tmp_path: Path,
                                                                                engines: dict[str, Gated]) -> None:
    """The results of a canceled (or expired, or failed) batch name each request never run, read from its requests'
    file: each line was read whole and parsed for its custom_id, so one request of 8 MiB was held twice over by every
    results call. They are read as a running batch reads them (batch_input.LineReader: at most a request's bound,
    gateway.max_body_bytes, a longer line's head only)."""
    import tracemalloc

    spec = batch_spec(tmp_path, concurrency=1)
    gw = await started(spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_body_bytes": 64 << 10})}),
                       engines)
    try:
        claude, _ = clients(gw)
        for e in engines.values():
            e.gate.clear()
        created = await claude.messages.batches.create(requests=[req("slow", "SLOW"), req("big", "x" * (8 << 20))])
        await wait_for_slow(engines)
        await claude.messages.batches.cancel(created.id)
        for e in engines.values():
            e.gate.set()
        await until_ended(claude, created.id)
        tracemalloc.start()
        try:
            got = await results(claude, created.id)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert {cid: r.result.type for cid, r in got.items()} == {"slow": "succeeded", "big": "canceled"}
        assert peak < 4 << 20, peak
    finally:
        await stopped(gw)


async def test_a_body_the_disk_refuses_is_insufficient_storage_not_a_500(gw: Gateway,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A create's body is spooled to disk past a megabyte; a disk that refused it (ENOSPC) was a 500. It is the disk's
    refusal now, as a floor's (Anthropic's 529 overloaded_error, not retried), and nothing is left."""
    import errno

    from starlette import datastructures

    real = datastructures.UploadFile.write

    async def full(self: datastructures.UploadFile, chunk: bytes) -> None:
        if (self.size or 0) + len(chunk) > 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        await real(self, chunk)

    monkeypatch.setattr(datastructures.UploadFile, "write", full)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                 headers=TENANT) as c:
        r = await c.post("/v1/messages/batches", json={"requests": [req("a", "x" * (2 << 20))]})
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error", r.text
    assert r.headers["x-should-retry"] == "false"
    folder = Path(gw.spec.gateway.batch.dir) / "default"
    assert not folder.exists() or list(folder.iterdir()) == []


def _batch_files_open(gw: Gateway) -> list[str]:
    """The files under the batches' folder this process holds open, the batch index's own database left out: its
    connections hold index.sqlite3 and, while a write's transaction lasts, its -wal and -shm (counted, it made the
    check before the request fail about half the time). Folders are left out too: a thread that scans or syncs the
    folder holds it open for a moment (the folder itself, counted, failed the check before the request in a run of
    tests/gateway/test_[m-z]*.py at load ~10), and no response holds one."""
    import os

    from aigrid.gateway.batch_db import DB_NAME

    folder = str(Path(gw.spec.gateway.batch.dir).resolve())
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [p for p in held if p.startswith(folder) and not Path(p).name.startswith(DB_NAME) and not os.path.isdir(p)]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc")
async def test_the_results_files_are_closed_when_the_client_leaves_or_an_error_stops_them(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """The results' output file and the requests' file (for the requests never run) were closed only when the body
    was read to its end: a client that left during the output, or an error before the body started, left them
    open until the garbage collector found them (the requests' file never closed at all). Now they are closed when
    the response ends, however it ends."""
    from aigrid.gateway import message_batches_api

    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        await _results_stopped_early(gw, engines, monkeypatch, message_batches_api)
    finally:
        await stopped(gw)


async def _results_stopped_early(gw: Gateway, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch,
                                 message_batches_api: Any) -> None:
    claude, _ = clients(gw)
    for e in engines.values():
        e.gate.clear()
    created = await claude.messages.batches.create(requests=[req("slow", "SLOW"), req("never", "hi")])
    await wait_for_slow(engines)
    await claude.messages.batches.cancel(created.id)
    for e in engines.values():
        e.gate.set()
    done = await until_ended(claude, created.id)
    assert done.request_counts.canceled == 1  # a request never run: the requests' file is read too
    app = build_app(gw)
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": f"/v1/messages/batches/{created.id}/results",
             "raw_path": f"/v1/messages/batches/{created.id}/results".encode(), "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(k.encode(), v.encode()) for k, v in {"host": "localhost", **TENANT}.items()]}

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def gone(message: dict[str, Any]) -> None:  # the client leaves at the first line
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            raise OSError("connection reset by peer")

    assert _batch_files_open(gw) == []
    try:
        await app(scope, receive, gone)
    except Exception as stopped_by:  # noqa: BLE001 - held, with the frames of its traceback, while files are counted
        held: object = stopped_by
    else:
        held = None
    assert sent and sent[0]["status"] == 200, sent
    assert _batch_files_open(gw) == [], held  # before: the output file and the requests' file still open

    def broken(gw: Gateway) -> int:
        raise RuntimeError("a setting read after the files were opened")
    monkeypatch.setattr(message_batches_api, "line_bound", broken)
    sent.clear()

    async def stays(message: dict[str, Any]) -> None:
        sent.append(message)
    try:
        await app(scope, receive, stays)
    except Exception as stopped_by:  # noqa: BLE001
        held = stopped_by
    assert sent[0]["status"] == 500, sent
    assert _batch_files_open(gw) == [], held  # before: both left open (the requests' file never closed)


async def test_a_results_file_opened_after_its_request_was_cancelled_is_closed(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """S (twenty-second session): the results' files are opened in a thread (`to_thread(open)`); a cancel that
    landed while a thread opened one (the client gone) left that thread to finish, and the handle it opened to the
    garbage collector. It is closed as soon as the thread hands it over now."""
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    claude, _ = clients(gw)
    folder = str(Path(gw.spec.gateway.batch.dir).resolve())
    try:
        created = await claude.messages.batches.create(requests=[req("a", "hi")])
        await until_ended(claude, created.id)
        handles = await handles_opened_after_a_cancel(gw, f"/v1/messages/batches/{created.id}/results", TENANT,
                                                      lambda path: str(path.resolve()).startswith(folder), monkeypatch)
        assert handles and handles[0].closed  # before: open, left to the garbage collector
    finally:
        await stopped(gw)


async def test_a_tenant_s_message_batches_are_as_many_as_its_storage_files(
        tmp_path: Path, engines: dict[str, Gated]) -> None:
    """`gateway.batch.max_batches` counts OpenAI batches only (many may share one input file). A message batch needs
    no such count: each keeps its own requests file (hidden: the Files API neither lists nor deletes it; no expiry)
    while it exists, so `quotas.storage_files` bounds them (S, twenty-second session: checked, no cap added). Each
    asks room for its three files (requests, results, errors) at its create."""
    gw = await started(storage_spec(tmp_path, 1 << 20, 6), engines)
    try:
        claude, _ = clients(gw)
        made = [await claude.messages.batches.create(requests=[req(f"r{i}", "hi")]) for i in range(2)]
        for b in made:
            await until_ended(claude, b.id)  # ended: its results are a file too (requests + results: 4 files, and
            # 3 more would pass 6)
        with pytest.raises(anthropic.BadRequestError) as full:
            await claude.messages.batches.create(requests=[req("more", "hi")])
        assert "quotas.storage_files" in str(full.value), full.value
    finally:
        await stopped(gw)



async def test_a_message_batchs_result_files_count_from_its_start(tmp_path: Path, engines: dict[str, Gated]) -> None:
    """Leftover of s34 (area L): a message batch's create asked room for its requests file only, and its two result
    files (results, errors) counted each from the line that made it, the line written all the same: a tenant allowed
    2 files made a batch and ended with 3; one allowed 3 uploaded a file while the batch's first line ran and held 4.
    As an OpenAI batch (1e6811b): the create asks room for the three files (400 naming quotas.storage_files), and the
    batch counts both result files before its first line (an upload that would pass the count is refused)."""
    gw = await started(storage_spec(tmp_path, 1 << 20, 2, concurrency=1), engines)
    try:
        claude, _ = clients(gw)
        with pytest.raises(anthropic.BadRequestError) as refused:  # before: made, then 3 files
            await claude.messages.batches.create(requests=[req("a", "hi"), req("b", "FAIL please")])
        message = refused.value.body["error"]["message"]  # type: ignore[index]
        assert message.startswith("requests: ") and "2 files (quotas.storage_files); a message batch's 3 files" in message
    finally:
        await stopped(gw)
    gw = await started(storage_spec(tmp_path / "upload", 1 << 20, 3, concurrency=1), engines_for(tmp_path / "upload"))
    uploaded = asyncio.Event()
    try:
        app = build_app(gw)  # one app, its runner (gw.batches) the one both clients reach
        claude = anthropic_client(app).with_options(default_headers=TENANT)
        oai = openai_client(app).with_options(default_headers=TENANT)
        waiting = lines_held(gw, uploaded)
        created = await claude.messages.batches.create(requests=[req("a", "hi"), req("b", "FAIL please")])
        await asyncio.wait_for(waiting.wait(), 30)  # its first line runs: no result file written yet
        with pytest.raises(openai.BadRequestError) as full:  # before: taken (2 files), the batch then made 2 more
            await oai.files.create(file=("more.jsonl", b'{"custom_id": "x"}\n'), purpose="batch")
        assert "3 files (quotas.storage_files)" in full.value.body["message"]  # type: ignore[index]
        uploaded.set()
        done = await until_ended(claude, created.id)
        assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 1), done
        assert sorted([r.custom_id async for r in await claude.messages.batches.results(created.id)]) == ["a", "b"]
    finally:
        uploaded.set()
        await stopped(gw)


async def test_a_requests_file_whose_batch_could_not_be_stored_is_removed(gw: Gateway,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A create stores the batch's requests file, then the batch's row: where the row could not be written (the
    index's error), the requests file was left stored with no batch naming it (hidden from /v1/files, counting
    against the tenant's storage quota for good). It is removed, and the log says so."""
    import sqlite3

    claude, _ = clients(gw)  # builds the app, and with it gw.batches
    assert gw.batches is not None
    files, api = gw.batches.files, gw.batches.message_batches_api
    stored: list[Any] = []
    add = files.add

    async def kept(*args: Any, **kwargs: Any) -> Any:
        stored.append(await add(*args, **kwargs))
        return stored[-1]

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(files, "add", kept)
    monkeypatch.setattr(api.store, "create", broken)
    with pytest.raises(anthropic.InternalServerError):
        await claude.messages.batches.create(requests=[req("a", "hi")])
    assert len(stored) == 1
    tenant = stored[0].tenant
    assert await files.get(tenant, stored[0].id, hidden=True) is None  # before: still there
    assert not files.disk_path(stored[0]).exists()
    assert f"its requests file {stored[0].id} removed" in caplog.text
