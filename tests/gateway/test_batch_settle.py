"""Batches and files on every way out (twenty-first session): a batch's output and error files indexed and its
`batch_results` row dropped in one step, whatever fails in between and however it ends; every input line in exactly
one of the output and the error file, whatever gateway.max_body_bytes became after the batch was made; downloads and
message batch results racing a delete; an expiring input file kept and counted while its batch runs; the batches a
tenant keeps (gateway.batch.max_batches); a delete and a create racing."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from aigrid.gateway import batch_input
from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.batch_db import BatchDb
from tests.gateway import batch_helpers
from tests.gateway.batch_helpers import (
    TENANT,
    Gated,
    batch_held_at_a_slow_line,
    batch_spec,
    clients,
    engines_for,
    jsonl,
    line,
    lines_of,
    open_gates,
    started,
    stopped,
    storage_spec,
    submit,
    until,
)
from tests.gateway.conftest import audit_rows
from tests.gateway.message_batch_helpers import clients as claude_clients
from tests.gateway.message_batch_helpers import req, until_ended
from tests.gateway.message_batch_helpers import results as message_results

engines, gw = batch_helpers.engines, batch_helpers.gw  # its fixtures


class _Refusing:
    """A connection whose `refuse(sql, params)` statements fail once, as a disk or a lock would (the rest as is)."""

    def __init__(self, db: sqlite3.Connection, refuse: Callable[[str, tuple[Any, ...]], bool]) -> None:
        self.db, self.refuse = db, refuse

    def execute(self, sql: str, params: Any = ()) -> Any:
        if self.refuse(sql, tuple(params)):
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def refuse_once(monkeypatch: pytest.MonkeyPatch, match: Callable[[str, tuple[Any, ...]], bool]) -> list[str]:
    """The index refuses the first statement that `match`es (every write after goes through); what it refused."""
    real = BatchDb.write
    refused: list[str] = []

    def once(sql: str, params: tuple[Any, ...]) -> bool:
        if not refused and match(sql, params):
            refused.append(sql)
            return True
        return False

    async def write(self: BatchDb, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return await real(self, lambda db: fn(_Refusing(db, once)))  # type: ignore[arg-type]

    monkeypatch.setattr(BatchDb, "write", write)
    return refused


async def held_by(gw: Gateway, tenant: str) -> tuple[int, int, int]:
    """(bytes of the tenant's file rows, rows of its batches' unindexed results, bytes those count)."""
    assert gw.batches is not None

    def look(db: sqlite3.Connection) -> tuple[int, int, int]:
        files = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE tenant = ?", (tenant,)).fetchone()[0]
        results = db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM batch_results WHERE tenant = ?",
                             (tenant,)).fetchone()
        return int(files), int(results[0]), int(results[1])

    return await gw.batches.files.db.read(look)


async def test_results_that_the_index_refuses_once_are_counted_once_and_kept_on_resume(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """_finish indexed the output file, then the error file, then dropped the batch's `batch_results` row, each in a
    step of its own: an index that refused the error file's row left the output counted twice (its row and the
    results row), and the batch, resumed, indexed its output again: two rows for one file, its bytes counted twice
    for good (each failed try one row more). The two files and the results row now change in one transaction, and a
    file already indexed keeps its row: the tenant's count is what its disk holds, before and after the resume."""
    gw = await started(storage_spec(tmp_path, 1 << 20, 20), engines)
    try:
        oai, _ = clients(gw)
        data = jsonl(line("a", "hi"), line("b", "FAIL"))
        refused = refuse_once(monkeypatch, lambda sql, params: sql.startswith("INSERT INTO files")
                              and any(str(p).endswith("_error.jsonl") for p in params))
        with caplog.at_level(logging.ERROR, "aigrid.gateway"):
            done = await until(oai, (await submit(oai, data)).id, "completed", "failed")
        assert refused and done.status == "completed", (refused, done)
        assert "internal error" in caplog.text or "could not" in caplog.text  # the failure is logged
        assert [x["custom_id"] for x in await lines_of(oai, done.output_file_id)] == ["a"]
        assert [x["custom_id"] for x in await lines_of(oai, done.error_file_id)] == ["b"]
        assert gw.batches is not None
        rows = await gw.batches.files.db.read(
            lambda db: [tuple(r) for r in db.execute("SELECT path, COUNT(*) FROM files GROUP BY path")])
        assert all(n == 1 for _, n in rows), rows  # one row a file
        on_disk = sum(p.stat().st_size for p in Path(gw.spec.gateway.batch.dir).rglob("*.jsonl"))
        assert await held_by(gw, "default") == (on_disk, 0, 0)
    finally:
        await stopped(gw)


async def test_a_batch_whose_input_went_while_it_was_stopped_fails_keeping_what_it_wrote(tmp_path: Path) -> None:
    """A batch stopped by a shutdown whose input file was gone when it resumed (expired and swept: files of purpose
    batch may be given an expiry) was failed as input_file_missing without its files: the answers it had written
    (charged) were never indexed, nor deletable, and its `batch_results` row counted them against the tenant's
    storage quota for good. They are now its output and error files, and counted as those."""
    first_engines = engines_for(tmp_path)
    first = await started(storage_spec(tmp_path, 1 << 20, 20, concurrency=1, drain_s=0.05), first_engines)
    oai, _ = clients(first)
    for e in first_engines.values():
        e.gate.clear()
    created = await submit(oai, jsonl(line("l1", "Name a river."), line("l2", "SLOW river"), line("l3", "hi")))
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        if len([r for e in first_engines.values() for r in e.received]) == 2:
            break
        await asyncio.sleep(0.01)
    await stopped(first)  # l1 answered and written; l2 stopped; the claim released
    assert first.batches is not None
    assert (await held_by(first, "default"))[1] == 1  # l1's answer counted as results written
    gone = await first.batches.files.delete("default", created.input_file_id)  # its expiry's sweep
    assert gone is not None
    second = await started(storage_spec(tmp_path, 1 << 20, 20, concurrency=1), engines_for(tmp_path))
    try:
        oai2, _ = clients(second)
        assert second.batches is not None
        await second.batches.start()
        done = await until(oai2, created.id, "failed")
        assert done.errors is not None and done.errors.data is not None
        assert done.errors.data[0].code == "input_file_missing"
        assert [x["custom_id"] for x in await lines_of(oai2, done.output_file_id)] == ["l1"]
        on_disk = sum(p.stat().st_size for p in Path(second.spec.gateway.batch.dir).rglob("*.jsonl"))
        assert await held_by(second, "default") == (on_disk, 0, 0)
    finally:
        await stopped(second)


class _Racing(type(Path())):  # type: ignore[misc]
    """A file's path whose file is deleted (a DELETE's second step) as soon as the download looks at it or opens it:
    the race of a download and a delete, made to happen between the lookup of the row and the read of the bytes."""

    def exists(self, **kwargs: Any) -> bool:
        there = super().exists(**kwargs)
        self.unlink(missing_ok=True)
        return there

    def open(self, *args: Any, **kwargs: Any) -> Any:
        self.unlink(missing_ok=True)
        return super().open(*args, **kwargs)


async def test_a_download_racing_its_files_delete_is_a_404_naming_it(gw: Gateway,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /v1/files/{id}/content checked that the bytes were there, then handed the path to Starlette's FileResponse,
    which opened it when the response was sent: a DELETE between the two (its row, then its bytes) made the download a
    500 (RuntimeError: the file does not exist). The file is now opened once, and the response streams from that open
    handle: one gone before is the 404 of a file not there, naming file_id; one deleted after is sent whole."""
    oai, _ = clients(gw)
    data = jsonl(line("a", "hi"))
    f = await oai.files.create(file=("in.jsonl", data), purpose="batch")
    assert gw.batches is not None
    real = type(gw.batches.files).disk_path
    monkeypatch.setattr(type(gw.batches.files), "disk_path", lambda self, found: _Racing(real(self, found)))
    with pytest.raises(openai.NotFoundError) as gone:
        await oai.files.content(f.id)
    assert gone.value.body["param"] == "file_id", gone.value.body  # type: ignore[index]
    monkeypatch.undo()
    kept = await oai.files.create(file=("in.jsonl", data), purpose="batch")
    opened: list[Any] = []
    real_open = Path.open

    def open_then_delete(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        if self.name == f"{kept.id}.jsonl":
            opened.append(self)
            self.unlink()  # deleted once opened: what was opened is sent
        return handle

    monkeypatch.setattr(Path, "open", open_then_delete)
    got = await oai.files.with_raw_response.content(kept.id)
    assert got.content == data and opened and got.headers["content-length"] == str(len(data))
    assert got.headers["content-disposition"] == 'attachment; filename="in.jsonl"'


def _long_line(cid: str, order: str, size: int) -> bytes:
    """A request line of about `size` bytes whose members are written in `order` (c custom_id, m method, u url,
    b body), as a JSON writer that does not keep OpenAI's order may write them."""
    members = {"c": b'"custom_id": ' + orjson.dumps(cid), "m": b'"method": "POST"',
               "u": b'"url": "/v1/chat/completions"',
               "b": b'"body": ' + orjson.dumps({"model": "smollm2-135m",
                                                 "messages": [{"role": "user", "content": "x" * size}]})}
    return b"{" + b", ".join(members[k] for k in order) + b"}"


async def test_every_line_of_a_batch_lands_in_one_file_whatever_the_bound_became(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch) -> None:
    """A running batch whose gateway.max_body_bytes was lowered after it was made (a restart with a smaller bound)
    passed on a line past the new bound only when its custom_id began it: a line written with its body first, or
    its method or url before its custom_id, was logged and left out of both files (`request_counts` then counted it
    in `total` and nowhere else). Such a line now finds its custom_id among the members before its body or after it,
    and is the 400 request_too_large of the error file, as a live request past the bound is."""
    spec = batch_spec(tmp_path)
    gw = await started(spec, engines)
    oai, _ = clients(gw)
    data = b"\n".join([orjson.dumps(line("small", "hi")), _long_line("first", "cmub", 6000),
                       _long_line("after", "mubc", 6000), _long_line("mid", "ucbm", 6000),
                       _long_line("behind", "bcmu", 6000)]) + b"\n"
    f = await oai.files.create(file=("in.jsonl", data), purpose="batch")
    assert gw.batches is not None
    await gw.batches.runner.stop()  # made under the larger bound, nothing run: it waits for the next gateway
    created = await oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                       completion_window="24h")
    assert created.status == "validating" and created.request_counts is not None
    await stopped(gw)
    lowered = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_body_bytes": 4000})})
    second = await started(lowered, engines_for(tmp_path))
    try:
        oai2, _ = clients(second)
        assert second.batches is not None
        await second.batches.start()
        done = await until(oai2, created.id, "completed", "failed")
        out = await lines_of(oai2, done.output_file_id)
        errors = await lines_of(oai2, done.error_file_id)
        assert [x["custom_id"] for x in out] == ["small"]
        assert sorted(x["custom_id"] for x in errors) == ["after", "behind", "first", "mid"]
        assert all(x["response"]["body"]["error"]["code"] == "request_too_large" for x in errors)
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 1, 4)
    finally:
        await stopped(second)


@pytest.mark.parametrize(("order", "cid"), [("cmub", "plain"), ("mubc", 'quo"te\\'), ("bcmu", "\u00e9t\u00e9 \U0001f600"),
                                            ("ucbm", "x" * 512), ("mbuc", "last")])
def test_a_long_lines_custom_id_is_found_where_it_was_written(tmp_path: Path, order: str, cid: str) -> None:
    """The custom_id of a line past the bound, read before its body or after it, as the line's JSON says it, even
    with a body that names a custom_id of its own in its content or in a member of its own."""
    text = _long_line(cid, order, 70_000)
    decoy = text.replace(b'"content": "x', b'"custom_id": "decoy", "content": "\\"custom_id\\": \\"decoy\\"}, x', 1)
    path = tmp_path / "in.jsonl"
    path.write_bytes(decoy + b"\n" + orjson.dumps(line("small", "hi")) + b"\n")
    assert orjson.loads(decoy)["custom_id"] == cid  # the line is the JSON it says
    reader = batch_input.LineReader(path, "/v1/chat/completions", 10, 4000)
    try:
        read = [(x.number, x.custom_id) for chunk in iter(reader.chunk, []) for x in chunk]
    finally:
        reader.close()
    assert read == [(1, cid), (2, "small")]


async def test_an_input_file_that_expires_before_its_batch_ends_is_kept_for_it(tmp_path: Path,
                                                                             engines: dict[str, Gated]) -> None:
    """An upload given an expiry (expires_after) was swept when it passed, whatever read it: a batch waiting for room
    (validating) or resumed after a restart then failed input_file_missing, nothing run, though DELETE refuses to
    remove the input of a batch that has not ended. The sweep now keeps an input file until its batch ends (the
    client no longer sees it once its expiry passed), and deletes it at the first sweep after."""
    gw = await started(batch_spec(tmp_path), engines)
    try:
        oai, _ = clients(gw)
        assert gw.batches is not None
        files = gw.batches.files
        await gw.batches.runner.stop()  # the batch waits (validating), as one waits for a process with room
        f = await oai.files.create(file=("in.jsonl", jsonl(line("a", "hi"))), purpose="batch",
                                   extra_body={"expires_after": {"anchor": "created_at", "seconds": 3600}})
        created = await oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                           completion_window="24h")
        assert created.status == "validating"
        await files.db.write(lambda db: db.execute("UPDATE files SET expires_at = 1 WHERE id = ?", (f.id,)))
        assert await files.sweep() == 0  # its hour passed; its batch has not ended
        with pytest.raises(openai.NotFoundError):
            await oai.files.retrieve(f.id)
        await gw.batches.runner.start()
        done = await until(oai, created.id, "completed", "failed")
        assert done.status == "completed", done.errors
        assert [x["custom_id"] for x in await lines_of(oai, done.output_file_id)] == ["a"]
        assert await files.sweep() == 1  # ended: it goes
        assert not list(Path(gw.spec.gateway.batch.dir).rglob(f"{f.id}.jsonl"))
    finally:
        await stopped(gw)


async def test_message_batch_results_racing_its_delete_are_a_404(gw: Gateway,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A message batch's results opened its output, error and requests files as the response was being sent: a
    DELETE of the batch in between (its rows, then its files) cut the 200 short with an error (FileNotFoundError
    after the headers went). The files are opened before the response starts: gone, it is the 404 of the batch."""
    claude, _ = claude_clients(gw)
    created = await claude.messages.batches.create(requests=[req("a", "hi")])  # type: ignore[list-item]
    await until_ended(claude, created.id)
    assert gw.batches is not None
    real = type(gw.batches.files).disk_path
    monkeypatch.setattr(type(gw.batches.files), "disk_path", lambda self, found: _Racing(real(self, found)))
    with pytest.raises(anthropic.NotFoundError):
        await message_results(claude, created.id)


async def test_a_tenant_keeps_at_most_max_batches_the_oldest_ended_making_room(tmp_path: Path,
                                                                              engines: dict[str, Gated]) -> None:
    """Nothing bounded the batches a tenant kept: a batch that failed validation holds up to 100 errors in the index
    (and its metadata), counted by no storage quota, and one 20 KB file made one again at every create: 300 in
    2.9 s, 25 KB each (scripts/batch_rows.py), several GB an hour of the disk the audit log writes to.
    A tenant now keeps at most gateway.batch.max_batches: past it a create drops its oldest ended batches (their
    files stay its files), and is a 429 batch_limit_exceeded naming the setting while none has ended."""
    gw = await started(batch_spec(tmp_path, max_batches=3), engines)
    try:
        oai, other = clients(gw)
        assert gw.batches is not None
        bad = await oai.files.create(file=("bad.jsonl", jsonl(dict(line("a", "hi"), method="GET"))), purpose="batch")
        made = [(await oai.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")).id for _ in range(5)]
        listed = [b.id for b in (await oai.batches.list()).data]
        assert listed == made[:1:-1], (listed, made)  # the newest three; the oldest two dropped
        with pytest.raises(openai.NotFoundError):
            await oai.batches.retrieve(made[0])
        await gw.batches.runner.stop()  # what is made now waits (validating), not ended
        good = await oai.files.create(file=("good.jsonl", jsonl(line("a", "hi"))), purpose="batch")
        waiting = [(await oai.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions",
                                             completion_window="24h")).id for _ in range(3)]
        assert [b.id for b in (await oai.batches.list()).data] == waiting[::-1]
        with pytest.raises(openai.RateLimitError) as full:
            await oai.with_options(max_retries=0).batches.create(input_file_id=good.id,
                                                                 endpoint="/v1/chat/completions",
                                                                 completion_window="24h")
        assert full.value.body["code"] == "batch_limit_exceeded"  # type: ignore[index]
        assert "gateway.batch.max_batches" in full.value.body["message"]  # type: ignore[index]
        other_file = await other.files.create(file=("bad.jsonl", jsonl(line("a", "hi"))), purpose="batch")
        assert (await other.batches.create(input_file_id=other_file.id, endpoint="/v1/chat/completions",
                                           completion_window="24h")).status == "validating"  # its own count
    finally:
        await stopped(gw)


async def test_an_expired_input_kept_for_its_batch_still_counts(tmp_path: Path, engines: dict[str, Gated]) -> None:
    """An input file kept past its expiry for its unended batch (above) stopped counting in its tenant's storage
    quota when the expiry passed, its bytes still on disk: a tenant could upload its quota again each hour its
    batches waited. It counts until its bytes go."""
    data = jsonl(line("a", "hi"))
    gw = await started(storage_spec(tmp_path, 2 * len(data) + 100, 10), engines)
    try:
        oai, _ = clients(gw)
        assert gw.batches is not None
        await gw.batches.runner.stop()
        f = await oai.files.create(file=("in.jsonl", data), purpose="batch",
                                   extra_body={"expires_after": {"anchor": "created_at", "seconds": 3600}})
        await oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        await gw.batches.files.db.write(lambda db: db.execute("UPDATE files SET expires_at = 1 WHERE id = ?",
                                                               (f.id,)))
        await oai.files.create(file=("b.jsonl", data), purpose="batch")  # the quota holds two
        with pytest.raises(openai.BadRequestError) as full:
            await oai.files.create(file=("c.jsonl", data), purpose="batch")
        assert full.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]
    finally:
        await stopped(gw)


async def test_a_delete_and_a_create_racing_never_leave_a_batch_without_its_input(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """DELETE /v1/files/{id} asked whether an unended batch read the file, then deleted it, in two steps; POST
    /v1/batches found the file, checked it and wrote the batch, in others. Interleaved, a batch was made whose input
    was gone (it failed input_file_missing, nothing run) and the client was told both calls had succeeded. The
    delete now asks again in the transaction that removes the row, and the create's row is written only if its file's
    row is still there: one of the two is refused (a 400 naming file_id, or the 404 naming input_file_id)."""
    oai, _ = clients(gw)
    assert gw.batches is not None
    await gw.batches.runner.stop()
    data = jsonl(line("a", "hi"))
    # the delete's question answered before the create's batch was written
    f = await oai.files.create(file=("in.jsonl", data), purpose="batch")
    created = await oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")

    async def not_yet(*_: Any) -> None:
        return None

    monkeypatch.setattr(type(gw.batches.store), "uses_file", not_yet)
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.files.delete(f.id)
    assert refused.value.body["param"] == "file_id", refused.value.body  # type: ignore[index]
    assert (await oai.files.retrieve(f.id)).id == f.id and (await oai.batches.retrieve(created.id)).status == "validating"
    monkeypatch.undo()
    # the delete done whole between the create's check of the file and its batch's row
    g = await oai.files.create(file=("in.jsonl", data), purpose="batch")
    files = gw.batches.files

    async def delete_during(*args: Any, **kwargs: Any) -> Any:
        assert await files.delete("default", g.id) is not None  # the DELETE, whole, before the row is written
        return await real_create(*args, **kwargs)

    real_create = type(gw.batches.store).create
    monkeypatch.setattr(type(gw.batches.store), "create",
                        lambda self, *a, **k: delete_during(self, *a, **k))
    with pytest.raises(openai.NotFoundError) as gone:
        await oai.batches.create(input_file_id=g.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert gone.value.body["param"] == "input_file_id", gone.value.body  # type: ignore[index]
    monkeypatch.undo()
    assert [b.id for b in (await oai.batches.list()).data] == [created.id]


@pytest.mark.parametrize("name", ['a"b.jsonl', "x\r\nSet-Cookie: a=b.jsonl", "caf\u00e9\x00\x1f.jsonl", "a;b=c"])
async def test_a_downloads_name_never_reaches_its_header_raw(gw: Gateway, name: str) -> None:
    """The download's Content-Disposition (files_api.OpenFileResponse, since the race fix above) names the file as
    uploaded, sent raw by a client that does not escape it (the SDK's httpx does): a quote, a CR/LF, a control or a
    non-ASCII character is percent-escaped in `filename*`, never a header of its own or a broken one."""
    transport = httpx.ASGITransport(app=build_app(gw))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=TENANT) as client:
        body = (b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--B\r\nContent-Disposition: '
                b'form-data; name="file"; filename="' + name.replace('"', '\\"').encode() + b'"\r\n'
                b"Content-Type: application/jsonl\r\n\r\n" + jsonl(line("a", "hi")) + b"\r\n--B--\r\n")
        made = await client.post("/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=B"})
        if made.status_code != 200:  # the parser refused the name: a 400 in the envelope, nothing kept
            assert made.status_code == 400 and made.json()["error"]["param"] == "file", made.text
            return
        got = await client.get(f"/v1/files/{made.json()['id']}/content")
    assert got.status_code == 200 and got.content == jsonl(line("a", "hi"))
    header = got.headers["content-disposition"]
    assert "\r" not in header and "\n" not in header and "set-cookie" not in {k.lower() for k in got.headers}
    assert header.startswith("attachment; filename"), header
    assert all(32 < ord(c) < 127 or c == " " for c in header), header


async def test_a_cancelled_batch_whose_files_the_index_refused_runs_no_more_lines_when_it_resumes(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A cancel moves the batch to finalizing, then its files are indexed (FileStore.keep_results). When the index
    refused that step (a lock held past its busy timeout, a disk error) the batch, resumed as `finalizing`, was no
    longer `cancelling`: it ran every line the client had cancelled (each one charged) before it ended `cancelled`.
    A batch resumed as finalizing with a cancel recorded now starts no line: it ends cancelled with what it had."""
    gw = await started(batch_spec(tmp_path, concurrency=1), engines)
    try:
        oai, _ = clients(gw)
        created = await batch_held_at_a_slow_line(oai, engines)
        refused = refuse_once(monkeypatch, lambda sql, params: sql.startswith("DELETE FROM batch_results"))
        assert (await oai.batches.cancel(created.id)).status == "cancelling"
        with caplog.at_level(logging.ERROR, "aigrid.gateway"):
            open_gates(engines)  # the running line finishes; no other starts
            done = await until(oai, created.id, "cancelled", "completed", "failed")
        assert refused and "stopped by an internal error" in caplog.text  # the index refused once, logged
        assert done.status == "cancelled", done
        assert len([r for e in engines.values() for r in e.received]) == 2  # "one" and "slow0", nothing after
        assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (2, 0)
        assert sorted(x["custom_id"] for x in await lines_of(oai, done.output_file_id)) == ["one", "slow0"]
    finally:
        await stopped(gw)


async def test_a_batch_stopped_for_room_and_resumed_charges_and_writes_each_line_once(
        tmp_path: Path, engines: dict[str, Gated], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A batch stopped for lack of room (here the disk refusing its writes: ENOSPC) whose files the index then refused
    as it ended (a full disk refuses both) resumed as `finalizing` and ran again every line whose answer the disk had
    refused: up to `concurrency` lines charged, and audited, twice. The runner now keeps the answers it could not
    write, and a resumed batch writes them instead of running their lines again: each line reaches an engine, is
    charged and is written exactly once."""
    from aigrid.gateway import batch_output

    real, disk_full, filled = batch_output._append, [False], [False]

    def append(path: Path, text: bytes) -> None:
        if b'"custom_id":"q1"' in text and not filled[0]:
            disk_full[0] = filled[0] = True  # the disk fills as q1 is written: every write fails until room is made
        if disk_full[0]:
            raise OSError(28, "No space left on device")
        real(path, text)

    def ending(sql: str, params: tuple[Any, ...]) -> bool:
        if sql.startswith("DELETE FROM batch_results") and disk_full[0]:
            disk_full[0] = False  # the index refuses as the batch ends; then the operator makes room
            return True
        return False

    monkeypatch.setattr(batch_output, "_append", append)
    gw = await started(batch_spec(tmp_path, concurrency=2), engines)
    try:
        oai, _ = clients(gw)
        refused = refuse_once(monkeypatch, ending)
        with caplog.at_level(logging.ERROR, "aigrid.gateway"):
            done = await until(oai, (await submit(oai, jsonl(*(line(f"q{i}", "hi") for i in range(5))))).id,
                               "completed", "failed")
        assert refused and "stopped by an internal error" in caplog.text  # it stopped and resumed, logged
        ran = sorted(str(r["messages"][0]["content"]) for e in engines.values() for r in e.received)
        assert len(ran) == 5, ran  # no line reached an engine twice
        charged = [r["extra"]["route"] for r in await audit_rows(gw)
                   if "custom_id=" in r["extra"]["route"] and r["outcome"] == "ok"]
        assert len(charged) == 5 and len(set(charged)) == 5, charged
        kept = await lines_of(oai, done.output_file_id) + await lines_of(oai, done.error_file_id)
        assert sorted(x["custom_id"] for x in kept) == [f"q{i}" for i in range(5)], kept
        assert done.status == "completed" and done.request_counts is not None
        assert done.request_counts.completed == 5
    finally:
        await stopped(gw)


async def _sent(response: Any) -> tuple[dict[bytes, bytes], bytes]:
    """What an ASGI response sends to a GET: its headers and its body."""
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    try:
        await response({"type": "http", "method": "GET"}, receive, send)
    finally:
        headers = dict(messages[0]["headers"]) if messages else {}
        body = b"".join(m.get("body", b"") for m in messages[1:])
    return headers, body


async def test_a_download_sends_exactly_its_content_length_while_its_file_changes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A download's Content-Length was the file's size when it was opened (fstat), its body whatever was read after:
    lines appended meanwhile (a resumed batch writing on to its output file, indexed when it first ended) were sent
    too, more bytes than the length said (the client reads a broken response, or the server fails it). Exactly the
    length is sent now; a file cut shorter meanwhile (a resume dropping a cut line) breaks the response off, logged,
    rather than send less than its length says."""
    from aigrid.gateway.files_api import CHUNK_BYTES, OpenFileResponse

    path = tmp_path / "out.jsonl"
    first = b"".join(b'{"custom_id": "%d"}\n' % i for i in range(CHUNK_BYTES // 16))  # more than a chunk
    path.write_bytes(first)
    response = OpenFileResponse(path.open("rb"), "out.jsonl")
    with path.open("ab") as grow:
        grow.write(b'{"custom_id": "later"}\n')
    headers, body = await _sent(response)
    assert int(headers[b"content-length"]) == len(first) and body == first, (headers[b"content-length"], len(body))

    response = OpenFileResponse(path.open("rb"), "out.jsonl")
    with path.open("r+b") as cut:
        cut.truncate(10)
    with caplog.at_level(logging.ERROR, "aigrid.batches"), pytest.raises(OSError, match="Content-Length"):
        await _sent(response)
    assert "cut to fewer than" in caplog.text
    assert response.f.closed


async def test_a_batch_stopped_for_room_and_resumed_without_room_starts_no_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A batch stopped by its tenant's storage quota whose files the index refused as it ended resumed as `finalizing`
    and started `concurrency` more lines before the first of them found no room: each ran and was charged, written
    past the quota again, at every resume (the ticker resumes it within `poll_s` while the index refuses). A resumed
    batch now asks for room before it starts a line: with none, it starts none and fails as before."""
    data = jsonl(*(line(f"q{i}", "hi") for i in range(6)))
    engines = engines_for(tmp_path)
    gw = await started(storage_spec(tmp_path, len(data) + 1500, 10, concurrency=1), engines)
    try:
        oai, _ = clients(gw)
        before: list[int] = []  # the lines run when the batch stopped, as its end was refused

        def ending(sql: str, params: tuple[Any, ...]) -> bool:
            if sql.startswith("DELETE FROM batch_results"):
                before.append(sum(len(e.received) for e in engines.values()))
                return True
            return False

        refused = refuse_once(monkeypatch, ending)
        with caplog.at_level(logging.ERROR, "aigrid.gateway"):
            done = await until(oai, (await submit(oai, data)).id, "completed", "failed")
        assert refused and "stopped by an internal error" in caplog.text  # it resumed, logged
        assert done.status == "failed" and done.errors is not None
        assert done.errors.data[0].code == "storage_quota_exceeded"
        kept = await lines_of(oai, done.output_file_id)
        ran = sum(len(e.received) for e in engines.values())
        assert 0 < len(kept) < 6 and ran == len(kept) == before[0], (before, ran, [x["custom_id"] for x in kept])
    finally:
        await stopped(gw)


async def test_answers_held_for_a_batch_another_process_ended_are_dropped(
        tmp_path: Path, engines: dict[str, Gated], caplog: pytest.LogCaptureFixture) -> None:
    """Answers the disk refused are held by the process that ran their lines, for a resume there; a batch another
    process resumed and ended (it ran those lines again) never comes back, and its answers were held for good (a
    leak per such batch). The ticker now drops them, each logged at error, once the index says the batch ended."""
    from aigrid.gateway.batch_line import LineResult, request_line

    gw = await started(batch_spec(tmp_path), engines)
    try:
        oai, _ = clients(gw)
        assert gw.batches is not None
        runner = gw.batches.runner
        done = await until(oai, (await submit(oai, jsonl(line("q0", "hi")))).id, "completed")
        # as if this process had held q0's answer when it stopped, and another one then resumed the batch and ended it
        runner._unwritten[done.id] = {"q0": LineResult(True, request_line("q0", 200, "req_1", {}))}
        with caplog.at_level(logging.ERROR, "aigrid.gateway"):
            for _ in range(1500):  # polled up to 30 s: a loaded machine is late, not wrong
                if done.id not in runner._unwritten:
                    break
                await asyncio.sleep(0.02)
        assert done.id not in runner._unwritten
        assert (f"batch {done.id}: the answer of custom_id 'q0' ran and was charged, but no file could keep it (the "
                "batch ended in another process, which ran the line again)") in caplog.text
    finally:
        await stopped(gw)
