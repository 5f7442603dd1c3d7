"""Files, batches and message batches stay with the keys that may use the jurisdictions they were made under.

Their rows carried no jurisdiction: any key of the tenant, whatever jurisdictions it was narrowed to, listed, read
and downloaded the tenant's files, the batches' output and error files and a message batch's results, cancelled
and deleted its batches, and ran a batch on its files (5 Dec 2026: a US-only key read the results of an EU-only
key's batch served in the EU). Now each records its maker's allowed jurisdictions (an upload: the uploader's; a
batch, its output and error files, a message batch and its requests and results: the creator's; None for a key
that may use every one), and a key narrowed to some jurisdictions sees only what was made by a key whose
jurisdictions are all among its own: the others are a 404 like a missing id, in each API's own envelope, and are
left out of its lists. An unrestricted key sees all of its tenant's; what it made is seen by unrestricted keys only.
An index written before (format 1, without the column) opens, keeps working, and its batches take their creator's
jurisdictions from the key recorded with them (an upload of before: unrestricted keys only)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.batch_db import BatchDb
from aigrid.gateway.batch_store import BatchStore
from aigrid.gateway.file_store import FileStore, StorageFull
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from tests.gateway.batch_helpers import (
    CHAT,
    MULTIPART,
    Gated,
    counted,
    enforced,
    engines_for,
    form_parts,
    jsonl,
    keyed_batches,
    line,
    started,
    stopped,
    storage_spec,
    until,
)
from tests.gateway.message_batch_helpers import req, results, until_ended
from tests.gateway.sdk_clients import anthropic_client, openai_client

SECRET = "batch-residency-secret-0123456789"
FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}


@dataclass
class Keys:
    eu: str
    us: str
    full: str


@pytest.fixture
async def keyed(tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Gateway, Keys, dict[str, Gated]]]:
    """Keys enforced; tenant default with a key narrowed to the EU, one to the US and one for every jurisdiction."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    eu, us = (ring.issue("default", Scopes(jurisdictions=frozenset({j}))) for j in ("EU", "US"))
    full = ring.issue("default")
    ring.save(tmp_path / "keys.json")
    async with keyed_batches(tmp_path) as (gw, engines):
        yield gw, Keys(eu.api_key, us.api_key, full.api_key), engines


def oai(gw: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai_client(build_app(gw)).with_options(api_key=key, default_headers=FRANKFURT)


async def not_found(call: Any, param: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await call()
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param and body["code"] == "not_found", body


async def test_an_eu_keys_files_and_batch_are_a_404_to_a_us_key_on_every_route(keyed: Any) -> None:
    gw, keys, engines = keyed
    eu, us, full = oai(gw, keys.eu), oai(gw, keys.us), oai(gw, keys.full)
    data = jsonl(line("a", "EU secret"))
    f = await eu.files.create(file=("eu.jsonl", data), purpose="batch")
    created = await eu.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    done = await until(eu, created.id, "completed")
    out = done.output_file_id
    assert out is not None
    for fid in (f.id, out):
        for call in (us.files.retrieve, us.files.content, us.files.delete):
            await not_found(lambda call=call, fid=fid: call(fid), "file_id")  # type: ignore[misc]
    await not_found(lambda: us.batches.retrieve(created.id), "batch_id")
    await not_found(lambda: us.batches.cancel(created.id), "batch_id")
    await not_found(lambda: us.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h"),
                    "input_file_id")
    assert (await us.files.list()).data == [] and (await us.batches.list()).data == []
    for page in (lambda: us.files.list(after=f.id), lambda: us.batches.list(after=created.id)):
        with pytest.raises(openai.BadRequestError):  # a cursor it may not see is no cursor, as a missing one
            await page()
    # the EU key itself and an unrestricted key see all of it; nothing was deleted by the US key's tries
    for client in (eu, full):
        assert {x.id for x in (await client.files.list()).data} == {f.id, out}
        assert [b.id for b in (await client.batches.list()).data] == [created.id]
        assert (await client.batches.retrieve(created.id)).status == "completed"
        assert (await client.files.content(f.id)).content == data
        assert orjson.loads((await client.files.content(out)).content)["custom_id"] == "a"
    assert (await eu.files.delete(out)).deleted
    # a file in use by a batch is kept, the batch named to a key that sees it
    for e in engines.values():
        e.gate.clear()
    running = await eu.batches.create(input_file_id=(await eu.files.create(
        file=("slow.jsonl", jsonl(line("a", "SLOW"))), purpose="batch")).id, endpoint=CHAT, completion_window="24h")
    for client in (eu, full):
        with pytest.raises(openai.BadRequestError) as busy:
            await client.files.delete(running.input_file_id)
        message = busy.value.body["message"]  # type: ignore[index]
        assert "which has not ended" in message and running.id in message


async def test_a_batch_an_unrestricted_key_makes_of_an_eu_keys_file_is_served_and_kept_in_the_eu(keyed: Any) -> None:
    """The EU key's upload is EU data whoever runs it: an unrestricted key's batch of it is made under the file's
    jurisdictions (its lines routed only to EU sites though the client is in the US, its results the EU key's to
    see); it was run under the unrestricted key's, its lines served at the nearest site wherever that was."""
    gw, keys, engines = keyed
    eu, us, full = oai(gw, keys.eu), oai(gw, keys.us), oai(gw, keys.full)
    f = await eu.files.create(file=("eu.jsonl", jsonl(line("a", "EU secret"), line("b", "more"))), purpose="batch")
    ashburn = full.with_options(default_headers={"x-aigrid-client-location": "Ashburn"})
    created = await ashburn.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    done = await until(full, created.id, "completed")
    assert done.request_counts is not None and done.request_counts.completed == 2
    served = {name: len(e.received) for name, e in engines.items() if e.received}
    assert served == {"fra-smollm2": 2}, served  # the nearest site to Ashburn is iad (US): never asked
    assert (await eu.batches.retrieve(created.id)).status == "completed"  # made under the EU: the EU key sees it
    assert done.output_file_id is not None
    output = (await eu.files.content(done.output_file_id)).content
    assert sorted(orjson.loads(row)["custom_id"] for row in output.splitlines()) == ["a", "b"]
    await not_found(lambda: us.batches.retrieve(created.id), "batch_id")
    # the same batch made by the US key is not possible: it cannot see the file
    await not_found(lambda: us.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h"),
                    "input_file_id")


async def test_what_an_unrestricted_key_made_is_seen_by_unrestricted_keys_only(keyed: Any) -> None:
    """A tenant admin's upload is not the EU key's: a 404 to it, and no batch of it runs from that file (what is
    made unrestricted cannot be told from an upload of before the jurisdictions were kept, which may be anyone's)."""
    gw, keys, _ = keyed
    eu, full = oai(gw, keys.eu), oai(gw, keys.full)
    f = await full.files.create(file=("admin.jsonl", jsonl(line("a", "hi"))), purpose="batch")
    await not_found(lambda: eu.files.retrieve(f.id), "file_id")
    await not_found(lambda: eu.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h"),
                    "input_file_id")
    assert (await eu.files.list()).data == []
    done = await until(full, (await full.batches.create(input_file_id=f.id, endpoint=CHAT,
                                                        completion_window="24h")).id, "completed")
    await not_found(lambda: eu.batches.retrieve(done.id), "batch_id")
    assert [x.id for x in (await full.files.list(purpose="batch_output")).data] == [done.output_file_id]


async def test_an_eu_keys_message_batch_is_a_404_to_a_us_key_on_every_route(keyed: Any) -> None:
    gw, keys, _ = keyed
    app = build_app(gw)
    eu, us, full = (anthropic_client(app).with_options(api_key=k, default_headers=FRANKFURT)
                    for k in (keys.eu, keys.us, keys.full))
    try:
        created = await eu.messages.batches.create(requests=[req("a", "EU secret")])
        await until_ended(eu, created.id)
        for call in (lambda: us.messages.batches.retrieve(created.id), lambda: us.messages.batches.results(created.id),
                     lambda: us.messages.batches.cancel(created.id), lambda: us.messages.batches.delete(created.id)):
            with pytest.raises(anthropic.NotFoundError) as caught:
                await call()
            body = caught.value.body
            assert isinstance(body, dict) and body["type"] == "error", body  # Anthropic's envelope, not OpenAI's
            assert body["error"]["type"] == "not_found_error", body
        assert (await us.messages.batches.list()).data == []
        with pytest.raises(anthropic.BadRequestError):
            await us.messages.batches.list(after_id=created.id)
        for client in (eu, full):
            assert [b.id for b in (await client.messages.batches.list()).data] == [created.id]
            got = await results(client, created.id)
            assert got["a"].result.type == "succeeded"
        # its requests and results are the message batch's own: never in the Files API's lists, for any key
        for key in (keys.eu, keys.full):
            assert (await oai(gw, key).files.list()).data == []
        assert (await eu.messages.batches.delete(created.id)).type == "message_batch_deleted"
    finally:
        for client in (eu, us, full):
            await client.close()


_FORMAT_1 = """
CREATE TABLE files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, path TEXT NOT NULL);
CREATE INDEX files_by_tenant ON files (tenant, created_at);
CREATE TABLE batches (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL,
    object TEXT NOT NULL, principal TEXT NOT NULL, headers TEXT NOT NULL, owner TEXT, heartbeat REAL);
CREATE INDEX batches_by_tenant ON batches (tenant, created_at);
CREATE INDEX batches_by_status ON batches (status);
PRAGMA user_version = 1;
"""


def _old_index(root: Path) -> None:
    """An index as the format 1 wrote it: an upload, and a completed batch of an EU-only key (its input the upload,
    its output file) and a message batch of an unrestricted key (its requests' file)."""
    root.mkdir(parents=True)
    with closing(sqlite3.connect(root / "index.sqlite3")) as db:
        db.executescript(_FORMAT_1)
        for fid, purpose in (("file-up", "batch"), ("file-out", "batch_output"), ("file-req", "message_batch")):
            db.execute("INSERT INTO files VALUES (?, 't', ?, ?, 2, ?, NULL, ?)",
                       (fid, purpose, f"{fid}.jsonl", {"file-up": 1, "file-out": 2, "file-req": 3}[fid],
                        f"t/{fid}.jsonl"))
            (root / "t").mkdir(exist_ok=True)
            (root / "t" / f"{fid}.jsonl").write_text("{}\n")
        for bid, made_under, obj in (
                ("batch_eu", ["EU"], {"input_file_id": "file-up", "output_file_id": "file-out", "error_file_id": None}),
                ("msgbatch_all", None, {"input_file_id": "file-req", "output_file_id": None, "error_file_id": None})):
            who = {"tenant": "t", "key_id": bid, "method": "api_key", "scopes": {"jurisdictions": made_under}}
            db.execute("INSERT INTO batches VALUES (?, 't', 1, 'completed', ?, ?, '{}', NULL, NULL)",
                       (bid, orjson.dumps({"id": bid, "status": "completed", **obj}).decode(),
                        orjson.dumps(who).decode()))
        db.commit()


async def test_an_index_without_jurisdictions_opens_and_keeps_working(tmp_path: Path) -> None:
    root = tmp_path / "batches"
    _old_index(root)
    db = BatchDb(root)
    files, store = FileStore(db), BatchStore(db)
    eu, us = frozenset({"EU"}), frozenset({"US"})

    async def seen(allowed: frozenset[str] | None) -> tuple[set[str], set[str]]:
        page = await files.list("t", purpose=None, after=None, limit=10, ascending=True, allowed=allowed)
        batches = await store.list("t", None, 10, allowed=allowed)
        assert page is not None and batches is not None
        return {f.id for f in page[0]}, {b["id"] for b in batches[0]}

    assert await seen(None) == ({"file-up", "file-out"}, {"batch_eu"})  # an unrestricted key: all, as before
    # the EU key's batch and its output took its jurisdictions from the key recorded with the batch; the upload,
    # whose maker the old index does not know, is left to unrestricted keys
    assert await seen(eu) == ({"file-out"}, {"batch_eu"})
    assert await seen(us) == (set(), set())
    assert await files.get("t", "file-up", allowed=eu) is None and await files.get("t", "file-up") is not None
    assert await store.get("t", "msgbatch_all", prefix="msgbatch_") is not None
    assert await store.get("t", "msgbatch_all", prefix="msgbatch_", allowed=eu) is None
    assert await files.get("t", "file-req", hidden=True, allowed=eu) is None
    with closing(sqlite3.connect(root / "index.sqlite3")) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
        assert dict(raw.execute("SELECT id, jurisdictions FROM files").fetchall()) == \
            {"file-up": None, "file-out": '["EU"]', "file-req": None}
    # and it takes new rows, opened again by another process (nothing migrated twice)
    again = FileStore(BatchDb(root))
    src = tmp_path / "new.jsonl"
    src.write_bytes(b"{}\n")
    with src.open("rb") as fh:
        new = await again.add("t", "new.jsonl", "batch", fh, jurisdictions=us)
    assert await again.get("t", new.id, allowed=us) is not None and await again.get("t", new.id, allowed=eu) is None


async def test_a_narrowed_keys_storage_refusal_tells_nothing_of_files_it_cannot_see(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage quota is the tenant's, so a narrowed key is refused for files it cannot see: the refusal gave the
    tenant's totals (bytes and files held, uploads arriving, the room left), which told an EU-only key what the
    tenant's other keys keep. A narrowed key's refusal now names the quota and its own upload only; an unrestricted
    key, who sees every file, still gets the totals."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    eu, full = ring.issue("default", Scopes(jurisdictions=frozenset({"EU"}))), ring.issue("default")
    ring.save(tmp_path / "keys.json")
    spec = storage_spec(tmp_path, 1000, 3)
    gw = await started(enforced(spec), engines_for(tmp_path))
    admin, narrowed = oai(gw, full.api_key), oai(gw, eu.api_key)
    try:
        await admin.files.create(file=("admin.jsonl", b"a" * 617), purpose="batch")
        secrets = ("617", "383", "1 files")  # what the admin's file holds, and the room it leaves

        def tells(text: str) -> bool:
            """A secret as a figure of its own: not inside a random hex id (`req-f750cf4f8061793f` holds "617")."""
            return any(re.search(rf"(?<![0-9a-f]){re.escape(s)}(?![0-9a-f])", text) for s in secrets)

        async def refused(call: Any) -> str:
            with pytest.raises(openai.BadRequestError) as caught:
                await call()
            body = caught.value.body
            assert isinstance(body, dict) and body["code"] == "storage_quota_exceeded", body
            return str(body["message"])

        said = await refused(lambda: narrowed.files.create(file=("eu.jsonl", b"e" * 500), purpose="batch"))
        assert "1000 bytes (quotas.storage_bytes)" in said and not tells(said), said
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers={"authorization": f"Bearer {eu.api_key}"}) as c:
            r = await c.post("/v1/files", content=counted(form_parts(4000), [0]), headers=MULTIPART)  # chunked
        assert r.status_code == 400 and r.json()["error"]["code"] == "storage_quota_exceeded", r.text
        assert not tells(r.json()["error"]["message"]), r.text
        claude = anthropic_client(build_app(gw)).with_options(api_key=eu.api_key)
        with pytest.raises(anthropic.BadRequestError) as big:
            await claude.messages.batches.create(requests=[req("a", "x" * 600)])
        assert not tells(str(big.value.body)), big.value.body
        await claude.close()
        # an unrestricted key sees every file: it is told what they hold
        said = await refused(lambda: admin.files.create(file=("more.jsonl", b"m" * 500), purpose="batch"))
        assert "617 bytes in 1 files" in said, said
        # a narrowed key's batch at the tenant's limit, and a narrowed batch's results past it
        for i in range(2):
            await narrowed.files.create(file=(f"{i}.jsonl", jsonl(line("a", "hi"))), purpose="batch")
        mine = (await narrowed.files.list()).data[0]
        said = await refused(lambda: narrowed.batches.create(input_file_id=mine.id, endpoint=CHAT,
                                                             completion_window="24h"))
        assert "in 3 files" not in said and "quotas.storage_files" in said, said
        assert gw.batches is not None
        with pytest.raises(StorageFull) as results:
            await gw.batches.files.check_output("default", "batch_x", 100, 5000,
                                                jurisdictions=frozenset({"EU"}))
        assert not any(s in results.value.message for s in ("held", str(617 + 2 * len(jsonl(line("a", "hi")))))), \
            results.value.message
    finally:
        await stopped(gw)
