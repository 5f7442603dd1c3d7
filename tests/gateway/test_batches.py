"""The OpenAI Batch API and the Files API it reads, through the in-process gateway with FAKE engines and the
official openai SDK as the client: upload, create, poll, download; each line runs through the one pipeline
at urgency `batch` with its own audit record; validation failures, firewall blocks and engine failures in
the error file; cancel mid-way; tenants never see each other's files or batches; a batch stopped by a
gateway's shutdown resumes in the next gateway over the same folder; the upload size limit."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from openai.types import Batch

from aigrid.gateway import batch_input
from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.batch_db import BatchDb
from aigrid.gateway.batch_input import Line
from aigrid.gateway.batch_line import BATCH_LINE_ROUTE, LineResult, line_route, request_line
from aigrid.gateway.batch_runner import BatchRunner
from aigrid.gateway.batch_store import BatchStore, StoredBatch
from aigrid.gateway.file_store import FileStore, StorageFull, StorageLimit
from aigrid.gateway.files_api import FORM_SLACK
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from aigrid.spec.models import AuditSpec, BatchSpec, QuotaSpec, SecuritySpec
from tests.gateway import batch_helpers
from tests.gateway.batch_helpers import (
    ATTACK,
    CHAT,
    MODEL,
    MULTIPART,
    OTHER,
    TENANT,
    Gated,
    audit_rows_at,
    batch_held_at_a_slow_line,
    batch_spec,
    clients,
    counted,
    engines_for,
    form_parts,
    jsonl,
    line,
    lines_held,
    lines_of,
    nested,
    open_gates,
    received,
    started,
    stopped,
    storage_spec,
    submit,
    until,
)
from tests.gateway.conftest import audit_rows, handles_opened_after_a_cancel, trickled
from tests.gateway.sdk_clients import anthropic_client, openai_client

engines, gw = batch_helpers.engines, batch_helpers.gw  # its fixtures

async def test_upload_create_poll_and_download(gw: Gateway, engines: dict[str, Gated]) -> None:
    oai, _ = clients(gw)
    data = jsonl(line("a", "Name a river."), line("b", "Name a mountain.", priority="interactive"),
                 line("c", "Name a lake.", max_tokens=12))
    uploaded = await oai.files.create(file=("requests.jsonl", data), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.bytes, uploaded.filename) == \
        ("file", "batch", len(data), "requests.jsonl")
    assert (await oai.files.retrieve(uploaded.id)).id == uploaded.id
    assert (await oai.files.content(uploaded.id)).content == data
    created = await oai.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h",
                                       metadata={"job": "eval-7"})
    assert created.status == "validating" and created.id.startswith("batch_") and created.metadata == {"job": "eval-7"}
    assert created.request_counts is not None and created.request_counts.total == 3
    assert created.expires_at == created.created_at + 24 * 3600 and created.model == MODEL
    done = await until(oai, created.id, "completed")
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 3, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (15, 12)
    out = await lines_of(oai, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == ["a", "b", "c"]
    for x in out:
        assert x["error"] is None and x["id"].startswith("batch_req_")
        assert x["response"]["status_code"] == 200 and x["response"]["request_id"].startswith("dec-")
        assert x["response"]["body"]["choices"][0]["message"]["content"] == "Hello from the grid"
    output_file = await oai.files.retrieve(done.output_file_id or "")
    assert output_file.purpose == "batch_output" and output_file.filename == f"{created.id}_output.jsonl"
    # each line was routed as batch work: the decision and the audit record say so, whatever the line asked
    for x in out:
        record = gw.decisions.get(x["response"]["request_id"])
        assert record is not None and record.to_dict()["urgency"]["class"] == "batch"
    assert all("priority" not in r for r in received(engines)) and len(received(engines)) == 3
    assert any(r.get("max_tokens") == 12 for r in received(engines))
    rows = await audit_rows(gw)
    line_rows = [r for r in rows if r["extra"]["route"].startswith(BATCH_LINE_ROUTE)]
    assert sorted(r["extra"]["route"] for r in line_rows) == sorted(line_route(created.id, c) for c in "abc")
    assert all(r["outcome"] == "ok" and r["tenant"] == "default" and r["extra"]["urgency"]["priority"] == "batch"
               and r["prompt_tokens"] == 5 for r in line_rows)
    routes = [r["extra"]["route"] for r in rows]
    assert "POST /v1/files" in routes and "POST /v1/batches" in routes
    assert [b.id for b in (await oai.batches.list()).data] == [created.id]
    listed = {f.id: f.purpose for f in (await oai.files.list()).data}
    assert listed == {uploaded.id: "batch", done.output_file_id: "batch_output"}
    assert [f.id for f in (await oai.files.list(purpose="batch")).data] == [uploaded.id]
    # once the batch has ended, its input may be deleted; its content is gone with it
    deleted = await oai.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        await oai.files.content(uploaded.id)


@pytest.mark.parametrize(("name", "saved"), [("../../etc/passwd", "passwd"), ("C:\\Users\\me\\r.jsonl", "r.jsonl"),
                                           ("data/requests.jsonl", "requests.jsonl"), ("..", "file")])
async def test_a_download_names_the_files_last_part_only(gw: Gateway, name: str, saved: str) -> None:
    """The file keeps the name it was uploaded with; its download's Content-Disposition names the last part only
    (it carried "../../etc/passwd" to a client that saves by the header)."""
    oai, _ = clients(gw)
    uploaded = await oai.files.create(file=(name, jsonl(line("a", "hi"))), purpose="batch")
    assert uploaded.filename in (name, saved)  # a multipart parser may keep a Windows path's last part only
    got = await oai.files.with_raw_response.content(uploaded.id)
    assert f'filename="{saved}"' in got.headers["content-disposition"], got.headers["content-disposition"]


async def test_completions_batches_run_too(gw: Gateway) -> None:
    oai, _ = clients(gw)
    data = jsonl({"custom_id": "p1", "method": "POST", "url": "/v1/completions",
                  "body": {"model": MODEL, "prompt": "Once upon a time"}})
    done = await until(oai, (await submit(oai, data, "/v1/completions")).id, "completed")
    assert [x["custom_id"] for x in await lines_of(oai, done.output_file_id)] == ["p1"]


BAD_FILES = [
    ("not json", jsonl(line("a", "hi"), b"{not json"), "invalid_json_line", 2, None),
    ("wrong url", jsonl(line("a", "hi"), line("b", "hi", url="/v1/completions")), "url_mismatch", 2, "url"),
    ("duplicate custom_id", jsonl(line("a", "hi"), line("b", "hi"), line("a", "again")), "duplicate_custom_id", 3,
     "custom_id"),
    ("unknown model", jsonl(line("a", "hi", model="gpt-9")), "model_not_found", 1, "body.model"),
    ("streamed", jsonl(line("a", "hi", stream=True)), "invalid_request", 1, "body.stream"),
    ("missing body", jsonl({"custom_id": "a", "method": "POST", "url": CHAT}), "missing_required_parameter", 1,
     "body"),
    ("method GET", jsonl({**line("a", "hi"), "method": "GET"}), "invalid_request", 1, "method"),
    ("empty", b"\n\n", "empty_file", None, None),
    ("nested too deep", jsonl(json.dumps(line("a", "hi", x=nested(300))).encode()), "invalid_request", 1,
     "body.x.a.a.a.a.a"),
    ("arrays nested too deep", jsonl(json.dumps(line("a", "hi", x=json.loads("[" * 300 + "]" * 300))).encode()),
     "invalid_request", 1, "body.x[0][0][0][0][0]"),  # OpenAI's form (until the thirty-eighth session body.x.0.0)
]


@pytest.mark.parametrize("data,code,at,param", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
async def test_a_file_with_mistakes_fails_validation_with_errors(gw: Gateway, engines: dict[str, Gated], data: bytes,
                                                                 code: str, at: int | None, param: str | None) -> None:
    oai, _ = clients(gw)
    created = await submit(oai, data)
    assert created.status == "failed" and created.failed_at is not None and created.errors is not None
    first = created.errors.data[0]
    assert (first.code, first.line, first.param) == (code, at, param), created.errors
    assert first.message
    assert (await oai.batches.retrieve(created.id)).status == "failed"
    await asyncio.sleep(0.1)
    assert received(engines) == []


async def test_bad_requests_are_400s_naming_the_field(gw: Gateway) -> None:
    oai, _ = clients(gw)
    f = await oai.files.create(file=("r.jsonl", jsonl(line("a", "hi"))), purpose="batch")
    cases = [({"input_file_id": f.id, "endpoint": CHAT}, "completion_window"),
             ({"input_file_id": f.id, "endpoint": CHAT, "completion_window": "48h"}, "completion_window"),
             ({"input_file_id": f.id, "endpoint": "/v1/embeddings", "completion_window": "24h"}, "endpoint"),
             ({"input_file_id": f.id, "endpoint": CHAT, "completion_window": "24h", "colour": "red"}, "colour"),
             ({"input_file_id": f.id, "endpoint": CHAT, "completion_window": "24h", "metadata": {"k": 5}},
              "metadata.k")]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as bad:
            await oai.post("/batches", body=body, cast_to=Batch)
        assert bad.value.body["param"] == param, (body, bad.value.body)  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        await oai.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    assert missing.value.body["param"] == "input_file_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as purpose:
        await oai.files.create(file=("r.jsonl", b"{}\n"), purpose="fine-tune")
    assert purpose.value.body["param"] == "purpose" and "batch" in purpose.value.body["message"]  # type: ignore[index]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                 headers=TENANT) as c:
        for form, upload, param in [({}, {"purpose": (None, b"batch")}, "file"), ({}, {"file": b"{}"}, "purpose"),
                                    ({"purpose": "batch", "colour": "red"}, {"file": b"{}"}, "colour"),
                                    ({"purpose": "batch", "expires_after[anchor]": "created_at",
                                      "expires_after[seconds]": "5"}, {"file": b"{}"}, "expires_after.seconds")]:
            r = await c.post("/v1/files", data=form, files=upload)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        r = await c.post("/v1/files", json={"purpose": "batch"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
    with pytest.raises(openai.BadRequestError) as limit:
        await oai.batches.list(limit=1000)
    assert limit.value.body["param"] == "limit"  # type: ignore[index]
    for order in ("asc", "desc", "sideways"):  # not OpenAI's (batches.list takes after and limit): was ignored
        with pytest.raises(openai.BadRequestError) as ordered:
            await oai.batches.list(extra_query={"order": order})
        assert ordered.value.body["param"] == "order" and "newest first" in ordered.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await oai.batches.cancel("batch_nope")


async def test_a_firewall_block_and_an_engine_failure_go_to_the_error_file(gw: Gateway, engines: dict[str, Gated]) -> None:
    oai, _ = clients(gw)
    data = jsonl(line("fine", "Name a river."), line("attack", ATTACK), line("broken", "FAIL please"))
    done = await until(oai, (await submit(oai, data)).id, "completed")
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    assert [x["custom_id"] for x in await lines_of(oai, done.output_file_id)] == ["fine"]
    errors = {x["custom_id"]: x for x in await lines_of(oai, done.error_file_id)}
    blocked = errors["attack"]["response"]
    assert blocked["status_code"] == 400 and blocked["body"]["error"]["code"] == "firewall_blocked"
    assert blocked["body"]["error"]["param"] == "messages[0].content" and errors["attack"]["error"] is None
    failed = errors["broken"]["response"]
    assert failed["status_code"] == 502 and failed["body"]["error"]["code"] == "upstream_failed"
    assert failed["request_id"].startswith("dec-")
    assert not any(ATTACK in orjson.dumps(r).decode() for r in received(engines))  # no engine read it
    rows = {r["extra"]["route"]: r for r in await audit_rows(gw)}
    attack = rows[line_route(done.id, "attack")]
    assert attack["outcome"] == "error:firewall_blocked" and attack["firewall"][0]["action"] == "blocked"
    assert rows[line_route(done.id, "broken")]["outcome"] == "error:upstream_failed"
    # each line names the audit record that holds it: a line refused before any decision too (it was "")
    assert blocked["request_id"].startswith("req-") and attack["request_id"] == blocked["request_id"]
    assert rows[line_route(done.id, "broken")]["request_id"] == failed["request_id"]


async def test_cancel_mid_way_keeps_what_was_done(tmp_path: Path, engines: dict[str, Gated]) -> None:
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        oai, _ = clients(gw)
        created = await batch_held_at_a_slow_line(oai, engines)
        cancelling = await oai.batches.cancel(created.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        assert (await oai.batches.cancel(created.id)).status == "cancelling"  # again: unchanged
        open_gates(engines)  # the running line finishes; no other starts
        done = await until(oai, created.id, "cancelled")
        assert done.cancelled_at is not None and done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 2, 0)
        assert sorted(x["custom_id"] for x in await lines_of(oai, done.output_file_id)) == ["one", "slow0"]
        assert len(received(engines)) == 2
        rows = [r for r in await audit_rows(gw) if r["extra"]["route"].startswith(BATCH_LINE_ROUTE)]
        assert len(rows) == 2 and all(r["outcome"] == "ok" for r in rows)
        assert "POST /v1/batches/{batch_id}/cancel" in [r["extra"]["route"] for r in await audit_rows(gw)]
        assert (await oai.batches.cancel(created.id)).status == "cancelled"  # unchanged
        completed = await until(oai, (await submit(oai, jsonl(line("x", "hi")))).id, "completed")
        with pytest.raises(openai.BadRequestError) as late:
            await oai.batches.cancel(completed.id)
        assert late.value.body["param"] == "batch_id"  # type: ignore[index]
    finally:
        await stopped(gw)


async def test_another_tenant_sees_nothing(gw: Gateway) -> None:
    oai, other = clients(gw)
    f = await oai.files.create(file=("r.jsonl", jsonl(line("a", "hi"))), purpose="batch")
    done = await until(oai, (await oai.batches.create(input_file_id=f.id, endpoint=CHAT,
                                                      completion_window="24h")).id, "completed")
    for fid in (f.id, done.output_file_id or ""):
        for call in (other.files.retrieve, other.files.content, other.files.delete):
            with pytest.raises(openai.NotFoundError):
                await call(fid)
    with pytest.raises(openai.NotFoundError):
        await other.batches.retrieve(done.id)
    with pytest.raises(openai.NotFoundError):
        await other.batches.cancel(done.id)
    with pytest.raises(openai.NotFoundError):  # nor run a batch on another tenant's file
        await other.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    assert (await other.files.list()).data == [] and (await other.batches.list()).data == []
    assert (await oai.files.retrieve(f.id)).id == f.id  # still there for its owner
    # the other tenant's files live in a folder of their own
    g = await other.files.create(file=("r.jsonl", jsonl(line("a", "hi"))), purpose="batch")
    assert gw.batches is not None
    theirs = await gw.batches.files.get("eu-bank", g.id)
    assert theirs is not None and theirs.path.startswith("eu-bank/")


async def test_anthropics_files_api_is_a_404_and_never_shows_the_batch_files(gw: Gateway) -> None:
    """The Anthropic SDK's client.files on the same paths listed OpenAI's batch files (without Anthropic's
    size_bytes or mime_type), downloaded them, and asked an upload for a purpose."""
    oai, _ = clients(gw)
    f = await oai.files.create(file=("r.jsonl", jsonl(line("a", "hi"))), purpose="batch")
    claude = anthropic_client(build_app(gw)).with_options(default_headers=TENANT)
    try:
        calls = [lambda: claude.files.list(), lambda: claude.beta.files.list(), lambda: claude.files.download(f.id),
                 lambda: claude.files.retrieve_metadata(f.id), lambda: claude.files.delete(f.id),
                 lambda: claude.files.upload(file=("notes.txt", b"hello", "text/plain"))]
        for call in calls:
            with pytest.raises(anthropic.NotFoundError) as not_found:
                await call()
            assert not_found.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
            assert "Anthropic's Files API is not served" in not_found.value.message
    finally:
        await claude.close()
    assert [x.id for x in (await oai.files.list()).data] == [f.id]  # kept, and still the OpenAI SDK's


async def test_an_unfinished_batch_keeps_its_input(gw: Gateway, engines: dict[str, Gated]) -> None:
    oai, _ = clients(gw)
    for e in engines.values():
        e.gate.clear()
    created = await submit(oai, jsonl(line("a", "SLOW")))
    with pytest.raises(openai.BadRequestError) as busy:
        await oai.files.delete(created.input_file_id)
    assert busy.value.body["param"] == "file_id" and created.id in busy.value.body["message"]  # type: ignore[index]
    open_gates(engines)
    await until(oai, created.id, "completed")
    assert (await oai.files.delete(created.input_file_id)).deleted


async def test_a_batch_stopped_by_shutdown_resumes_in_the_next_gateway(tmp_path: Path) -> None:
    first_engines = engines_for(tmp_path)
    first = await started(batch_spec(tmp_path, concurrency=1, drain_s=0.05), first_engines)
    oai, _ = clients(first)
    for e in first_engines.values():
        e.gate.clear()
    data = jsonl(line("l1", "Name a river."), line("l2", "SLOW river"), line("l3", "Name a lake."),
                 line("l4", "Name a sea."))
    created = await submit(oai, data)
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if any("SLOW" in orjson.dumps(r).decode() for r in received(first_engines)):
            break
        await asyncio.sleep(0.01)
    await stopped(first)  # l2 is stopped after drain_s; nothing new starts; the claim is released
    stopped_rows = [r for r in await audit_rows_at(tmp_path) if r["extra"]["route"].startswith(BATCH_LINE_ROUTE)]
    assert {(r["extra"]["route"], r["outcome"]) for r in stopped_rows} == {
        (line_route(created.id, "l1"), "ok"), (line_route(created.id, "l2"), "cancelled")}
    second_engines = engines_for(tmp_path)
    second = await started(batch_spec(tmp_path, concurrency=1), second_engines)
    try:
        oai2, _ = clients(second)
        paused = await oai2.batches.retrieve(created.id)
        assert paused.status == "in_progress" and paused.request_counts is not None
        assert paused.request_counts.completed == 1
        assert second.batches is not None
        await second.batches.start()  # what the lifespan does: claim what nobody runs
        done = await until(oai2, created.id, "completed")
        out = await lines_of(oai2, done.output_file_id)
        assert sorted(x["custom_id"] for x in out) == ["l1", "l2", "l3", "l4"]  # l1 once: not run again
        assert done.request_counts is not None and done.request_counts.completed == 4
        assert len(received(second_engines)) == 3
    finally:
        await stopped(second)


async def test_a_claim_left_by_a_dead_process_is_taken_over(gw: Gateway) -> None:
    oai, _ = clients(gw)
    assert gw.batches is not None
    await gw.batches.stop()  # this gateway's runner away while the batch is created: nobody claims it yet
    created = await submit(oai, jsonl(line("a", "hi")))
    index = Path(gw.spec.gateway.batch.dir) / "index.sqlite3"

    def claim(owner: str | None) -> int:
        """The other process claims the batch (owner None) or, still its owner, renews its claim."""
        db = sqlite3.connect(index)
        try:
            with db:
                return db.execute("UPDATE batches SET owner = 'dead-host-1', heartbeat = ? WHERE id = ? AND "
                                  "owner IS ?", (time.time(), created.id, owner)).rowcount
        finally:
            db.close()

    assert claim(None) == 1
    await gw.batches.start()
    # a live claim (renewed by its owner, as its runner would every poll_s) is left alone through six and more
    # of this runner's polls (0.05 s). Claimed once and left to age, a loaded machine could let the check come
    # after stale_s (1 s), the claim by then rightly taken over
    for _ in range(6):
        await asyncio.sleep(0.05)
        assert claim("dead-host-1") == 1  # still the other process's
        assert (await oai.batches.retrieve(created.id)).status == "validating"
    # its process dies: no more renewals
    done = await until(oai, created.id, "completed")  # stale after stale_s (1 s here): taken over
    assert done.request_counts is not None and done.request_counts.completed == 1


async def test_uploads_over_the_size_limit_are_refused(tmp_path: Path, engines: dict[str, Gated]) -> None:
    gw = await started(batch_spec(tmp_path, max_file_bytes=1000), engines)
    try:
        oai, _ = clients(gw)
        with pytest.raises(openai.APIStatusError) as big:
            await oai.files.create(file=("r.jsonl", b"x" * 2000), purpose="batch")
        assert big.value.status_code == 413 and big.value.body["code"] == "file_too_large"  # type: ignore[index]
        assert big.value.body["param"] == "file"  # type: ignore[index]
        assert big.value.body["message"] == ("file: the upload (2,000 bytes) is larger than 1,000 bytes, the most one "  # type: ignore[index]
                                             "file may hold (gateway.batch.max_file_bytes)")  # routes.body_too_large
        # without a Content-Length (chunked), the upload is cut off as it arrives
        boundary = "b0undary"

        async def parts() -> AsyncIterator[bytes]:
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\n"
                   "Content-Disposition: form-data; name=\"file\"; filename=\"r.jsonl\"\r\n\r\n").encode()
            for _ in range(200):
                yield b"y" * 1000
            yield f"\r\n--{boundary}--\r\n".encode()

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/files", content=parts(), headers={
                "content-type": f"multipart/form-data; boundary={boundary}", **TENANT})
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large", r.text
        small = await oai.files.create(file=("r.jsonl", b"y" * 900), purpose="batch")
        assert small.bytes == 900
        assert gw.batches is not None
        assert sorted(p.name for p in (Path(gw.spec.gateway.batch.dir) / "default").iterdir()) == [f"{small.id}.jsonl"]
    finally:
        await stopped(gw)


async def test_a_line_refused_for_capacity_is_tried_again(tmp_path: Path) -> None:
    """The runner on its own (a stub for the pipeline): a 429 or 503 goes back into the line's turn, up to
    line_attempts tries, then to the error file; other failures go there at once."""
    db = BatchDb(tmp_path)
    files, store = FileStore(db), BatchStore(db)
    tries: dict[str, int] = {}

    async def run_line(batch: StoredBatch, ln: Line) -> LineResult:
        tries[ln.custom_id] = tries.get(ln.custom_id, 0) + 1
        if ln.custom_id == "busy-once" and tries[ln.custom_id] == 1 or ln.custom_id == "always-busy":
            return LineResult(False, request_line(ln.custom_id, 429, "", {}), retry_after_s=0.0)
        if ln.custom_id == "bad":
            return LineResult(False, request_line(ln.custom_id, 400, "", {}))
        return LineResult(True, request_line(ln.custom_id, 200, "", {}), {"prompt_tokens": 2})

    runner = BatchRunner(BatchSpec(dir=str(tmp_path), line_attempts=3, retry_s=0.0, poll_s=0.05, stale_s=1.0),
                         store, files, run_line)
    f = await files.add("t", "r.jsonl", "batch", io.BytesIO(jsonl(*(line(c, "hi") for c in
                                                                        ("busy-once", "always-busy", "bad", "ok")))))
    now = int(time.time())
    await store.create("t", {"id": "batch_x", "status": "validating", "created_at": now, "expires_at": now + 60,
                             "input_file_id": f.id, "endpoint": CHAT}, {}, {})
    runner.submit("batch_x")
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        obj = await store.get("t", "batch_x")
        if obj and obj["status"] == "completed":
            break
        await asyncio.sleep(0.01)
    assert obj is not None and obj["status"] == "completed", obj
    assert tries == {"busy-once": 2, "always-busy": 3, "bad": 1, "ok": 1}
    assert obj["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert obj["usage"]["input_tokens"] == 4
    await runner.stop()


async def test_a_claim_that_cannot_be_released_is_logged_not_swallowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The index failing as a finished batch's claim is released: the batch's end stands, and the failure is
    logged (it used to be suppressed without a word; the claim then lapses after stale_s)."""
    db = BatchDb(tmp_path)
    files, store = FileStore(db), BatchStore(db)

    async def run_line(batch: StoredBatch, ln: Line) -> LineResult:
        return LineResult(True, request_line(ln.custom_id, 200, "", {}), {"prompt_tokens": 1})

    async def broken_release(bid: str, owner: str) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "release", broken_release)
    runner = BatchRunner(BatchSpec(dir=str(tmp_path), poll_s=0.05, stale_s=1.0), store, files, run_line)
    f = await files.add("t", "r.jsonl", "batch", io.BytesIO(jsonl(line("a", "hi"))))
    now = int(time.time())
    await store.create("t", {"id": "batch_r", "status": "validating", "created_at": now, "expires_at": now + 60,
                             "input_file_id": f.id, "endpoint": CHAT}, {}, {})
    try:
        with caplog.at_level(logging.WARNING, logger="aigrid.gateway"):
            runner.submit("batch_r")
            for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
                if not runner.running("batch_r"):
                    break
                await asyncio.sleep(0.01)
        obj = await store.get("t", "batch_r")
        assert obj is not None and obj["status"] == "completed", obj
        warned = [r for r in caplog.records if "could not release its claim" in r.getMessage()]
        assert len(warned) == 1 and warned[0].exc_info is not None
        assert "batch_r" in warned[0].getMessage() and "database is locked" in caplog.text
    finally:
        await runner.stop()


async def test_two_workers_over_one_folder_run_each_line_once(tmp_path: Path) -> None:
    """Two gateway processes' worth (two gateways over the same folder, each its own runner): the batches one
    accepted but cannot hold (max_running 1) are claimed by the other; every line runs exactly once. The first
    batch's lines wait at the engines until the others are done, so the runner holding it is busy and the
    other must claim them (with instant engines one runner could take every batch in turn: a fresh clone on a
    loaded machine saw only one of the two run)."""
    engines = [engines_for(tmp_path), engines_for(tmp_path)]
    for e in engines:
        for engine in e.values():
            engine.gate.clear()  # a FAKE engine's gate starts open: SLOW lines would not wait
    gws = []
    for i, e in enumerate(engines):  # one audit log each (the workers' hub writes one chain for all: hub.py)
        spec = batch_spec(tmp_path, max_running=1, concurrency=2)
        audit = AuditSpec(path=str(tmp_path / f"audit-{i}.db"), signing_key=str(tmp_path / "audit.pem"))
        gws.append(await started(spec.model_copy(update={
            "security": spec.security.model_copy(update={"audit": audit})}), e))
    try:
        oai, _ = clients(gws[0])
        clients(gws[1])
        for g in gws:
            assert g.batches is not None
            await g.batches.start()
        contents = [[f"{'SLOW ' if k == 0 else ''}batch {k} line {i}" for i in range(3)] for k in range(4)]
        created = [await submit(oai, jsonl(*(line(f"l{i}", c) for i, c in enumerate(batch)))) for batch in contents]
        for b in [*created[1:], created[0]]:  # the first once the others are done
            if b is created[0]:
                for e in engines:
                    for engine in e.values():
                        engine.gate.set()
            done = await until(oai, b.id, "completed")
            assert done.request_counts is not None and done.request_counts.completed == 3
        prompts = sorted(r["messages"][0]["content"] for e in engines for r in received(e))
        assert prompts == sorted(c for batch in contents for c in batch)
        assert all(received(e) for e in engines)  # both ran some
    finally:
        for e in engines:
            for engine in e.values():
                engine.gate.set()
        for g in gws:
            await stopped(g)


async def test_lines_run_as_their_creator_checked_again_for_each_line(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys enforced: a line naming a model the creator's key may not use fails the batch's validation
    (`model_not_allowed`, before the model's existence: the key learns no model it may not use); a batch's
    lines run with its creator's scopes as they are when each runs (the tenant narrowed after creation: 403
    in the error file), and a key revoked before its batch ran fails the lines (401), never runs them."""
    secret = "batch-test-secret-0123456789"
    monkeypatch.setenv("AIGRID_KEY_SECRET", secret)
    ring = KeyRing(secret.encode())
    full, narrow = ring.issue("default"), ring.issue("default", Scopes(models=frozenset({"llama-*"})))
    ring.save(tmp_path / "keys.json")
    spec = batch_spec(tmp_path)
    gw = await started(spec.model_copy(update={"security": spec.security.model_copy(update={"enforce": True})}),
                       engines)
    try:
        client = openai_client(build_app(gw))
        with pytest.raises(openai.AuthenticationError):
            await client.files.create(file=("r.jsonl", jsonl(line("a", "hi"))), purpose="batch")
        narrowed = client.with_options(api_key=narrow.api_key)
        for model in (MODEL, "no-such-model"):  # the same answer whether the model exists or not
            created = await submit(narrowed, jsonl(line("a", "hi", model=model)))
            assert created.status == "failed" and created.errors is not None
            first = created.errors.data[0]
            assert (first.code, first.line, first.param) == ("model_not_allowed", 1, "body.model"), created.errors
        owner = client.with_options(api_key=full.api_key)
        assert gw.batches is not None
        await gw.batches.stop()  # created while the tenant may use the model; narrowed before the line runs
        created = await submit(owner, jsonl(line("a", "hi")))
        tenant = gw.guard.tenants["default"]
        gw.guard.tenants["default"] = replace(tenant, scopes=Scopes(models=frozenset({"llama-*"})))
        await gw.batches.start()
        done = await until(owner, created.id, "completed")
        refused = (await lines_of(owner, done.error_file_id))[0]["response"]
        assert refused["status_code"] == 403 and refused["body"]["error"]["code"] == "model_not_allowed"
        gw.guard.tenants["default"] = tenant
        await gw.batches.stop()  # the batch waits, unclaimed, while its key is revoked
        created = await submit(owner, jsonl(line("a", "hi")))
        assert gw.guard.authenticator.keys.revoke(full.record.key_id)
        await gw.batches.start()
        stored = await _until_in_store(gw, created.id)
        assert stored["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
        rows = [r for r in await audit_rows(gw) if r["extra"]["route"] == line_route(created.id, "a")]
        assert len(rows) == 1 and rows[0]["outcome"] == "error:invalid_api_key"
        assert received(engines) == []
    finally:
        await stopped(gw)


async def _until_in_store(gw: Gateway, bid: str) -> dict[str, Any]:
    """The batch as stored, once completed (its creator's key is revoked: it cannot poll it any more)."""
    assert gw.batches is not None
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        obj = await gw.batches.store.get("default", bid)
        if obj is not None and obj["status"] == "completed":
            return obj
        await asyncio.sleep(0.01)
    raise AssertionError(f"{bid} did not complete: {obj}")


async def test_a_line_larger_than_a_request_may_be_is_refused_like_one(tmp_path: Path, engines: dict[str, Gated],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """gateway.max_body_bytes bounds every request; a batch's line was run whatever its size (up to the whole
    file, max_file_bytes), so a batch carried what no live request could. Such a line is refused as the live request
    would be: since the twentieth session when the batch is created (its check reads no line past the bound: a
    validation error naming the line, request_too_large, nothing run), and when it runs (a file checked under a
    larger bound: 400 request_too_large in the error file, the others run), never read by an engine."""
    spec = batch_spec(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_body_bytes": 4000})})
    gw = await started(spec, engines)
    try:
        oai, _ = clients(gw)
        big = "Name a river. " * 400  # about 5,600 bytes
        with pytest.raises(openai.BadRequestError) as live:
            await oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": big}])
        assert live.value.body["code"] == "request_too_large"  # type: ignore[index]
        data = jsonl(line("small", "hi"), line("big", big))
        failed = await submit(oai, data)
        assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
        [error] = failed.errors.data
        assert (error.code, error.line) == ("request_too_large", 2) and "gateway.max_body_bytes" in (error.message or "")
        def checked_under(path: Path, endpoint: str, known: Any, most: int, may_use: Any,
                          _bound: int) -> batch_input.Checked:  # a file checked under a larger bound
            return batch_input.check_file(path, endpoint, known, most, may_use, 1 << 20)

        monkeypatch.setattr("aigrid.gateway.batches_api.check_file", checked_under)
        done = await until(oai, (await submit(oai, data)).id, "completed")
        assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (1, 1)
        [refused] = await lines_of(oai, done.error_file_id)
        assert refused["custom_id"] == "big" and refused["response"]["status_code"] == 400
        assert refused["response"]["body"]["error"]["code"] == "request_too_large"
        assert refused["response"]["body"]["error"]["message"] == (  # one wording for the limit (thirty-second session)
            "this request is larger than 4,000 bytes, the most one request may hold (gateway.max_body_bytes)"), refused
        assert all("river" not in orjson.dumps(r).decode() for r in received(engines))
    finally:
        await stopped(gw)


@pytest.mark.parametrize("size", [8 << 20, 24 << 20])
def test_a_line_of_any_length_is_never_read_whole(tmp_path: Path, size: int) -> None:
    """A batch input file's line was read whole, whatever its length (up to max_file_bytes), by the create's check
    and by the running batch: a file of one long line held all of it. Each line is now read at most the bound (a
    request's most, gateway.max_body_bytes) at a time, a longer one read on in pieces and dropped: the check names
    it (request_too_large, its line number), the runner passes on its head only (refused by its run); the peak is
    the same for a line three times longer."""
    bound = 64 * 1024
    path = tmp_path / "in.jsonl"
    with path.open("wb") as f:
        f.write(orjson.dumps(line("first", "hi")) + b"\n")
        f.write(b'{"custom_id": "long", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "'
                + MODEL.encode() + b'", "messages": [{"role": "user", "content": "')
        for _ in range(size // (1 << 20)):
            f.write(b"x" * (1 << 20))
        f.write(b'"}]}}\n' + orjson.dumps(line("last", "hi")) + b"\n")
    tracemalloc.start()
    try:
        checked = batch_input.check_file(path, CHAT, {MODEL}, 100, max_line_bytes=bound)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        reader = batch_input.LineReader(path, CHAT, 100, bound)
        read = [x for chunk in iter(reader.chunk, []) for x in chunk]
        reader.close()
        _, reader_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert checked.count == 2 and [(e["code"], e["line"]) for e in checked.errors] == [("request_too_large", 2)]
    assert f"This line is {size + 152} bytes" in checked.errors[0]["message"], checked.errors
    assert [x.custom_id for x in read] == ["first", "long", "last"] and len(read[1].text) == bound + 1
    assert peak < 4 * bound and reader_peak < 8 * bound, (peak, reader_peak)


async def test_a_page_of_files_reads_that_page_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /v1/files read every file row of the tenant into memory and then cut the page out of them, on each
    call (a tenant with many files: as many rows per list). Now the database returns the page (limit + 1
    rows); paging with `after` both ways still walks every file once, in order."""
    from aigrid.gateway import file_store

    store = FileStore(BatchDb(tmp_path))
    ids = [(await store.add("t", f"{i}.jsonl", "batch", io.BytesIO(b"x"))).id for i in range(30)]
    await store.add("other", "o.jsonl", "batch", io.BytesIO(b"x"))
    read = 0
    real = file_store._row

    def counting(r: sqlite3.Row) -> Any:
        nonlocal read
        read += 1
        return real(r)

    monkeypatch.setattr(file_store, "_row", counting)
    page = await store.list("t", purpose=None, after=None, limit=2, ascending=False)
    assert page is not None and [f.id for f in page[0]] == ids[::-1][:2] and page[1] is True
    assert read <= 3
    for ascending, order in ((True, ids), (False, ids[::-1])):
        walked, after, more = [], None, True
        while more:
            got = await store.list("t", purpose=None, after=after, limit=7, ascending=ascending)
            assert got is not None
            walked += [f.id for f in got[0]]
            after, more = walked[-1], got[1]
        assert walked == order
    assert await store.list("t", purpose=None, after="file-nope", limit=2, ascending=True) is None
    assert await store.list("other", purpose=None, after=ids[0], limit=2, ascending=True) is None
    assert (await store.list("t", purpose="batch_output", after=None, limit=2, ascending=True)) == ([], False)


def test_a_refused_line_waits_the_refusals_own_retry_after_whatever_its_case() -> None:
    """The quota says `Retry-After` (capitalised), the admission queue `retry-after`: a line refused by a quota
    window used to be tried again at once (the lower-case lookup missed it); one that no wait helps never is."""
    from aigrid.errors import NoEligibleEndpoint, RateLimited
    from aigrid.gateway.batch_line import retry_after

    assert retry_after(RateLimited("tokens per minute", headers={"Retry-After": "30"})) == 30.0
    assert retry_after(RateLimited("queue full", headers={"retry-after": "2"})) == 2.0
    assert retry_after(RateLimited("larger than any window", retry=False)) is None
    assert retry_after(NoEligibleEndpoint("no site")) == 0.0


async def test_a_retry_after_longer_than_the_window_expires_the_batch_instead_of_running_after_it(
        tmp_path: Path) -> None:
    """A spent day's budget says Retry-After in hours: the line's wait used to outlast the batch's window, and
    the line ran after it (the batch then ended completed with the line failed). Now the wait stops at the
    window's end and the batch expires."""
    db = BatchDb(tmp_path)
    files, store = FileStore(db), BatchStore(db)
    tries: dict[str, int] = {}
    clock = [time.time()]

    async def run_line(batch: StoredBatch, ln: Line) -> LineResult:
        tries[ln.custom_id] = tries.get(ln.custom_id, 0) + 1
        clock[0] += 3600  # each refusal's wait passes the window (the fake clock jumps; the real wait is short)
        return LineResult(False, request_line(ln.custom_id, 429, "", {}), retry_after_s=0.2)

    runner = BatchRunner(BatchSpec(dir=str(tmp_path), line_attempts=3, retry_s=0.0, poll_s=0.05, stale_s=1.0),
                         store, files, run_line, clock=lambda: clock[0])
    f = await files.add("t", "r.jsonl", "batch", io.BytesIO(jsonl(line("a", "hi"))))
    now = int(clock[0])
    await store.create("t", {"id": "batch_w", "status": "validating", "created_at": now, "expires_at": now + 60,
                             "input_file_id": f.id, "endpoint": CHAT}, {}, {})
    runner.submit("batch_w")
    try:
        for _ in range(1500):  # polled up to 30 s: a loaded machine is late, not wrong
            obj = await store.get("t", "batch_w")
            if obj and obj["status"] in ("completed", "expired", "failed"):
                break
            await asyncio.sleep(0.02)
        assert obj is not None and obj["status"] == "expired", obj
        assert tries == {"a": 1}  # not tried again after the window
    finally:
        await runner.stop()


async def test_a_tenants_files_are_bounded_by_its_storage_quota(tmp_path: Path, engines: dict[str, Gated]) -> None:
    """Uploads were bounded only by max_file_bytes each: one tenant could fill the gateway's disk for every tenant
    by uploading again and again. A tenant's files (every purpose) now hold at most `quotas.storage_bytes` and
    `storage_files`: past it an upload is the client's 400 storage_quota_exceeded naming the limit (its bytes not
    kept, its record written); a deleted or expired file counts no more; another tenant is not affected; a batch
    is not created while its tenant is at its limit (its output would be the tenant's files too)."""
    gw = await started(storage_spec(tmp_path, 1000, 3), engines)
    folder = Path(gw.spec.gateway.batch.dir) / "default"
    try:
        oai, other = clients(gw)
        first = await oai.files.create(file=("a.jsonl", b"x" * 600), purpose="batch")
        with pytest.raises(openai.BadRequestError) as full:
            await oai.files.create(file=("b.jsonl", b"y" * 500), purpose="batch")
        err = full.value.body
        assert err["code"] == "storage_quota_exceeded" and err["param"] == "file", err  # type: ignore[index]
        assert "1000 bytes (quotas.storage_bytes)" in err["message"] and "600 bytes in 1 files" in err["message"]  # type: ignore[index]
        assert sorted(p.name for p in folder.iterdir()) == [f"{first.id}.jsonl"]  # the refused bytes not kept
        assert (await other.files.create(file=("o.jsonl", b"z" * 900), purpose="batch")).bytes == 900
        await oai.files.delete(first.id)
        second = await oai.files.create(file=("b.jsonl", b"y" * 500), purpose="batch")  # room again
        # the count of files too
        data = jsonl(line("a", "Name a river."))
        small = [await oai.files.create(file=(f"{i}.jsonl", data), purpose="batch") for i in range(2)]
        with pytest.raises(openai.BadRequestError) as many:
            await oai.files.create(file=("c.jsonl", b"c"), purpose="batch")
        assert "3 files (quotas.storage_files)" in many.value.body["message"]  # type: ignore[index]
        # at its limit, no batch: its output file would be one more
        with pytest.raises(openai.BadRequestError) as no_batch:
            await oai.batches.create(input_file_id=small[0].id, endpoint=CHAT, completion_window="24h")
        assert no_batch.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]
        assert no_batch.value.body["param"] == "input_file_id"  # type: ignore[index]
        # an expired file counts no more (its bytes go at the runner's next sweep)
        assert gw.batches is not None

        def expire(db: sqlite3.Connection) -> None:
            db.execute("UPDATE files SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, second.id))

        await gw.batches.files.db.write(expire)
        assert (await oai.files.create(file=("d.jsonl", b"d" * 400), purpose="batch")).bytes == 400
        rows = await audit_rows(gw)
        refused = [r for r in rows if r["outcome"] == "error:storage_quota_exceeded"]
        assert [r["extra"]["route"] for r in refused] == ["POST /v1/files"] * 2 + ["POST /v1/batches"]
    finally:
        await stopped(gw)


async def test_an_upload_surely_past_the_storage_quota_is_refused_before_its_bytes_are_read(
        tmp_path: Path, engines: dict[str, Gated]) -> None:
    """An upload whose Content-Length alone passes what the tenant has left was read whole (spooled to a
    temporary file) before the quota refused it: refused from its headers now, its body never read (the one here
    would take a minute)."""
    gw = await started(storage_spec(tmp_path, 1000, 3), engines)

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            size = str(FORM_SLACK + 5000)
            r = await asyncio.wait_for(c.post("/v1/files", content=trickled(b"--b\r\n", b"--b--\r\n", 60), headers={
                "content-type": "multipart/form-data; boundary=b", "content-length": size}), 10)
        assert r.status_code == 400 and r.json()["error"]["code"] == "storage_quota_exceeded", r.text
        assert "this one of 5000 bytes would pass it" in r.json()["error"]["message"]
    finally:
        await stopped(gw)


async def arrives(upload: asyncio.Task[httpx.Response], arriving: asyncio.Event) -> None:
    """Until `upload`'s body is being read (`arriving` set by its body): its room is held from then on. Waited on,
    not slept for, so that a loaded machine cannot send the next upload before it; failed if it ended first."""
    waiting = asyncio.ensure_future(arriving.wait())
    await asyncio.wait({waiting, upload}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    assert arriving.is_set(), upload.result().text if upload.done() else "its body was not read within 120 s"


class HeldUpload:
    """A multipart upload of a `size`-byte file whose body (`body()`) stops after its head until `go` is set;
    `arriving` is set once its head is read (the upload is in _receive, past the reserve that holds its room)."""

    def __init__(self, size: int) -> None:
        self.go, self.arriving = asyncio.Event(), asyncio.Event()
        self.head, data, tail = form_parts(size)
        self.rest = data + tail
        self.whole = self.head + self.rest

    async def body(self) -> AsyncIterator[bytes]:
        yield self.head
        self.arriving.set()
        await self.go.wait()
        yield self.rest


async def test_an_upload_is_stopped_as_soon_as_it_passes_what_the_storage_quota_leaves(
        tmp_path: Path, engines: dict[str, Gated]) -> None:
    """An upload sent in chunks (no Content-Length) was spooled whole, up to max_file_bytes, before the quota was
    read: a tenant at its quota still filled the disk, as many times at once as it sent uploads. The room it has
    left is now held before the body is read and the upload stopped as soon as more arrives (400
    storage_quota_exceeded naming `file`), nothing of it kept; the room is given back."""
    gw = await started(storage_spec(tmp_path, 1000, 3), engines)
    folder = Path(gw.spec.gateway.batch.dir) / "default"
    sent = [0]

    def chunked(size: int) -> AsyncIterator[bytes]:
        head, data, tail = form_parts(size)
        return counted((head, *(data[i:i + 4096] for i in range(0, size, 4096)), tail), sent)

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers=TENANT) as c:
            r = await c.post("/v1/files", content=chunked(4 << 20), headers=MULTIPART)
            assert r.status_code == 400 and r.json()["error"]["code"] == "storage_quota_exceeded", r.text
            assert sent[0] <= 1000 + FORM_SLACK + 4096, sent[0]  # stopped as it passed the room, not at 4 MiB
            assert r.json()["error"]["param"] == "file" and "past 1000 bytes" in r.json()["error"]["message"]
            assert not folder.exists() or list(folder.iterdir()) == []
            r = await c.post("/v1/files", content=chunked(900), headers=MULTIPART)  # the room was given back
            assert r.status_code == 200 and r.json()["bytes"] == 900, r.text
            r = await c.post("/v1/files", content=chunked(200), headers=MULTIPART)  # sent whole: its size named
            assert r.status_code == 400 and "this one of 200 bytes would pass it" in r.json()["error"]["message"]
    finally:
        await stopped(gw)


async def test_uploads_side_by_side_hold_their_room_while_they_arrive(tmp_path: Path,
                                                                     engines: dict[str, Gated]) -> None:
    """Each upload passed the quota when it began and was checked again only when it ended: uploads of one tenant
    side by side were each spooled whole (together past the quota, many times over), and the first to end
    was kept, whichever was sent first. An upload now holds its room while it arrives (in the index, so in
    every worker process): another, sent meanwhile, has only what is left and is refused; the first is kept."""
    gw = await started(storage_spec(tmp_path, 1000, 3), engines)
    folder = Path(gw.spec.gateway.batch.dir) / "default"
    upload = HeldUpload(700)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers=TENANT) as c:
            size = str(len(upload.whole))
            first = asyncio.create_task(c.post("/v1/files", content=upload.body(), headers={**MULTIPART,
                                                                                            "content-length": size}))
            await arrives(first, upload.arriving)  # the second sent while the first arrives, not before
            second = await c.post("/v1/files", content=upload.whole, headers=MULTIPART)
            assert second.status_code == 400 and second.json()["error"]["code"] == "storage_quota_exceeded", second.text
            assert "uploads arriving included" in second.json()["error"]["message"]
            upload.go.set()
            r = await first
            assert r.status_code == 200 and r.json()["bytes"] == 700, r.text
            assert sorted(p.name for p in folder.iterdir()) == [f"{r.json()['id']}.jsonl"]
    finally:
        await stopped(gw)


def test_the_room_of_an_upload_whose_process_died_lapses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reservation left behind (its process killed mid-upload) counts until its upload's deadline, then not.
    The store's clock is the test's (a real 0.2 s deadline could pass before the first check on a loaded machine)."""
    limit = StorageLimit(bytes=1000, files=10)
    now = [1_000_000.0]
    monkeypatch.setattr("aigrid.gateway.file_store.time", SimpleNamespace(time=lambda: now[0]))

    async def run() -> None:
        store = FileStore(BatchDb(tmp_path), lambda _: limit)
        held = await store.reserve("t", "file", 10_000, 0, hold_s=0.2)
        assert held is not None and held.bytes == 1000 and held.quota
        now[0] += 0.19
        with pytest.raises(StorageFull):
            await store.check_room("t", "file")
        now[0] += 0.02
        await store.check_room("t", "file", 1000)  # lapsed
        assert (await store.reserve("t", "file", 10_000, 0, hold_s=5)) is not None

    asyncio.run(run())


async def test_uploads_racing_in_two_processes_never_pass_the_storage_quota(tmp_path: Path) -> None:
    """The quota is read and the file's row written in one transaction holding the index's write lock: twenty
    uploads at once through two stores over one folder (two worker processes' worth, each call on its own
    connection in its own thread) keep exactly as many as fit, and no refused upload leaves bytes behind."""
    limit = StorageLimit(bytes=1000, files=100)
    stores = [FileStore(BatchDb(tmp_path), lambda _: limit) for _ in range(2)]
    got = await asyncio.gather(*(stores[i % 2].add("t", f"{i}.jsonl", "batch", io.BytesIO(b"x" * 300))
                                 for i in range(20)), return_exceptions=True)
    kept = [f for f in got if not isinstance(f, BaseException)]
    assert len(kept) == 3 and all(isinstance(e, StorageFull) for e in got if isinstance(e, BaseException)), got
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == sorted(f"{f.id}.jsonl" for f in kept)


def test_the_storage_quota_has_a_default_and_is_a_tenants() -> None:
    """10 GiB and 10,000 files a tenant unless the spec says otherwise; a key's quotas cannot set it (files are
    the tenant's, whichever key wrote them): the spec names the field."""
    assert (QuotaSpec().storage_bytes, QuotaSpec().storage_files) == (10 * 1024 ** 3, 10_000)
    with pytest.raises(ValueError, match="storage_bytes: storage is held per tenant"):
        SecuritySpec.model_validate({"key_quotas": {"storage_bytes": 5}})
    written_out = SecuritySpec().model_dump(mode="json")  # every field, the key's quotas with the defaults
    assert SecuritySpec.model_validate(written_out) == SecuritySpec()
    with pytest.raises(ValueError, match="storage_files"):
        SecuritySpec.model_validate({"default_quotas": {"storage_files": 0}})


async def test_an_upload_that_could_leave_the_disk_too_full_is_refused_before_its_body_is_read(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage quota is per tenant: tenants within theirs could together fill the disk the audit log, the index
    and running batches' results write to. An upload (or a message batch) that could leave less than
    gateway.batch.min_free_bytes free is a 503 insufficient_storage (not retried by the SDKs) before a byte of it is
    read, logged; with room, as before."""
    gw = await started(batch_spec(tmp_path, min_free_bytes=10 << 20), engines)
    free = [(10 << 20) + 100]  # the disk as the gateway sees it: 100 bytes above what it keeps free
    monkeypatch.setattr("aigrid.gateway.file_store.shutil.disk_usage", lambda _: SimpleNamespace(free=free[0]))
    sent = [0]

    def body(size: int) -> AsyncIterator[bytes]:
        return counted(form_parts(size), sent)

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers=TENANT) as c:
            r = await c.post("/v1/files", content=body(5000), headers=MULTIPART)
            assert r.status_code == 503 and r.json()["error"]["code"] == "insufficient_storage", r.text
            assert r.headers["x-should-retry"] == "false" and r.json()["error"]["param"] == "file"
            assert sent[0] == 0  # refused before its body was read
            message = await c.post("/v1/messages/batches", json={"requests": [{"custom_id": "a", "params": {
                "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}]})
            assert message.status_code == 529 and "too little free space" in message.text, message.text  # Anthropic's
            assert message.headers["x-should-retry"] == "false"
            free[0] = 1 << 30
            r = await c.post("/v1/files", content=body(5000), headers=MULTIPART)
            assert r.status_code == 200 and r.json()["bytes"] == 5000, r.text
    finally:
        await stopped(gw)


async def test_uploads_side_by_side_cannot_together_take_the_disk_below_its_floor(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each upload compared the disk's free space with the floor alone: uploads arriving side by side (of any
    tenants, each within its quota) each saw the same free space, and together could write the disk below
    gateway.batch.min_free_bytes. The room the others hold (uploads and message batches arriving, in any worker
    process) now counts as written: the second upload is a 503 insufficient_storage, logged; the first is kept,
    and once it is, a third has the room it left."""
    gw = await started(batch_spec(tmp_path, min_free_bytes=10 << 20), engines)
    monkeypatch.setattr("aigrid.gateway.file_store.shutil.disk_usage",
                        lambda _: SimpleNamespace(free=(10 << 20) + 1500))  # room for one 700-byte upload, not two
    upload = HeldUpload(700)
    size = {**MULTIPART, "content-length": str(len(upload.whole))}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            first = asyncio.create_task(c.post("/v1/files", content=upload.body(), headers={**size, **TENANT}))
            await arrives(first, upload.arriving)  # the second sent while the first arrives, not before
            second = await c.post("/v1/files", content=upload.whole, headers={**size, **OTHER})
            assert second.status_code == 503, second.text
            assert second.json()["error"]["code"] == "insufficient_storage" and second.json()["error"]["param"] == "file"
            message = await c.post("/v1/messages/batches", headers=OTHER, json={"requests": [{"custom_id": "a", "params": {
                "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 600}]}}]})
            assert message.status_code == 529 and "too little free space" in message.text, message.text
            upload.go.set()
            r = await first
            assert r.status_code == 200 and r.json()["bytes"] == 700, r.text
            third = await c.post("/v1/files", content=upload.whole, headers={**size, **OTHER})
            assert third.status_code == 200, third.text  # the first's room given back: it is on the disk now
    finally:
        await stopped(gw)


async def test_a_batchs_input_file_is_read_a_line_at_a_time_never_held_whole(tmp_path: Path,
                                                                             engines: dict[str, Gated]) -> None:
    """POST /v1/batches read the whole input file into memory to check it (its bytes, then its lines: about 2 x
    the file), and the runner read it whole again and held every line while the batch ran: creates and batches of
    large files side by side each held theirs. Both now read it from disk a line at a time: the create's check
    holds a line and the custom_ids seen, a running batch a chunk (about a megabyte) and its lines in flight."""
    gw = await started(batch_spec(tmp_path, concurrency=2, drain_s=0.0), engines)
    try:
        oai, _ = clients(gw)
        data = jsonl(*(line(f"r{i}", f"SLOW {i} {'x' * 2000}") for i in range(4000)))  # 8 MiB
        f = await oai.files.create(file=("big.jsonl", data), purpose="batch")
        for e in engines.values():
            e.gate.clear()
        tracemalloc.start()
        try:
            created = await oai.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
            assert created.status == "validating" and created.request_counts is not None
            assert created.request_counts.total == 4000
            for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
                if len(received(engines)) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert len(received(engines)) == 2  # the batch runs: its first lines wait at the engines
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < len(data) / 2, (peak, len(data))  # the create's check and the batch's start
        assert held < len(data) / 4, (held, len(data))  # the batch running
    finally:
        open_gates(engines)
        await stopped(gw)


async def test_input_files_are_checked_in_turn_and_a_create_beyond_waits(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """Any number of creates checked their input files at once (each in a thread of its own): a tenant creating
    batches of several large files had the process read them all at once. At most gateway.batch.max_checking are
    checked at once per process; a create beyond waits its turn, and neither fails."""
    gw = await started(batch_spec(tmp_path, max_checking=1), engines)
    active, most = [0], [0]
    lock = threading.Lock()
    real = batch_input._check_line

    def slow(out: Any, number: int, text: bytes, endpoint: str, known: Any, may_use: Any = None) -> Any:
        if known is not None and number == 1:  # a create's check (a running batch's reads know no models)
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.2)
            with lock:
                active[0] -= 1
        return real(out, number, text, endpoint, known, may_use)

    monkeypatch.setattr(batch_input, "_check_line", slow)
    try:
        oai, _ = clients(gw)
        ids = [(await oai.files.create(file=(f"{i}.jsonl", jsonl(line("a", "hi"))), purpose="batch")).id
               for i in range(2)]
        created = await asyncio.gather(*(oai.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h")
                                         for fid in ids))
        assert most[0] == 1
        for b in created:
            assert (await until(oai, b.id, "completed", "failed")).status == "completed"
    finally:
        await stopped(gw)


async def batch_that_runs_out_of_room(gw: Gateway, data: bytes) -> Batch:
    oai, _ = clients(gw)
    done: Batch = await until(oai, (await submit(oai, data)).id, "completed", "failed")
    assert done.status == "failed" and done.failed_at is not None and done.errors is not None and done.errors.data
    kept = await lines_of(oai, done.output_file_id)  # what it wrote is kept: whole lines, and counted
    assert 0 < len(kept) < 6 and done.request_counts is not None and done.request_counts.completed == len(kept)
    return done


async def test_a_batch_whose_results_would_cross_the_disks_floor_or_the_quota_fails_with_what_it_wrote(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A running batch's output and error files were written whatever the disk and the tenant held: past the disk's
    floor (gateway.batch.min_free_bytes, kept for the audit log and the index) and past the tenant's storage
    quota, without bound, however many batches it had created below it. Each line is now checked before it is
    written: the batch stops, ends failed with a readable error, keeps what it wrote, and it is logged."""
    data = jsonl(*(line(f"q{i}", "hi") for i in range(6)))
    gw = await started(batch_spec(tmp_path, min_free_bytes=10 << 20, concurrency=1), engines)
    folder = Path(gw.spec.gateway.batch.dir)

    def usage(_: Any) -> SimpleNamespace:  # room for the upload and about two lines of results
        return SimpleNamespace(free=(10 << 20) + 1500 - sum(p.stat().st_size for p in folder.rglob("batch_*.jsonl")))

    monkeypatch.setattr("aigrid.gateway.file_store.shutil.disk_usage", usage)
    try:
        with caplog.at_level(logging.WARNING, "aigrid.gateway"):
            done = await batch_that_runs_out_of_room(gw, data)
        assert done.errors is not None and done.errors.data[0].code == "insufficient_storage"
        assert "gateway.batch.min_free_bytes" in (done.errors.data[0].message or "")
        assert "stopped, no new line starts" in caplog.text
    finally:
        await stopped(gw)
    monkeypatch.undo()
    gw = await started(storage_spec(tmp_path / "quota", len(data) + 1500, 10, concurrency=1),
                       engines_for(tmp_path / "quota"))
    try:
        done = await batch_that_runs_out_of_room(gw, data)
        assert done.errors is not None and done.errors.data[0].code == "storage_quota_exceeded"
        assert "quotas.storage_bytes" in (done.errors.data[0].message or "")
    finally:
        await stopped(gw)


async def test_a_batchs_output_and_error_files_count_in_the_tenants_number_of_files(
        tmp_path: Path, engines: dict[str, Gated]) -> None:
    """A batch writes two files, its output and its error file. The create checked room for one file only, and a
    running batch counted each of its files from the line that made it, writing that line (and the others in flight)
    even when the count was passed: a tenant allowed 2 files created a batch beside its input file, and one allowed 3
    uploaded a file while the batch's first line ran, then held 4. The create now asks room for both files (400
    naming quotas.storage_files), and a batch counts both from before its first line: an upload that would pass the
    count while it runs is refused, and the tenant never holds more files than its quota."""
    gw = await started(storage_spec(tmp_path, 1 << 20, 2, concurrency=1), engines)
    try:
        oai, _ = clients(gw)
        with pytest.raises(openai.BadRequestError) as refused:
            await submit(oai, jsonl(line("a", "hi"), line("b", "FAIL")))
        message = refused.value.body["message"]  # type: ignore[index]
        assert "2 files (quotas.storage_files); a batch's 2 result files (output and error) would pass it" in message
    finally:
        await stopped(gw)
    gw = await started(storage_spec(tmp_path / "upload", 1 << 20, 3, concurrency=1), engines_for(tmp_path / "upload"))
    uploaded = asyncio.Event()
    try:
        oai, _ = clients(gw)
        waiting = lines_held(gw, uploaded)
        created = await submit(oai, jsonl(line("a", "hi"), line("b", "FAIL")))
        await asyncio.wait_for(waiting.wait(), 30)  # its first line runs: no result file written yet
        with pytest.raises(openai.BadRequestError) as refused:  # before: taken (2 files), the batch then made 2 more
            await oai.files.create(file=("more.jsonl", jsonl(line("x", "hi"))), purpose="batch")
        assert "3 files (quotas.storage_files)" in refused.value.body["message"]  # type: ignore[index]
        uploaded.set()
        done = await until(oai, created.id, "completed", "failed")
        assert done.status == "completed", done
        assert [x["custom_id"] for x in await lines_of(oai, done.output_file_id)] == ["a"]
        assert [x["custom_id"] for x in await lines_of(oai, done.error_file_id)] == ["b"]
        assert len((await oai.files.list()).data) == 3  # the input file and the two it wrote: at the quota, not past
    finally:
        uploaded.set()
        await stopped(gw)


async def test_a_batch_without_room_for_its_two_files_starts_no_line(tmp_path: Path, engines: dict[str, Gated]) -> None:
    """The tenant's files filled between the create and the batch's start (another batch's files counted since):
    the batch asks room for both its files before its first line, starts none and fails naming both files and
    quotas.storage_files."""
    gw = await started(storage_spec(tmp_path, 1 << 20, 3, concurrency=1), engines)
    try:
        oai, _ = clients(gw)
        assert gw.batches is not None
        runner = gw.batches.runner
        real_submit = runner.submit
        runner.submit = lambda bid: None  # type: ignore[method-assign]  # created, not yet started
        created = await submit(oai, jsonl(line("a", "hi")))
        await oai.files.create(file=("more.jsonl", jsonl(line("x", "hi"))), purpose="batch")  # 2 files of 3
        runner.submit = real_submit  # type: ignore[method-assign]
        runner.submit(created.id)
        done = await until(oai, created.id, "completed", "failed")
        assert done.status == "failed" and done.errors is not None, done
        message = done.errors.data[0].message or ""
        assert "with its output and error files this tenant's files would number more than its storage quota of 3 " \
               "files" in message, message
        assert not received(engines)  # no line ran
    finally:
        await stopped(gw)


def test_a_half_line_that_cannot_be_cut_back_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A write the disk refused half way is cut back; when the cut fails too the file ends with a broken line,
    which was left unsaid (contextlib.suppress): now a warning names the file."""
    from aigrid.gateway import batch_output

    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    real_write = os.write

    def half(fd: int, data: Any) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", half)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with caplog.at_level(logging.WARNING, logger="aigrid.gateway"), pytest.raises(OSError) as refused:
        batch_output._append(path, b'{"b": 2}\n')
    monkeypatch.undo()
    assert refused.value.errno == errno.ENOSPC  # the write's own error is what the batch fails with
    warned = [r.getMessage() for r in caplog.records if "could not be cut back" in r.getMessage()]
    assert warned and str(path) in warned[0] and "Input/output error" in warned[0], caplog.records


async def test_a_result_the_disk_refuses_fails_the_batch_and_leaves_whole_lines(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """A write the disk refused (ENOSPC) was logged and the batch went on to `completed`, the line missing from both
    files and its half written, the next line appended to it (a broken file). A line is now written whole or cut
    back, and the batch fails with the disk's error, keeping what it wrote."""
    from aigrid.gateway import batch_output

    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    real_write, writes = os.write, [0]

    def half(fd: int, data: Any) -> int:
        writes[0] += 1
        if writes[0] == 1:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half)  # undone before the event loop runs again
    with pytest.raises(OSError):
        batch_output._append(path, b'{"b": 2}\n')
    monkeypatch.undo()
    assert path.read_bytes() == b'{"a": 1}\n'

    real, calls = batch_output._append, [0]

    def full(p: Path, text: bytes) -> None:
        calls[0] += 1
        if calls[0] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(p, text)

    monkeypatch.setattr(batch_output, "_append", full)
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        done = await batch_that_runs_out_of_room(gw, jsonl(*(line(f"q{i}", "hi") for i in range(6))))
        assert done.errors is not None and done.errors.data[0].code == "insufficient_storage"
        assert "No space left on device" in (done.errors.data[0].message or "")
    finally:
        await stopped(gw)


async def test_a_result_the_disk_refuses_is_named_in_the_batch_s_errors_and_logged(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A line that ran (charged, audited) and whose result the disk refused (ENOSPC) was held in memory only, and
    lost when the batch ended: the log said so, but the client read only that the batch failed for want of room, the
    line in neither file. The batch's errors now name each such line (`result_lost`, its custom_id)."""
    from aigrid.gateway import batch_output

    real, calls = batch_output._append, [0]

    def full(p: Path, text: bytes) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(p, text)

    monkeypatch.setattr(batch_output, "_append", full)
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        with caplog.at_level(logging.ERROR, "aigrid.gateway"):
            done = await batch_that_runs_out_of_room(gw, jsonl(*(line(f"q{i}", "hi") for i in range(6))))
        assert done.errors is not None
        codes = [e.code for e in done.errors.data or []]
        assert codes == ["insufficient_storage", "result_lost"], done.errors
        lost = (done.errors.data or [])[1].message or ""
        kept = {r["custom_id"] for r in await lines_of(clients(gw)[0], done.output_file_id)}
        cid = next(c for c in (f"q{i}" for i in range(6)) if repr(c) in lost)
        assert cid not in kept and "ran and was charged" in lost
        assert f"custom_id {cid!r} ran and was charged" in caplog.text
    finally:
        await stopped(gw)


async def test_lines_running_when_a_batch_runs_out_of_room_keep_their_answers(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch stopped for lack of room (the disk's floor here; the tenant's quota alike) let its running lines
    finish, and they were charged and audited, but their answers were not kept: the line that hit the floor and
    every other one in flight were in neither file. Work that was charged is never dropped now: the lines in flight
    when the batch stops are written (the floor and the quota are passed by at most those), none starts after, and
    the batch fails with every answered line in its files and counts (OpenAI keeps a failed batch's finished
    requests)."""
    gw = await started(batch_spec(tmp_path, min_free_bytes=10 << 20, concurrency=3), engines)
    folder = Path(gw.spec.gateway.batch.dir)
    room = [1 << 20]

    def usage(_: Any) -> SimpleNamespace:
        return SimpleNamespace(free=(10 << 20) + room[0] - sum(p.stat().st_size for p in folder.rglob("batch_*.jsonl")))

    monkeypatch.setattr("aigrid.gateway.file_store.shutil.disk_usage", usage)
    try:
        oai, _ = clients(gw)
        for e in engines.values():
            e.gate.clear()
        created = await submit(oai, jsonl(*(line(f"q{i}", f"SLOW {i}") for i in range(6))))
        for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
            if len(received(engines)) >= 3:
                break
            await asyncio.sleep(0.01)
        room[0] = 300  # less than one line's answer: the first of the three to end crosses the floor
        open_gates(engines)
        done = await until(oai, created.id, "completed", "failed")
        assert done.status == "failed" and done.errors is not None
        assert done.errors.data[0].code == "insufficient_storage"
        ran = received(engines)
        kept = await lines_of(oai, done.output_file_id) + await lines_of(oai, done.error_file_id)
        assert len(ran) == 3 and sorted(r["custom_id"] for r in kept) == ["q0", "q1", "q2"], (ran, kept)
        assert done.request_counts is not None and done.request_counts.completed == 3
        charged = [r for r in await audit_rows(gw) if "custom_id=" in r["extra"]["route"] and r["outcome"] == "ok"]
        assert len(charged) == 3
    finally:
        open_gates(engines)
        await stopped(gw)


async def test_an_upload_is_spooled_where_the_floor_sees_it_and_never_left_behind(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette spooled a multipart upload into the system's temporary folder (past a megabyte), unseen by the disk's
    floor, and the store copied it from there (twice its size on disk for a moment); a disk that refused the spool
    was a 500. The upload is now written as it arrives into the tenant's folder and renamed into the file (the same
    inode: never copied), nothing goes through Starlette's spooled file, a disk that refuses it is the API's 503
    insufficient_storage naming `file`, and no spool is left behind, refused or kept."""
    from starlette import datastructures, formparsers

    written = [0]

    class Watched(tempfile.SpooledTemporaryFile[bytes]):
        def write(self, s: Any) -> int:
            written[0] += len(s)
            return super().write(s)

    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", Watched)
    gw = await started(batch_spec(tmp_path), engines)
    folder = Path(gw.spec.gateway.batch.dir) / "default"
    go = asyncio.Event()
    head, data, tail = form_parts(3 << 20)

    async def slow() -> AsyncIterator[bytes]:
        yield head + data[:2 << 20]
        await go.wait()
        yield data[2 << 20:] + tail

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers=TENANT) as c:
            upload = asyncio.create_task(c.post("/v1/files", content=slow(), headers=MULTIPART))
            for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
                spools = list(folder.glob(".upload-*.part")) if folder.exists() else []
                if spools and spools[0].stat().st_size >= 2 << 20:
                    break
                await asyncio.sleep(0.01)
            [spool] = spools  # on the store's disk while it arrives
            inode = spool.stat().st_ino
            go.set()
            r = await upload
            assert r.status_code == 200 and r.json()["bytes"] == 3 << 20, r.text
            kept = folder / f"{r.json()['id']}.jsonl"
            assert kept.stat().st_ino == inode and sorted(folder.iterdir()) == [kept]  # renamed, not copied
            assert written[0] == 0

            real = datastructures.UploadFile.write

            async def full(self: datastructures.UploadFile, chunk: bytes) -> None:
                if (self.size or 0) + len(chunk) > 1 << 20:  # the disk full once a megabyte is spooled
                    raise OSError(errno.ENOSPC, "No space left on device")
                await real(self, chunk)

            monkeypatch.setattr(datastructures.UploadFile, "write", full)
            r = await c.post("/v1/files", content=b"".join(form_parts(3 << 20)), headers=MULTIPART)
            assert r.status_code == 503, r.text
            assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("insufficient_storage", "file")
            monkeypatch.setattr(datastructures.UploadFile, "write", real)
            spool = gw.batches.files.spool  # type: ignore[union-attr]

            class Unflushed(io.BufferedRandom):
                def close(self) -> None:  # the disk full when the last bytes are flushed
                    if not self.closed:
                        super().close()
                        raise OSError(errno.ENOSPC, "No space left on device")

            def unflushed(tenant: str) -> tuple[Path, Any]:
                path, f = spool(tenant)
                f.close()
                return path, Unflushed(io.FileIO(path, "r+b"))

            monkeypatch.setattr(gw.batches.files, "spool", unflushed)  # type: ignore[union-attr]
            r = await c.post("/v1/files", content=b"".join(form_parts(10)), headers=MULTIPART)
            assert r.status_code == 503 and r.json()["error"]["param"] == "file", r.text
            monkeypatch.setattr(gw.batches.files, "spool", spool)  # type: ignore[union-attr]
            bad = b"".join((head.replace(b'name="purpose"', b'name="purposes"'), b"abc", tail))
            r = await c.post("/v1/files", content=bad, headers=MULTIPART)
            assert r.status_code == 400 and r.json()["error"]["param"] == "purposes", r.text  # once its file was spooled
            assert sorted(folder.iterdir()) == [kept]  # no spool left by the refused ones
    finally:
        await stopped(gw)


async def test_the_spool_of_an_upload_whose_process_died_is_swept(tmp_path: Path) -> None:
    """A spool is deleted by whoever made it; one left by a process that died (kill -9 mid-upload) is deleted by the
    runner's sweep once untouched for SPOOL_STALE_S, and a live one is left alone."""
    from aigrid.gateway.file_store import SPOOL_STALE_S

    store = FileStore(BatchDb(tmp_path))
    dead, f = store.spool("t")
    f.close()
    live, g = store.spool("t")
    g.close()
    old = time.time() - SPOOL_STALE_S - 1
    os.utime(dead, (old, old))
    await store.sweep()
    assert not dead.exists() and live.exists()


async def test_a_batch_of_a_file_deleted_while_it_is_created_is_a_404_naming_it(gw: Gateway) -> None:
    """A create that found the input file's row and then read its bytes after a DELETE had removed them (the delete
    drops the row, then the bytes) failed with a 500 (FileNotFoundError in the check); it is the 404 of a file that is
    not there, naming input_file_id, and no batch is made."""
    oai, _ = clients(gw)
    f = await oai.files.create(file=("gone.jsonl", jsonl(line("a", "hi"))), purpose="batch")
    assert gw.batches is not None
    found = await gw.batches.files.get("default", f.id)
    assert found is not None
    gw.batches.files.disk_path(found).unlink()  # the delete's second step, between the create's two reads
    with pytest.raises(openai.NotFoundError) as gone:
        await oai.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    assert gone.value.body["param"] == "input_file_id", gone.value.body  # type: ignore[index]
    assert (await oai.batches.list()).data == []


def test_a_resumed_batch_reads_its_results_a_line_at_a_time(tmp_path: Path) -> None:
    """A batch resumed (a restart, a claim taken over) read its output and error files whole, then split them: twice
    the results in memory for a moment, every resuming batch at once (up to max_running a process). They are read a
    line at a time now: what is held is the custom_ids done, and a last line cut short is still cut off."""
    from aigrid.gateway.batch_output import BatchOutput

    out = BatchOutput(tmp_path, "batch_x")
    answer = {"choices": [{"message": {"content": "x" * 4000}}], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    with out.output.open("wb") as f:
        for i in range(4000):
            f.write(orjson.dumps({"custom_id": f"q{i}", "response": {"status_code": 200, "body": answer}}) + b"\n")
        f.write(b'{"custom_id": "cut", "resp')
    size = out.output.stat().st_size
    tracemalloc.start()
    try:
        progress = out.recover()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert progress.completed == 4000 and "cut" not in progress.done and progress.input_tokens == 12000
    assert out.output.read_bytes().endswith(b"}\n") and out.output.stat().st_size == size - len(b'{"custom_id": "cut", "resp')
    assert peak < size / 8, (peak, size)


async def test_a_files_mistakes_echo_no_more_than_a_few_characters_of_it(gw: Gateway) -> None:
    """A validation error quoted the client's value whole (a `method`, `url`, model name or unknown field name of any
    length, up to a line's bound), and a batch keeps up to 100 of them in its `errors`, in its row of the index, on
    every retrieve and in every page of the list: a file of 100 lines with a 30 KB method made a Batch object of
    3 MB (100 MB at the default 4 MiB bound). What a message quotes of the client's values is cut to
    batch_input.SHOWN characters now, and a field named as `param` too."""
    from aigrid.gateway.batch_input import SHOWN

    oai, _ = clients(gw)
    big = "X" * 30_000
    bad = [{**line(f"m{i}", "hi"), "method": big} for i in range(40)]
    bad += [{**line(f"u{i}", "hi"), "url": big} for i in range(20)]
    bad += [line(f"d{i}", "hi", model=big) for i in range(20)]
    bad += [{**line(f"k{i}", "hi"), big: 1} for i in range(20)]
    failed = await submit(oai, jsonl(*bad))
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
    assert len(failed.errors.data) == 100
    raw = (await oai.batches.with_raw_response.retrieve(failed.id)).content
    assert len(raw) < 100 * 600, len(raw)
    assert all(len(e.message or "") < 300 + SHOWN and len(e.param or "") <= SHOWN + 3 for e in failed.errors.data)


async def test_batches_running_side_by_side_count_each_others_results(tmp_path: Path,
                                                                      engines: dict[str, Gated]) -> None:
    """A running batch's check counted the tenant's indexed files and its own results only: batches of one tenant
    running side by side (up to max_running a process, in every worker) each wrote up to what the quota left, together
    a multiple of it. Each batch's results are counted in the index as they are written (batch_results), by every
    other batch's check and every upload, until they become its files. Here A has written two answers and waits on
    its third; B's four answers alone fit the quota, not with A's two: B fails at its third (kept), its fourth never
    runs; A then ends its last line past the limit, every line answered: completed."""
    size = 406  # one line's answer in the output file
    a = jsonl(line("a0", "hi"), line("a1", "hi"), line("a2", "SLOW a2"))
    b = jsonl(*(line(f"b{i}", "hi") for i in range(4)))
    gw = await started(storage_spec(tmp_path, len(a) + len(b) + 4 * size + size // 2, 10, concurrency=1), engines)
    try:
        oai, _ = clients(gw)
        for e in engines.values():
            e.gate.clear()
        first = await submit(oai, a)
        for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
            if any("SLOW" in orjson.dumps(r).decode() for r in received(engines)):
                break
            await asyncio.sleep(0.01)
        assert len(received(engines)) == 3  # A's two answers written, its third waiting
        second = await until(oai, (await submit(oai, b)).id, "completed", "failed")
        assert second.status == "failed" and second.errors is not None and second.errors.data is not None
        assert second.errors.data[0].code == "storage_quota_exceeded"
        assert "other running batches' results included" in (second.errors.data[0].message or "")
        assert second.request_counts is not None and second.request_counts.completed == 3
        open_gates(engines)
        done = await until(oai, first.id, "completed", "failed")
        assert done.status == "completed" and done.errors is None and done.request_counts is not None
        assert done.request_counts.completed == 3
        assert gw.batches is not None
        left = await gw.batches.files.db.read(lambda db: db.execute("SELECT COUNT(*) FROM batch_results").fetchone()[0])
        assert left == 0  # each batch's count handed over to its files when it ended
    finally:
        open_gates(engines)
        await stopped(gw)


async def test_a_result_file_indexed_before_a_resume_counts_the_lines_written_after(tmp_path: Path) -> None:
    """A batch indexed its output, died before its final status, resumed and wrote more lines: ending again keeps
    the file's row (one file) and counts its bytes as they are now, not as they were when first indexed."""
    files = FileStore(BatchDb(tmp_path))
    out = tmp_path / "t" / "batch_r.output.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b'{"custom_id": "a"}\n')
    first = await files.keep_results("t", "batch_r", [(out, "batch_output")], None)
    with out.open("ab") as f:
        f.write(b'{"custom_id": "b", "more": "' + b"x" * 1000 + b'"}\n')
    again = await files.keep_results("t", "batch_r", [(out, "batch_output")], None)
    assert again == first and first[0] is not None
    kept = await files.get("t", first[0])
    assert kept is not None and kept.bytes == out.stat().st_size


async def test_a_file_opened_after_its_download_was_cancelled_is_closed(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download opens the file in a thread (so a DELETE meanwhile is a 404); a cancel (the client gone) that landed
    while the thread opened it left the handle it opened to the garbage collector (the twenty-second session's S found
    it in message batch results; the Files API had the same `to_thread(open)`). It is closed when the thread hands it
    over now (`open_off_loop`)."""
    oai, _ = clients(gw)
    uploaded = await oai.files.create(file=("requests.jsonl", jsonl(line("a", "hi"))), purpose="batch")
    handles = await handles_opened_after_a_cancel(gw, f"/v1/files/{uploaded.id}/content", {},
                                                  lambda path: uploaded.id in str(path), monkeypatch)
    assert handles and handles[0].closed  # before: open, left to the garbage collector



async def test_a_lines_schema_error_names_the_field_as_openai_does(gw: Gateway, engines: dict[str, Gated]) -> None:
    """A batch line's 400 follows its door: `messages[0].role`, OpenAI's form (until the thirty-seventh session the
    chat schema's `messages.0.role` in a line's error while the firewall's block said `messages[0].content`)."""
    oai, _ = clients(gw)
    wrong = line("wrong", "hi")
    wrong["body"]["messages"][0]["role"] = "wizard"
    done = await until(oai, (await submit(oai, jsonl(line("fine", "Name a river."), wrong))).id, "completed")
    errors = {x["custom_id"]: x for x in await lines_of(oai, done.error_file_id)}
    refused = errors["wrong"]["response"]
    assert refused["status_code"] == 400 and refused["body"]["error"]["param"] == "messages[0].role", refused
    assert "'messages[0].role'" in refused["body"]["error"]["message"], refused


async def test_a_line_with_an_assistant_between_tool_calls_and_their_results_is_refused_as_chat_is(
        gw: Gateway, engines: dict[str, Gated]) -> None:
    """An OpenAI batch's chat line is read as OpenAI's chat door reads it (thirty-eighth session): an assistant message
    between an assistant's tool_calls and their tool messages is OpenAI's 400 "An assistant message with 'tool_calls'
    must be followed by tool messages ...", `param` that assistant's role; it was run, the two read as one turn."""
    oai, _ = clients(gw)
    calls = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}
    between = {"role": "assistant", "content": "Let me see."}
    result = {"role": "tool", "tool_call_id": "c1", "content": "Sunny."}
    ask = {"role": "user", "content": "Weather?"}
    mixed, fine = line("mixed", "x"), line("fine", "x")
    mixed["body"]["messages"] = [ask, calls, between, result]
    fine["body"]["messages"] = [ask, calls, result, between]
    done = await until(oai, (await submit(oai, jsonl(mixed, fine))).id, "completed")
    assert [x["custom_id"] for x in await lines_of(oai, done.output_file_id)] == ["fine"]
    [refused] = await lines_of(oai, done.error_file_id)
    error = refused["response"]["body"]["error"]
    assert refused["custom_id"] == "mixed" and refused["response"]["status_code"] == 400, refused
    assert error["param"] == "messages[2].role" and error["message"].endswith("did not have response messages: c1")
