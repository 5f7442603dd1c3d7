"""`aigrid audit verify` against an attacker who holds the database file: every change is named (which record
or checkpoint, and why), never a traceback; what the file alone cannot show (a deleted tail with its
checkpoints, a replaced file) is caught with an anchor kept elsewhere."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from aigrid.audit.chain import OPENED_UNSIGNED, entry_hash
from aigrid.audit.cli import verify_command
from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord
from aigrid.audit.signing import key_id
from aigrid.audit.verify import verify
from aigrid.cli import app
from tests.audit.signed_log import KEY, record, tamper, write_log

ALL_TRIGGERS = ("audit_records_no_update", "audit_records_no_delete", "audit_checkpoints_no_update",
                "audit_checkpoints_no_delete")


def attacker(path: Path) -> sqlite3.Connection:
    """The file opened as an attacker would: every append-only trigger dropped."""
    db = sqlite3.connect(path)
    for name in ALL_TRIGGERS:
        db.execute(f"DROP TRIGGER IF EXISTS {name}")
    return db


def without_not_null(db: sqlite3.Connection, table: str, column: str) -> None:
    """The attacker recreates a column without its NOT NULL (the schema is theirs too)."""
    db.execute("PRAGMA writable_schema=ON")
    db.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = ?",
               (f"{column} NOT NULL", column.split()[0] + " " + column.split()[1], table))
    db.commit()


def public_pem(path: Path, key: Ed25519PrivateKey = KEY) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def run(path: Path, pub: Path | list[Path], anchor: str | None = None) -> tuple[int, list[str]]:
    out: list[str] = []
    return verify_command(path, pub, out.append, anchor=anchor), out


async def test_the_ts_column_outside_the_hash_is_checked_against_the_hashed_body(tmp_path: Path) -> None:
    """The row's ts column is not hashed (the body's ts is): moving a record in time by its column went unseen,
    and a reader selecting records by time reads the column."""
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    tamper(path, "UPDATE audit_records SET ts = ts - 86400 WHERE seq = 17")
    report = verify(path, KEY.public_key())
    assert not report.ok and report.first_bad_seq == 17
    assert report.problems == ["record 17: its ts column (1699913616.0) is not the time in its hashed body "
                               "(1700000016.0) (changed)"]


@pytest.mark.parametrize(("sql", "expected"), [
    ("UPDATE audit_records SET body = CAST(X'7B2274223A22FF227D' AS TEXT) WHERE seq = 17",
     "record 17: content does not match its hash (changed)"),  # not UTF-8: was exit 2, "not an audit database"
    ("UPDATE audit_records SET body = NULL WHERE seq = 17", "record 17: its body is NULL, not text (changed)"),
    ("UPDATE audit_records SET body = 42 WHERE seq = 17", "record 17: content does not match its hash (changed)"),
])
async def test_a_body_of_another_type_or_not_utf8_names_its_record(tmp_path: Path, sql: str, expected: str) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    db = attacker(path)
    without_not_null(db, "audit_records", "body TEXT")
    db.close()
    db = attacker(path)
    db.execute(sql)
    db.commit()
    db.close()
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1, out
    assert "TAMPERED: first bad record 17" in out and f"  - {expected}" in out


async def test_a_body_stored_as_a_blob_of_the_same_bytes_is_the_same_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    tamper(path, "UPDATE audit_records SET body = CAST(body AS BLOB) WHERE seq = 17")
    assert verify(path, KEY.public_key()).ok  # was a traceback (bytes has no encode)


@pytest.mark.parametrize(("value", "expected"), [
    ("'abc'", "checkpoint 10: signature invalid for key {kid}, the key it names (a forged or changed checkpoint)"),
    ("NULL", "checkpoint 10: its signature is NULL, not bytes (changed)"),
])
async def test_a_checkpoint_signature_of_another_type_is_named_not_a_traceback(
        tmp_path: Path, value: str, expected: str) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30, batch_max=1)  # checkpoints at 10, 20, 30
    db = attacker(path)
    without_not_null(db, "audit_checkpoints", "signature BLOB")
    db.close()
    db = attacker(path)
    db.execute(f"UPDATE audit_checkpoints SET signature = {value} WHERE seq = 10")
    db.commit()
    db.close()
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1 and f"  - {expected.format(kid=key_id(KEY.public_key()))}" in out, out


async def test_a_dropped_checkpoint_table_is_tampering_not_unusable_input(tmp_path: Path) -> None:
    """Rewrite the records, drop the table of signatures: was exit 2 ("not an audit database"), which a monitor
    reads as its own misconfiguration rather than an alarm."""
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    db = attacker(path)
    db.execute("DROP TABLE audit_checkpoints")
    db.commit()
    db.close()
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1 and "  - the checkpoint table is gone (dropped): nothing proves the records" in out, out


@pytest.mark.parametrize("sql", ["DROP TABLE audit_records", "ALTER TABLE audit_records RENAME TO kept"])
async def test_a_dropped_or_renamed_records_table_is_tampering_not_unusable_input(tmp_path: Path, sql: str) -> None:
    """The checkpoint table dropped was exit 1, the records table dropped or renamed exit 2 ('not an audit
    database'), the exit a monitor reads as its own misconfiguration: the checkpoints left say it was a log."""
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    db = attacker(path)
    db.execute(sql)
    db.commit()
    db.close()
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1 and out[-1] == ("  - the records table is gone (dropped or renamed) but the checkpoint table "
                                     "is there: the records were removed"), out
    db = attacker(path)  # neither table: not an audit log
    db.execute("DROP TABLE audit_checkpoints")
    db.commit()
    db.close()
    assert run(path, public_pem(tmp_path / "k.pub"))[0] == 2


async def test_with_an_anchor_a_missing_or_unreadable_log_is_tampering(tmp_path: Path) -> None:
    """An anchor says the log held that record: the file deleted, or replaced by a folder or by another file,
    was exit 2 (unusable input). A bad key file or anchor stays 2."""
    path, pub = tmp_path / "audit.db", public_pem(tmp_path / "k.pub")
    await write_log(path, 30)
    anchor = next(line.split()[1] for line in run(path, pub)[1] if line.startswith("anchor: "))
    path.unlink()
    assert run(path, pub)[0] == 2
    code, out = run(path, pub, anchor)
    assert code == 1 and out == [f"error: cannot verify: no audit database at {path}",
                                 f"TAMPERED: the anchor {anchor} vouches for a log that is no longer there (deleted "
                                 "or replaced)"], out
    path.mkdir()
    assert run(path, pub)[0] == 2 and run(path, pub, anchor)[0] == 1
    path.rmdir()
    path.write_bytes(b"not a database at all, " * 100)
    assert run(path, pub)[0] == 2 and run(path, pub, anchor)[0] == 1
    assert run(path, tmp_path / "no.pub", anchor)[0] == 2


async def test_a_damaged_page_names_where_reading_stopped(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, KEY, checkpoint_every=1000)
    await log.start()
    for i in range(400):
        await log.append(record(i))
    await log.stop()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # a page in the middle of the records overwritten
        f.seek(size // 2 - size // 2 % 4096)
        f.write(b"\xa5" * 4096)
    report = verify(path, KEY.public_key())
    assert not report.ok and report.damaged
    assert report.problems[0].startswith(f"records from {report.records + 1} on cannot be read: the file is damaged")
    assert not any("deleted" in p for p in report.problems)  # the damage hides the checkpoint: not a deletion


async def test_a_wrong_key_says_which_key_signed_and_a_changed_key_id_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 12, batch_max=1)
    other = Ed25519PrivateKey.generate()
    code, out = run(path, public_pem(tmp_path / "other.pub", other))
    mine, theirs = key_id(KEY.public_key()), key_id(other.public_key())
    assert code == 1
    assert (f"  - checkpoint 10: signature invalid: it names key {mine}, not the given key {theirs} (the wrong "
            "--public-key, or a checkpoint forged with another key)") in out
    # the key id is not signed: changed, the checkpoint still holds for the key that signed it, and that is said
    db = attacker(path)
    db.execute("UPDATE audit_checkpoints SET key_id = 'ffffffffffffffff' WHERE seq = 10")
    db.commit()
    db.close()
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1 and f"  - checkpoint 10: names key ffffffffffffffff but is signed by key {mine} (its key id " \
                         "was changed)" in out, out


async def test_a_log_signed_by_two_keys_after_a_rotation_verifies_with_both(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 12)
    rotated = Ed25519PrivateKey.generate()
    log = AuditLog(path, rotated, checkpoint_every=10)
    await log.start()
    for i in range(12, 25):
        await log.append(record(i))
    await log.stop()
    assert not verify(path, KEY.public_key()).ok
    code, out = run(path, [public_pem(tmp_path / "old.pub"), public_pem(tmp_path / "new.pub", rotated)])
    assert code == 0 and out[-1].startswith("OK"), out
    # the new key cannot check the old key's checkpoints: its first start says it does not vouch for 1..12
    assert any(line.startswith("NOTE: record 13: the writer opening the log said: records 1..12 followed") and
               f"they name {key_id(KEY.public_key())}: a key rotation" in line for line in out), out


NOT_ANCHORED = ("not checked (no --anchor given): whether this is an older copy of the log put back together with its "
                "head file, or another log signed with the same key; only an anchor kept off this host finds that "
                "(--anchor SEQ:HASH, the last one a run printed)")


async def test_what_the_file_alone_cannot_show_an_anchor_kept_elsewhere_does(tmp_path: Path) -> None:
    """An older copy of the log and its head file put back together (the tail gone with its checkpoints), the
    file replaced by an empty log or by another log signed with the same key: each verifies OK from the files
    alone (documented); the anchor printed by an earlier run finds it. (The tail deleted from the log alone is
    found by its head file: tests/audit/test_head.py.)"""
    path, pub = tmp_path / "audit.db", public_pem(tmp_path / "k.pub")
    await write_log(path, 20, every=10, batch_max=1)  # checkpoints at 10, 20
    older = {suffix: Path(f"{path}{suffix}").read_bytes() for suffix in ("", "-head")}
    log = AuditLog(path, KEY, checkpoint_every=10, batch_max=1)
    await log.start()
    for i in range(20, 30):
        await log.append(record(i))
    await log.stop()  # checkpoint at 30
    code, out = run(path, pub)
    anchor = next(line.split()[1] for line in out if line.startswith("anchor: "))
    assert code == 0 and anchor.startswith("30:")
    assert run(path, pub, anchor)[0] == 0

    for suffix, data in older.items():
        Path(f"{path}{suffix}").write_bytes(data)
    code, out = run(path, pub)
    assert code == 0 and NOT_ANCHORED in out, out  # the documented limit, said in verify's own output
    code, out = run(path, pub, anchor)
    assert NOT_ANCHORED not in out
    assert code == 1 and ("  - the log ends at record 20, before the anchor 30: records 21..30 were deleted, or the "
                          "file was replaced by an older copy or another log") in out, out

    other = tmp_path / "other.db"  # another log (another gateway's, a test's), signed with the same key
    log = AuditLog(other, KEY, checkpoint_every=10)
    await log.start()
    for i in range(35):
        await log.append(record(100 + i))
    await log.stop()
    assert run(other, pub)[0] == 0
    code, out = run(other, pub, anchor)
    assert code == 1 and "  - record 30 does not match the anchor (the log was rewritten, or the file replaced by " \
                         "another log)" in out, out

    empty = tmp_path / "empty.db"
    await write_log(empty, 0)
    assert run(empty, pub)[0] == 0
    assert run(empty, pub, anchor)[0] == 1

    code, out = run(path, pub, "30:nothex")
    assert code == 2 and out[0].startswith("error: cannot verify: --anchor must be SEQ:HASH"), out


async def test_a_deleted_and_renumbered_record_is_one_line_per_problem(tmp_path: Path) -> None:
    """Deleting a record and renumbering the rest made one line per later record (the 20 printed hid the rest),
    and 'first bad record 1' with no line about record 1 first."""
    path = tmp_path / "audit.db"
    await write_log(path, 60, every=50, batch_max=1)
    tamper(path, "DELETE FROM audit_records WHERE seq = 20", "UPDATE audit_records SET seq = seq - 1 WHERE seq > 20")
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1
    assert out[1:] == [
        "TAMPERED: first bad record 1 (the chain itself first breaks at record 20)",
        "  - records 1..50 do not match the signed checkpoint 50 (rewritten)",
        "  - record 20: link to record 19 is broken (changed or reordered)",
        "  - records 21..59: content or position does not match their hashes (changed, or renumbered)",
        "  - checkpoint 60 is signed but the log ends at 59 (record 60 deleted)",
        "  - the log ends at record 59, before its head file audit.db-head (record 60): record 60 was cut "
        "(truncated), or the log was replaced by an older copy",
    ], out


async def test_the_cli_prints_paths_as_written_and_never_wraps_a_finding(tmp_path: Path) -> None:
    """`aigrid audit verify` printed through rich: '[bold]' vanished from a path printed ('[/]' was a
    MarkupError traceback), and a line was wrapped at 80 columns (a monitor grepping for
    'first bad record N' could miss it)."""
    folder = tmp_path / "logs[bold]x"
    folder.mkdir()
    path = folder / "audit.db"
    await write_log(path, 30)
    pub = public_pem(tmp_path / "k.pub")
    r = CliRunner().invoke(app, ["audit", "verify", str(path), "--public-key", str(pub)])
    assert r.exit_code == 0 and r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert f"{path}: 30 records" in r.output
    tamper(path, "UPDATE audit_records SET ts = ts + 1 WHERE seq = 17")
    r = CliRunner().invoke(app, ["audit", "verify", str(path), "--public-key", str(pub)])
    assert r.exit_code == 1
    assert "  - record 17: its ts column (1700000017.0) is not the time in its hashed body (1700000016.0) " \
           "(changed)\n" in r.output, r.output


async def test_records_appended_to_a_stopped_log_are_not_vouched_for_by_its_next_start(tmp_path: Path) -> None:
    """Records after the last checkpoint are only hash-chained: anyone can append one with a correct hash, and
    verify counts it as 'after the last checkpoint' (documented). But the gateway's next start then signed it
    with its own next checkpoint, as if it had written it: verify said OK, 0 records after it. The writer
    now says first, in a record of its own, which records it found unsigned; verify prints it."""
    path = tmp_path / "audit.db"
    await write_log(path, 30)  # stopped: its final checkpoint at 30
    db = attacker(path)
    last = db.execute("SELECT hash FROM audit_records WHERE seq = 30").fetchone()[0]
    forged = record(99).body()
    db.execute("INSERT INTO audit_records VALUES (31, ?, ?, ?, ?)",
               (record(99).ts, forged, last, entry_hash(31, last, forged)))
    db.commit()
    db.close()
    assert verify(path, KEY.public_key()).unsigned_tail == 1
    log = AuditLog(path, KEY)
    await log.start()
    await log.append(record(31))
    await log.stop()
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 0 and "0 records after it" in out[0]
    assert ("NOTE: record 32: the writer opening the log said: records 31..31 followed the last checkpoint signed "
            "with this writer's key when it opened the log: it did not write them and does not vouch for them (a "
            "crash before their checkpoint, or added to the file)") in out, out
    rows = sqlite3.connect(path).execute("SELECT seq, body FROM audit_records WHERE seq > 30").fetchall()
    assert [(seq, orjson.loads(body)["outcome"]) for seq, body in rows] == [
        (31, "ok"), (32, "audit:opened_unsigned"), (33, "ok")]


@pytest.mark.parametrize("junk", ["X'00'", "(SELECT signature FROM audit_checkpoints WHERE seq = 30)"])
async def test_a_checkpoint_row_planted_at_the_head_does_not_hide_appended_records(tmp_path: Path,
                                                                                   junk: str) -> None:
    """The writer took the table's MAX(seq) as its last checkpoint, a row nothing checked at open: records
    appended to a stopped log plus a junk checkpoint row at the new head (an unsigned one, or checkpoint 30's
    signature copied) made its next start see no unsigned tail, sign the forged record as its own and write no
    note; the junk row, deleted afterwards, left verify saying OK without a note. Now the last checkpoint is the
    last one whose signature holds for the writer's key over the stored record's hash."""
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    kid = key_id(KEY.public_key())
    db = attacker(path)
    last = db.execute("SELECT hash FROM audit_records WHERE seq = 30").fetchone()[0]
    forged = record(99).body()
    h = entry_hash(31, last, forged)
    db.execute("INSERT INTO audit_records VALUES (31, ?, ?, ?, ?)", (record(99).ts, forged, last, h))
    db.execute(f"INSERT INTO audit_checkpoints VALUES (31, ?, 0, ?, {junk})", (h, kid))
    db.commit()
    db.close()
    log = AuditLog(path, KEY)
    await log.start()
    assert log.store.found_unsigned == (31, 31) and log.store.unchecked_checkpoints == [kid]
    await log.append(record(32))
    await log.stop()
    tamper(path, "DELETE FROM audit_checkpoints WHERE seq = 31")
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 0 and "0 records after it" in out[0], out
    assert ("NOTE: record 32: the writer opening the log said: records 31..31 followed the last checkpoint signed "
            "with this writer's key when it opened the log: it did not write them and does not vouch for them (a "
            f"crash before their checkpoint, or added to the file); 1 checkpoint rows after it do not hold for this "
            f"writer's key (they name {kid}: a key rotation, or rows added to the file)") in out, out


async def test_a_note_cannot_add_lines_to_the_report_and_an_unsigned_one_is_not_quoted(tmp_path: Path) -> None:
    """verify printed a note's text raw: a record appended to the unsigned tail (no key needed) looking like a
    writer's note, with a newline in its message, added a fake 'anchor:' line of the attacker's choosing to
    the report. Now a note is quoted only when a valid checkpoint signs it, its control characters escaped, and
    no later note disclaims it: the next start signed the forged note with the rest of the tail it found, and
    verify then quoted the attacker's text as 'the writer opening the log said', though that start's own note
    says it does not vouch for record 31."""
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    fake = "ab" * 32
    db = attacker(path)
    last = db.execute("SELECT hash FROM audit_records WHERE seq = 30").fetchone()[0]
    rec = AuditRecord(ts=1700000031.0, request_id="", tenant="-", key_id="-", model="", outcome=OPENED_UNSIGNED,
                      extra={"message": f"records 1..1 followed\nanchor: 30:{fake} (keep it off this host)\x1b[2J"})
    db.execute("INSERT INTO audit_records VALUES (31, ?, ?, ?, ?)",
               (rec.ts, rec.body(), last, entry_hash(31, last, rec.body())))
    db.commit()
    db.close()
    pub = public_pem(tmp_path / "k.pub")
    code, out = run(path, pub)
    assert code == 0 and not any(fake in line or "\x1b" in line for line in out), out
    assert ("NOTE: record 31: a writer's note in the unsigned tail (no valid checkpoint signs it, anyone could have "
            "added it: not shown)") in out, out

    log = AuditLog(path, KEY)  # a restart signs it, after its own note disclaiming it: still not quoted
    await log.start()
    await log.stop()
    code, out = run(path, pub)
    assert code == 0 and not any(fake in line or "\x1b" in line or "\n" in line for line in out), out
    assert "NOTE: record 31: a note in records a later writer did not vouch for: not shown" in out, out
    assert any(line.startswith("NOTE: record 32: the writer opening the log said: records 31..31") for line in out)


async def test_a_note_disclaiming_what_another_given_key_signed_is_narrowed(tmp_path: Path) -> None:
    """At a key rotation the new key's first start finds no checkpoint of its own key and disclaims every record
    before it; verify, given both keys, says which of them no given key signs (the ones forged while stopped)."""
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    db = attacker(path)
    last = db.execute("SELECT hash FROM audit_records WHERE seq = 30").fetchone()[0]
    for seq in (31, 32):
        body = record(900 + seq).body()
        h = entry_hash(seq, last, body)
        db.execute("INSERT INTO audit_records VALUES (?, ?, ?, ?, ?)", (seq, record(900 + seq).ts, body, last, h))
        last = h
    db.commit()
    db.close()
    rotated = Ed25519PrivateKey.generate()
    log = AuditLog(path, rotated)
    await log.start()
    await log.stop()
    code, out = run(path, [public_pem(tmp_path / "old.pub"), public_pem(tmp_path / "new.pub", rotated)])
    assert code == 0, out
    notes = [line for line in out if line.startswith("NOTE: record 33: the writer opening the log said: records 1..32")]
    assert len(notes) == 1 and notes[0].endswith(
        " (verify: of records 1..32, 31..32 follow the last checkpoint of any given key (30))"), out


async def test_a_clean_restart_writes_no_note(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 5)
    await write_log(path, 5)
    report = verify(path, KEY.public_key())
    assert report.ok and report.records == 10 and report.notes == []


async def test_a_count_of_one_reads_in_the_singular(tmp_path: Path) -> None:
    """A log of one record printed '1 records, 1 signed checkpoints'; a tail of one deleted record was
    'records 2..2 deleted', and an anchor one record past the end 'records 2..2 were deleted'."""
    path = tmp_path / "audit.db"
    await write_log(path, 2, every=1, batch_max=1)
    pub = public_pem(tmp_path / "k.pub")
    anchor = next(line.split()[1] for line in run(path, pub)[1] if line.startswith("anchor: "))
    assert anchor.startswith("2:")
    tamper(path, "DELETE FROM audit_records WHERE seq = 2", "DELETE FROM audit_checkpoints WHERE seq = 2")
    code, out = run(path, pub)  # the head file finds the cut tail (it passed before it was written)
    assert code == 1 and out[0] == f"{path}: 1 record, 1 signed checkpoint (last valid at record 1, 0 records " \
                                    "after it)", out
    assert "  - the log ends at record 1, before its head file audit.db-head (record 2): record 2 was cut " \
           "(truncated), or the log was replaced by an older copy" in out, out
    code, out = run(path, pub, anchor)
    assert code == 1 and "  - the log ends at record 1, before the anchor 2: record 2 was deleted, or the file " \
                         "was replaced by an older copy or another log" in out, out
    path2 = tmp_path / "audit2.db"
    await write_log(path2, 2, every=1, batch_max=1)
    tamper(path2, "DELETE FROM audit_records WHERE seq = 2")
    code, out = run(path2, pub)
    assert code == 1 and "  - checkpoint 2 is signed but the log ends at 1 (record 2 deleted)" in out, out


async def test_one_missing_or_rewritten_record_reads_in_the_singular(tmp_path: Path) -> None:
    """The singular and plural words of verify's findings come from one helper (cli_error.agreeing): one record
    deleted from the middle, and one record rewritten under a checkpoint, each in the singular, two in the
    plural."""
    pub = public_pem(tmp_path / "k.pub")
    for n, says in ((1, "  - record 5 is missing (deleted)"), (2, "  - records 5..6 are missing (deleted)")):
        path = tmp_path / f"gap{n}.db"
        await write_log(path, 10, every=50, batch_max=1)
        tamper(path, f"DELETE FROM audit_records WHERE seq BETWEEN 5 AND {4 + n}")
        code, out = run(path, pub)
        assert code == 1 and says in out, out
    path = tmp_path / "rewritten.db"
    await write_log(path, 3, every=1, batch_max=1)
    tamper(path, "UPDATE audit_records SET body = replace(body, 'tenant', 'tenant') || ' ' WHERE seq = 2")
    code, out = run(path, pub)
    assert code == 1 and "  - record 2 does not match the signed checkpoint 2 (rewritten)" in out, out


def rehash_from(db: sqlite3.Connection, first: int) -> None:
    """The attacker recomputes the chain from record `first` on (no key needed): every link and hash holds."""
    prev = db.execute("SELECT hash FROM audit_records WHERE seq = ?", (first - 1,)).fetchone()[0]
    for seq, body in db.execute("SELECT seq, body FROM audit_records WHERE seq >= ? ORDER BY seq", (first,)).fetchall():
        digest = entry_hash(seq, prev, body)
        db.execute("UPDATE audit_records SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest
    db.commit()


async def test_a_body_nested_too_deep_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A re-hashed record whose body nests 100,000 arrays: orjson refuses it (1024 deep), the fallback json.loads
    raised RecursionError out of verify (a traceback, no exit 1)."""
    path = tmp_path / "audit.db"
    await write_log(path, 30, batch_max=1)  # checkpoints at 10, 20, 30
    db = attacker(path)
    db.execute("UPDATE audit_records SET body = ? WHERE seq = 25", ('{"ts": ' + "[" * 100_000 + "]" * 100_000 + "}",))
    rehash_from(db, 25)
    db.close()
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1, out
    assert "  - record 25: its body is not an audit record (JSON nested too deep to read)" in out, out
    assert "  - records 21..30 do not match the signed checkpoint 30 (rewritten)" in out, out


@pytest.fixture
def memory_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a RAM file system (/dev/shm, where the machine has one with room), else tmp_path: for a test
    that writes thousands of checkpoints, each a durable commit and a head file written, fsynced and renamed
    (synchronous=FULL), to read them back, not to prove them durable. 3,300 records with a checkpoint each took
    61 s of the suite at load ~11 on this machine's disk (a 1,000-record log: 29 s there, 2.5 s on /dev/shm)."""
    shm = Path("/dev/shm")
    try:
        roomy = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 256 * 2**20
    except OSError:
        roomy = False
    if not roomy:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="aigrid-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_verify_keeps_nothing_per_checkpoint_on_a_long_log(memory_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quiet gateway signs every record within checkpoint_after_s: a year's log holds millions of checkpoints,
    which verify read whole (fetchall) with the recomputed hash of each record one signs (~850 bytes each:
    197 MiB for 200,000); a wrong key kept one problem each. The checkpoints are now walked with the records
    (memory flat in their number) and at most MAX_KEPT problems are kept, the rest counted."""
    import tracemalloc

    from aigrid.audit import verify as verify_module

    tmp_path = memory_disk
    peaks = []
    for n in (300, 3000):
        path = tmp_path / f"{n}.db"
        log = AuditLog(path, KEY, checkpoint_every=1, batch_max=1, linger_s=0)
        await log.start()
        for i in range(n):
            await log.append(record(i))
        await log.flush()  # all written (stop() gives up what a slow disk has not taken within 3 s)
        await log.stop()
        tracemalloc.start()
        report = verify(path, KEY.public_key())
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert report.ok and report.checkpoints == n, report.problems[:3]
    assert peaks[1] < peaks[0] + 256 * 1024, peaks  # was 2.6 MB more for 2,700 checkpoints more
    monkeypatch.setattr(verify_module, "MAX_KEPT", 100)
    code, out = run(path, public_pem(tmp_path / "other.pub", Ed25519PrivateKey.generate()))
    assert code == 1 and out[-1] == "  ... and 2981 more (2901 not kept: a report keeps the first 100 by record)", \
        out[-3:]  # 3000 checkpoints and the head: 20 printed


async def test_a_crash_before_the_first_checkpoint_says_what_the_next_start_does(tmp_path: Path) -> None:
    """The writer killed before its first checkpoint (the files as it left them, its WAL too): verify fails the
    log as before (nothing proves the records), and now says why an operator may see it after a crash and what
    clears it; the next start writes its note and signs: exit 0 with the note."""
    import shutil

    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    log = AuditLog(live, KEY, checkpoint_every=1000, checkpoint_after_s=None, linger_s=0)
    await log.start()
    for i in range(5):
        await log.append(record(i))
    await log.flush()
    for suffix in ("", "-wal"):  # the process's files at the moment it died
        shutil.copy(f"{live}{suffix}", f"{crashed}{suffix}")
    await log.stop()
    pub = public_pem(tmp_path / "k.pub")
    code, out = run(crashed, pub)
    assert code == 1 and "  - no signed checkpoint: the records could have been rewritten wholesale (a fresh log's " \
                         "writer signs its first within checkpoint_after_s; one that stopped before it, a crash, " \
                         "signs them at its next start, after a note saying it does not vouch for them)" in out, out
    restarted = AuditLog(crashed, KEY)
    await restarted.start()
    await restarted.stop()
    code, out = run(crashed, pub)
    assert code == 0 and any(line.startswith("NOTE: record 6: the writer opening the log said: records 1..5 "
                                             "followed the last checkpoint") for line in out), out


async def test_a_log_that_fails_prints_no_anchor_to_keep(tmp_path: Path) -> None:
    """Two logs signed by one key spliced, the second's records and checkpoints after the first's 15: the link at
    16 breaks (TAMPERED), but the second log's checkpoints still hold over their own records, and the run printed
    one of them as the anchor to keep: kept, it vouched for the other log's head."""
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    for path, offset in ((first, 0), (second, 1000)):
        log = AuditLog(path, KEY, checkpoint_every=10, batch_max=1, linger_s=0)
        await log.start()
        for i in range(25):
            await log.append(record(offset + i))
        await log.flush()
        await log.stop()
    db = attacker(first)
    db.execute("ATTACH ? AS b", (str(second),))
    for table in ("audit_records", "audit_checkpoints"):
        db.execute(f"DELETE FROM {table} WHERE seq > 15")
        db.execute(f"INSERT INTO {table} SELECT * FROM b.{table} WHERE seq > 15")
    db.commit()
    db.close()
    code, out = run(first, public_pem(tmp_path / "k.pub"))
    assert code == 1 and "  - record 16: link to record 15 is broken (changed or reordered)" in out, out
    assert not any(line.startswith("anchor: 2") for line in out), out
    assert "anchor: none printed, the log failed (keep the last anchor of a run that passed)" in out, out


async def test_past_max_kept_the_first_bad_record_is_still_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report kept the first MAX_KEPT problems in walk order: a problem about earlier records found later in
    the walk (a signed checkpoint no longer matching, named from the record after the last good one) was
    dropped, and the header named a first bad record no line was about. It keeps the MAX_KEPT lowest now; the
    count of the rest is unchanged."""
    from aigrid.audit import verify as verify_module

    path = tmp_path / "audit.db"
    await write_log(path, 60, every=50, batch_max=1)  # checkpoints at 50 and 60
    tamper(path, *(f"UPDATE audit_records SET body = body || ' ' WHERE seq = {seq}" for seq in range(10, 32, 2)))
    db = attacker(path)
    db.execute("UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE seq = 50")  # named from record 1
    db.commit()
    db.close()
    monkeypatch.setattr(verify_module, "MAX_KEPT", 5)
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 1
    assert out[2:6] == ["TAMPERED: first bad record 1 (the chain itself first breaks at record 10)",
                        f"  - checkpoint 50: signature invalid for key {key_id(KEY.public_key())}, the key it names "
                        "(a forged or changed checkpoint)",
                        "  - record 10: content does not match its hash (changed)",
                        "  - record 12: content does not match its hash (changed)"], out
    assert out[6:] == ["  - record 14: content does not match its hash (changed)",
                       "  - record 16: content does not match its hash (changed)",
                       "  ... and 7 more (7 not kept: a report keeps the first 5 by record)"], out  # 12 problems


def test_a_missing_database_is_named_before_a_missing_public_key(tmp_path: Path) -> None:
    """`aigrid audit verify` of a database that is not there reported the (default) public key missing."""
    path, no_key = tmp_path / "audit.db", tmp_path / "no.pub"
    assert run(path, no_key) == (2, [f"error: cannot verify: no audit database at {path}"])
    anchor = f"7:{'ab' * 32}"  # the log an anchor vouches for is gone: that needs no key to say
    code, out = run(path, no_key, anchor)
    assert code == 1 and out[0] == f"error: cannot verify: no audit database at {path}" and out[1].startswith("TAMPERED"), out
    assert run(path, no_key, "bogus")[0] == 2  # a bad anchor stays 2


def test_a_database_path_that_cannot_be_looked_at_is_named_not_a_traceback(tmp_path: Path) -> None:
    """Review of 0a2a43f3: the database's presence was read with Path.exists, which raises any error but a
    missing file: a name too long for the file system was an OSError traceback out of `aigrid audit verify`."""
    path = tmp_path / ("a" * 300)
    code, out = run(path, public_pem(tmp_path / "k.pub"))
    assert code == 2 and out[0].startswith("error: cannot verify: ") and "File name too long" in out[0], out
    code, out = run(path, public_pem(tmp_path / "k.pub"), f"7:{'ab' * 32}")
    assert code == 1 and out[1].startswith("TAMPERED"), out
