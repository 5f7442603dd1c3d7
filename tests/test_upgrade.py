"""An operator upgrades aigrid in place: the new version starts on the `.aigrid/` an old one left.

The old state is in tests/upgrade_fixtures/, written by the old code itself (make_old_state.py, run at 012c30b):
an audit log with a signed checkpoint, a key file with a revoked key, a batch index with a completed batch and
its files. The current code must read all of it as it was (nothing lost, nothing reinterpreted), go on writing
(the audit chain continues, verified with the same public key), and refuse a state of a later format (a
downgrade) with one line saying what to do, leaving the file as it is.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.audit.log import AuditLog
from aigrid.audit.query import Selection, records
from aigrid.audit.record import AuditRecord
from aigrid.audit.signing import load_private_key, load_public_key
from aigrid.audit.verify import verify
from aigrid.cli import app
from aigrid.errors import ConfigError
from aigrid.gateway.batch_db import BatchDb
from aigrid.gateway.batch_store import BatchStore
from aigrid.gateway.file_store import FileStore
from aigrid.gateway.guard import start_audit
from aigrid.security.keys import KeyRing
from aigrid.security.keys_cli import create_key, revoke_key

OLD = Path(__file__).resolve().parent / "upgrade_fixtures"
SECRET = b"upgrade-fixture-secret-0123456789"  # make_old_state.py's AIGRID_KEY_SECRET
OLD_KEYS = json.loads((OLD / "old_api_keys.json").read_text())


def restore(sql: str, path: Path, user_version: int | None = None) -> Path:
    with closing(sqlite3.connect(path)) as db:
        db.executescript((OLD / sql).read_text())
        if user_version is not None:
            db.execute(f"PRAGMA user_version = {user_version}")
    return path


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


# --- the audit log -------------------------------------------------------------------------------------------

def test_an_old_audit_log_goes_on_and_verifies_across_the_upgrade(tmp_path: Path) -> None:
    db = restore("old_audit.sql", tmp_path / "audit.db")
    assert user_version(db) == 0  # the old writer stamped nothing
    public = load_public_key(OLD / "old_audit.pub.pem")
    before = verify(db, public)
    assert before.ok and before.records == 3 and before.last_checkpoint_seq == 3

    async def upgraded() -> None:
        log = AuditLog(db, load_private_key(OLD / "old_audit.pem"), checkpoint_every=2)
        await start_audit(log)
        for i in range(3):
            await log.append(AuditRecord(ts=1796400000.0 + i, request_id=f"dec-new{i}", tenant="acme",
                                         key_id="c68550d18851", model="emu", extra={"route": "/v1/chat/completions"}))
        await log.stop()

    asyncio.run(upgraded())
    after = verify(db, public)  # old and new records, old and new checkpoints, one key
    assert after.ok, after.problems
    assert after.records == 6 and after.last_checkpoint_seq == 6 and after.checkpoints >= 2
    assert not after.notes  # the old writer signed its tail: nothing it did not vouch for
    assert after.head_kept_from == 6  # the new writer's first checkpoint (v2 statement; the old one at 3 is v1)
    assert user_version(db) == 2
    found = [(r.seq, r.request_id) for r in records(db, Selection())]
    assert found[:3] == [(1, "dec-0000000000000000"), (2, "dec-0000000000000001"), (3, "dec-0000000000000002")]
    assert [rid for _, rid in found[3:]] == ["dec-new0", "dec-new1", "dec-new2"]


def test_an_audit_log_of_a_later_format_is_refused_in_one_line_and_left_as_it_is(tmp_path: Path) -> None:
    """A downgrade: this writer must not append records or checkpoints to a log whose format it does not know."""
    db = restore("old_audit.sql", tmp_path / "audit.db", user_version=3)
    bytes_before = db.read_bytes()
    log = AuditLog(db, load_private_key(OLD / "old_audit.pem"))
    with pytest.raises(ConfigError) as caught:
        asyncio.run(start_audit(log))
    message = str(caught.value)
    assert "\n" not in message
    assert "security.audit.path" in message and "newer aigrid (audit log format 3; this version writes 2)" in message
    assert "run that aigrid or a later one" in message
    assert db.read_bytes() == bytes_before and user_version(db) == 3


# --- the key file --------------------------------------------------------------------------------------------

def test_old_keys_still_authenticate_and_a_revoked_one_stays_revoked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    shutil.copy(OLD / "old_keys.json", path)
    ring = KeyRing.watching(path, SECRET)
    kept = ring.verify(OLD_KEYS["kept"])
    assert kept is not None and kept.tenant == "acme" and kept.name == "kept"
    assert ring.verify(OLD_KEYS["revoked"]) is None
    revoked_id = OLD_KEYS["revoked"].split("_")[1]
    record = ring.get(revoked_id)
    assert record is not None and record.revoked
    # the new CLI rewrites the old file: the old keys keep their state, the new key works, the format is stamped
    lines: list[str] = []
    new_id = create_key(path, "acme", secret=SECRET, echo=lines.append)
    fresh = KeyRing.load(path, SECRET)
    assert fresh.verify(OLD_KEYS["kept"]) is not None and fresh.verify(OLD_KEYS["revoked"]) is None
    assert fresh.get(new_id) is not None
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("content", ['{"version": 2, "keys": []}', '{"version": 2, "tokens": [{"id": "x"}]}'])
def test_a_key_file_of_a_later_format_is_refused_not_read_as_no_keys(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"security.keys_file: .*newer aigrid \(key file format 2; this version "
                                          r"reads format 1\)"):
        KeyRing.watching(path, SECRET)
    for run in (lambda: create_key(path, "acme", secret=SECRET, echo=print),
                lambda: revoke_key(path, "abc")):
        with pytest.raises(ConfigError, match="newer aigrid"):
            run()
    assert path.read_text() == content  # left as it is


def test_a_key_file_without_a_keys_list_is_not_an_empty_ring(tmp_path: Path) -> None:
    """Before, '{"tokens": [...]}' (another shape, a later format) was read as no keys: every request a 401,
    and no error saying why."""
    path = tmp_path / "keys.json"
    path.write_text('{"tokens": [{"key_id": "a"}]}')
    with pytest.raises(ConfigError, match="not a key file"):
        KeyRing.watching(path, SECRET)
    path.write_text("{}")
    assert KeyRing.load(path, SECRET).records() == []  # an empty object is still an empty file


def test_aigrid_keys_on_a_file_it_cannot_read_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("not json")
    for args in (["keys", "create", "acme"], ["keys", "revoke", "abc"], ["keys", "list"]):
        result = CliRunner(env={"AIGRID_KEY_SECRET": SECRET.decode()}).invoke(app, [*args, "--keys-file", str(path)])
        assert result.exit_code != 0 and (result.exception is None or isinstance(result.exception, SystemExit))
        assert "Traceback" not in result.output and "not a key file" in result.output, result.output
    assert path.read_text() == "not json"


def test_aigrid_keys_create_keeps_what_it_cannot_read(tmp_path: Path) -> None:
    """Before, a record this version skips (a later version's, a typo) and a field it does not know (in a record
    or beside `keys`) were deleted by the next `aigrid keys create` or `revoke`."""
    path = tmp_path / "keys.json"
    shutil.copy(OLD / "old_keys.json", path)
    data = json.loads(path.read_text())
    data["keys"][0]["expires"] = 1900000000  # a field a later version may add
    data["keys"].append({"key_id": "later", "tenant": "acme", "digest": "sha3:abc"})  # a record it cannot read
    data["rotation"] = {"next": "2027-01-01"}
    path.write_text(json.dumps(data))
    create_key(path, "acme", secret=SECRET, echo=lambda _: None)
    kept_id = OLD_KEYS["kept"].split("_")[1]
    assert revoke_key(path, kept_id)
    after = json.loads(path.read_text())
    assert after["rotation"] == {"next": "2027-01-01"}
    assert {"key_id": "later", "tenant": "acme", "digest": "sha3:abc"} in after["keys"]
    first = next(k for k in after["keys"] if k["key_id"] == data["keys"][0]["key_id"])
    assert first["expires"] == 1900000000
    assert next(k for k in after["keys"] if k["key_id"] == kept_id)["revoked"] is True
    assert len(after["keys"]) == 4


# --- the batch index and its files ---------------------------------------------------------------------------

def _old_batches(tmp_path: Path, version: int | None = None) -> Path:
    root = tmp_path / "batches"
    shutil.copytree(OLD / "batches", root)
    restore("old_batches.sql", root / "index.sqlite3", version)
    return root


def test_old_files_and_batches_are_listed_and_downloadable(tmp_path: Path) -> None:
    root = _old_batches(tmp_path)
    db = BatchDb(root)
    files, store = FileStore(db), BatchStore(db)

    async def read() -> None:
        page = await files.list("acme", purpose=None, after=None, limit=10, ascending=False)
        assert page is not None
        listed = {f.filename: f for f in page[0]}
        assert set(listed) == {"in.jsonl", "batch_0123456789abcdef01234567_output.jsonl"}
        batches = await store.list("acme", None, 10)
        assert batches is not None and [b["status"] for b in batches[0]] == ["completed"]
        obj = batches[0][0]
        assert obj == await store.get("acme", obj["id"])
        for fid in (obj["input_file_id"], obj["output_file_id"]):
            f = await files.get("acme", fid)
            assert f is not None and files.disk_path(f).read_bytes()
        out = await files.get("acme", obj["output_file_id"])
        assert out is not None and json.loads(files.disk_path(out).read_text())["custom_id"] == "c0"
        row = await store.row(obj["id"])
        assert row is not None and row.principal["key_id"] == "0ebfd32a3efe"

    asyncio.run(read())
    assert user_version(root / "index.sqlite3") == 2  # migrated: the jurisdictions of its rows (batch_db._migrate)


def test_a_batch_index_of_a_later_format_is_refused_in_one_line_and_left_as_it_is(tmp_path: Path) -> None:
    root = _old_batches(tmp_path, version=3)
    before = (root / "index.sqlite3").read_bytes()
    with pytest.raises(sqlite3.DatabaseError) as caught:  # Batches.start: error: gateway.batch.dir: ...
        asyncio.run(BatchStore(BatchDb(root)).list("acme", None, 10))
    message = str(caught.value)
    assert "\n" not in message
    assert "newer aigrid (batch index format 3; this version writes 2)" in message and "index.sqlite3" in message
    assert (root / "index.sqlite3").read_bytes() == before
