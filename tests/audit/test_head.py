"""The head file beside the log (`<log>-head`): a log cut at its end is found without an anchor, and so is one cut
with its head file deleted (its checkpoints say, signed, that its writer keeps one); a crash between the log's
commit and the head's write never makes a clean log fail; a log written before heads existed verifies as before;
an older copy of both files put back together is not found (the anchor's job: test_verify_attacks.py)."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit import store as store_module
from aigrid.audit.chain import checkpoint_message
from aigrid.audit.head import head_message, read_head, write_head
from aigrid.audit.signing import key_id
from aigrid.audit.store import AuditStore, LogCut
from aigrid.audit.verify import verify
from tests.audit.signed_log import KEY, record, tamper


def write(path: Path, *batches: int, checkpoint_after: int | None = None) -> AuditStore:
    """Batches of records (their sizes), a checkpoint after batch number `checkpoint_after` (from 1)."""
    store = AuditStore(path, KEY)
    store.open()
    n = 0
    for i, size in enumerate(batches, 1):
        store.append([(r.ts, r.body()) for r in (record(n + j) for j in range(size))])
        n += size
        if i == checkpoint_after:
            store.checkpoint()
    store.close()
    return store


def old_log(path: Path, n: int) -> None:
    """A log as an aigrid before 6 Dec 2026 left it: n records, a checkpoint of the v1 statement at n, no head."""
    store = AuditStore(path)  # no key: no head file, no checkpoint
    store.open()
    store.append([(r.ts, r.body()) for r in (record(i) for i in range(n))])
    store.close()
    signature = KEY.sign(checkpoint_message(n, store.last_hash, head_kept=False))
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO audit_checkpoints (seq, hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?)",
                   (n, store.last_hash, time.time(), key_id(KEY.public_key()), signature))
        db.execute("PRAGMA user_version = 0")
    assert not Path(f"{path}-head").exists()


MISSING = ("its head file audit.db-head is missing, but checkpoint {} says its writer keeps one (written before "
           "each checkpoint it signs): it was deleted, perhaps with records cut from the log's end; restore it from "
           "the backup taken with the log, or verify with --anchor (the last anchor kept) to find a cut before it")


def test_a_log_cut_at_its_end_with_its_head_deleted_fails(tmp_path: Path) -> None:
    """The cut tail taken with its checkpoints and the head file deleted: the log verified OK with a note (a
    missing head was taken for a log written before heads existed); its first checkpoint says its writer keeps
    a head."""
    path = tmp_path / "audit.db"
    store = write(path, 5, 3, 2, checkpoint_after=1)
    store.open()
    store.checkpoint()  # checkpoints at 5 and 10
    store.close()
    tamper(path, "DELETE FROM audit_records WHERE seq > 7", "DELETE FROM audit_checkpoints WHERE seq > 7")
    Path(f"{path}-head").unlink()
    report = verify(path, KEY.public_key())
    assert not report.ok and report.records == 7 and report.first_bad_seq == 8
    assert report.problems == [MISSING.format(5)], report.problems
    with pytest.raises(LogCut, match="head file audit.db-head is missing, but its checkpoint 5 says its writer "
                                     "keeps one: it was deleted"):
        AuditStore(path, KEY).open()  # which would have written a head at 5 that agrees with the cut log
    assert not Path(f"{path}-head").exists() and verify(path, KEY.public_key()).problems == [MISSING.format(5)]


def test_an_intact_log_whose_head_alone_was_deleted_fails_saying_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    write(path, 5, 1, checkpoint_after=1)
    head = Path(f"{path}-head")
    kept = head.read_bytes()
    head.unlink()
    report = verify(path, KEY.public_key())
    assert not report.ok and report.problems == [MISSING.format(5)], report.problems
    assert not any("no head file" in note for note in report.notes)
    head.write_bytes(kept)  # restored from the backup taken with the log
    assert verify(path, KEY.public_key()).ok


def test_a_log_written_before_heads_verifies_as_before_and_is_marked_at_its_next_start(tmp_path: Path) -> None:
    """No v2 checkpoint, no head: a note, not a failure (tests/test_upgrade.py: the real old log). Its next writer
    writes a head at its last checkpoint and signs v2 checkpoints: from the first, a cut with the head deleted
    fails, and so does an older head put back (one from before that checkpoint)."""
    path = tmp_path / "audit.db"
    old_log(path, 4)
    report = verify(path, KEY.public_key())
    assert report.ok and report.head_kept_from == 0, report.problems
    assert report.notes[-1].startswith("no head file audit.db-head beside the log: a cut at its end is not seen")
    store = AuditStore(path, KEY)
    store.open()
    head = Path(f"{path}-head")
    at_open = head.read_bytes()
    assert at_open.startswith(b"4:")
    store.append([(r.ts, r.body()) for r in (record(4 + j) for j in range(2))])
    store.checkpoint()  # 6: the log's first v2 checkpoint
    store.append([(record(6).ts, record(6).body())])
    store.checkpoint()
    store.close()
    report = verify(path, KEY.public_key())
    assert report.ok and report.head_kept_from == 6 and report.records == 7, report.problems
    head.write_bytes(at_open)  # an older head put back: before the checkpoint that says a head is kept
    assert verify(path, KEY.public_key()).problems == [
        "the head file audit.db-head (record 4) is before checkpoint 7, signed only once the head was at or past "
        "it: an older head file was put back, perhaps with records cut from the log's end; restore the log and its "
        "head file together from the same backup, or verify with --anchor (the last anchor kept) to find a cut"]
    tamper(path, "DELETE FROM audit_records WHERE seq > 6", "DELETE FROM audit_checkpoints WHERE seq > 6")
    head.unlink()
    assert verify(path, KEY.public_key()).problems == [MISSING.format(6)]


def test_an_older_head_put_back_between_two_head_keeping_checkpoints_is_refused(tmp_path: Path) -> None:
    """Checkpoints 3 and 6 both say a head is kept; the head of record 5 (past the first, behind the last) put
    back with records 7..8 cut: verify named nothing (it checked the head against the first such checkpoint
    only) and the writer rewrote the head at 6, erasing the evidence. Both refuse it now, naming both."""
    path = tmp_path / "audit.db"
    store = AuditStore(path, KEY)
    store.open()
    head = Path(f"{path}-head")
    records = [record(j) for j in range(8)]
    store.append([(r.ts, r.body()) for r in records[:3]])
    store.checkpoint()
    store.append([(r.ts, r.body()) for r in records[3:5]])
    older = head.read_bytes()
    store.append([(r.ts, r.body()) for r in records[5:6]])
    store.checkpoint()
    store.append([(r.ts, r.body()) for r in records[6:]])
    store.close()
    assert older.startswith(b"5:")
    report = verify(path, KEY.public_key())
    assert report.ok and report.head_kept_from == 3 and report.head_kept_until == 6, report.problems
    tamper(path, "DELETE FROM audit_records WHERE seq > 6")
    head.write_bytes(older)
    assert verify(path, KEY.public_key()).problems == [
        "the head file audit.db-head (record 5) is before checkpoint 6, signed only once the head was at or past "
        "it: an older head file was put back, perhaps with records cut from the log's end; restore the log and its "
        "head file together from the same backup, or verify with --anchor (the last anchor kept) to find a cut"]
    with pytest.raises(LogCut, match=r"head file audit.db-head \(record 5\) is before its checkpoint 6, which says "
                                     "its writer keeps a head"):
        AuditStore(path, KEY).open()
    assert head.read_bytes() == older  # the evidence is kept


def test_a_checkpoint_is_signed_only_once_the_head_is_on_disk_at_its_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head write of the last batch failed: the checkpoint writes it first and fsyncs its folder (a crash
    could lose the rename), and a head that cannot be written fails the checkpoint rather than sign one verify
    would then fail for its missing head."""
    path = tmp_path / "audit.db"
    store = AuditStore(path, KEY)
    store.open()
    real, failing = store_module.write_head, [True]

    def write_head(head: Path, seq: int, record_hash: str, key: object) -> None:
        if failing[0]:
            raise OSError(28, "No space left on device")
        real(head, seq, record_hash, key)

    synced: list[tuple[bytes, int]] = []

    def sync_folder(head: Path) -> None:
        with sqlite3.connect(path) as db:
            synced.append((head.read_bytes()[:2], db.execute("SELECT COUNT(*) FROM audit_checkpoints").fetchone()[0]))

    monkeypatch.setattr(store_module, "write_head", write_head)
    monkeypatch.setattr(store_module, "sync_folder", sync_folder)
    store.append([(record(0).ts, record(0).body())])  # its head not written (logged)
    assert not Path(f"{path}-head").exists()
    with pytest.raises(OSError, match="No space left"):
        store.checkpoint()
    assert store.last_checkpoint == 0 and not synced
    failing[0] = False
    assert store.checkpoint() == 1
    store.close()
    assert synced == [(b"1:", 0)]  # the head at record 1 and its folder synced before the checkpoint's row
    assert verify(path, KEY.public_key()).ok


@pytest.mark.parametrize(("code", "signed"), [(errno.EINVAL, True), (errno.EIO, False)])
def test_a_folder_its_file_system_cannot_sync_does_not_stop_the_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, signed: bool) -> None:
    """EINVAL from a folder's fsync (a file system that cannot sync one) is let be, or no checkpoint would ever be
    signed there; EIO fails the checkpoint."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real(fd)

    store = AuditStore(tmp_path / "audit.db", KEY)
    store.open()
    store.append([(record(0).ts, record(0).body())])
    monkeypatch.setattr(os, "fsync", fsync)
    if signed:
        assert store.checkpoint() == 1
    else:
        with pytest.raises(OSError, match=os.strerror(code)):
            store.checkpoint()
    store.close()
    assert (store.last_checkpoint == 1) is signed


def test_a_log_cut_by_one_record_fails_naming_the_cut(tmp_path: Path) -> None:
    """Record 6, after the last checkpoint (5), deleted: the log verified OK ("0 records after it"); its head
    file says the writer wrote 6."""
    path = tmp_path / "audit.db"
    write(path, 5, 1, checkpoint_after=1)
    assert verify(path, KEY.public_key()).ok
    tamper(path, "DELETE FROM audit_records WHERE seq = 6")
    report = verify(path, KEY.public_key())
    assert not report.ok and report.first_bad_seq == 6
    assert report.problems == ["the log ends at record 5, before its head file audit.db-head (record 6): record 6 "
                               "was cut (truncated), or the log was replaced by an older copy"], report.problems


def test_a_clean_log_passes_and_its_head_is_its_last_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    store = write(path, 3, 4, checkpoint_after=2)
    assert verify(path, KEY.public_key()).ok
    assert Path(f"{path}-head").read_text().startswith(f"7:{store.last_hash}:")


def test_a_head_not_written_after_the_logs_commit_does_not_fail_a_clean_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The head is written after the batch's commit, never before: a crash (here: a failing write) between the
    two leaves the head behind the log, which verify accepts; the next batch writes it again."""
    path = tmp_path / "audit.db"
    seen: list[int] = []
    real = store_module.write_head

    def crash_after_the_commit(head: Path, seq: int, record_hash: str, key: object) -> None:
        with sqlite3.connect(path) as other:  # the batch is already committed when the head is written
            seen.append(other.execute("SELECT MAX(seq) FROM audit_records").fetchone()[0])
        if seq == 6:
            raise OSError(28, "No space left on device")
        real(head, seq, record_hash, key)

    monkeypatch.setattr(store_module, "write_head", crash_after_the_commit)
    write(path, 5, 1, checkpoint_after=1)
    assert seen == [5, 6]
    assert Path(f"{path}-head").read_text().startswith("5:")
    assert "audit head file not written (record 6 is in the log" in caplog.text
    report = verify(path, KEY.public_key())
    assert report.ok, report.problems
    assert report.records == 6 and report.unsigned_tail == 1


def test_the_writer_refuses_a_cut_log_even_once_its_head_is_moved_aside(tmp_path: Path) -> None:
    """Appending to a cut log would overwrite its head, and the evidence with it; moving the head aside no longer
    opens it (its checkpoint says a head is kept: that is the deletion verify fails): a new log is started."""
    path = tmp_path / "audit.db"
    write(path, 5, 2, checkpoint_after=1)
    tamper(path, "DELETE FROM audit_records WHERE seq > 5")
    store = AuditStore(path, KEY)
    with pytest.raises(LogCut, match="ends at record 5, before record 7 its head file audit.db-head names: it was "
                                     "cut .* move the log and its head file aside"):
        store.open()
    Path(f"{path}-head").rename(tmp_path / "kept-head")
    with pytest.raises(LogCut, match="head file audit.db-head is missing"):
        store.open()
    assert not Path(f"{path}-head").exists()


def test_a_missing_or_forged_head_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    write(path, 5, 1, checkpoint_after=1)
    head = Path(f"{path}-head")
    seq, rest = head.read_text().split(":", 1)
    head.write_text(f"7:{rest}")
    assert verify(path, KEY.public_key()).problems == [
        "the head file audit.db-head: its signature is invalid for every given key (forged or changed, or the "
        "wrong --public-key)"]
    head.write_text("junk\x1b[2J")
    assert verify(path, KEY.public_key()).problems == ["the head file audit.db-head is not SEQ:HASH:KEY_ID:SIGNATURE "
                                                       "(changed)"]
    head.unlink()  # its checkpoint says a head is kept (test_an_intact_log_whose_head_alone_was_deleted_...)
    assert verify(path, KEY.public_key()).problems == [MISSING.format(5)]


def test_a_log_written_before_the_head_file_gets_one_at_its_last_checkpoint(tmp_path: Path) -> None:
    """Never at records after it, which the writer did not write (they may have been added to the file)."""
    path = tmp_path / "audit.db"
    old_log(path, 5)
    store = AuditStore(path)  # records after the checkpoint: an old writer's crash, or added to the file
    store.open()
    store.append([(r.ts, r.body()) for r in (record(5 + j) for j in range(2))])
    store.close()
    store = AuditStore(path, KEY)
    store.open()
    store.close()
    assert Path(f"{path}-head").read_text().startswith("5:")
    assert store.found_unsigned == (6, 7)


@pytest.mark.parametrize(("fs", "warned"), [("nfs4", True), ("ext4", False)])
def test_a_log_on_a_network_file_system_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture, fs: str, warned: bool) -> None:
    """POSIX locks and SQLite's WAL hold on one host: on NFS a gateway on another host could open the log too
    (documented; the cheap guard is this warning at open)."""
    mounts = tmp_path / "mountinfo"
    mounts.write_text(f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n100 1 0:50 / {tmp_path.resolve()} rw - {fs} srv:/x rw\n")
    monkeypatch.setattr(store_module, "MOUNTS", mounts)
    write(tmp_path / "audit.db", 1)
    assert ("is on a network file system (nfs4)" in caplog.text) is warned, caplog.text


def test_the_writer_refuses_a_head_its_key_did_not_sign(tmp_path: Path) -> None:
    """A log cut after its checkpoint with a head forged at the cut (its signature not checked at open) was taken,
    and the writer's next batch signed a head over it: the cut no longer showed (Review R3). Forged with this
    key's id or another's (this key's last checkpoint says it keeps the head, no other key signed since): refused;
    another key's head where that key signed after it (a rotation) is let be."""
    path = tmp_path / "audit.db"
    write(path, 5, 2, checkpoint_after=1)  # records 1..7, checkpoint at 5, head at 7
    tamper(path, "DELETE FROM audit_records WHERE seq > 5")
    with sqlite3.connect(path) as db:
        (hash5,) = db.execute("SELECT hash FROM audit_records WHERE seq = 5").fetchone()
    head = Path(f"{path}-head")
    for named in (key_id(KEY.public_key()), "0123456789abcdef"):
        head.write_text(f"5:{hash5}:{named}:{'0' * 128}\n")
        with pytest.raises(LogCut, match="head file audit.db-head is not signed by this writer's key"):
            AuditStore(path, KEY).open()
        assert head.read_text().startswith("5:") and not verify(path, KEY.public_key()).ok
    rotated = tmp_path / "rotated.db"
    write(rotated, 5, checkpoint_after=1)
    other = AuditStore(rotated, Ed25519PrivateKey.generate())  # a rotation: the other key's writer wrote on
    other.open()
    other.append([(r.ts, r.body()) for r in (record(5 + j) for j in range(2))])
    other.checkpoint()
    other.close()
    store = AuditStore(rotated, KEY)  # its head is the other key's, which signed after this key's checkpoint
    store.open()
    store.close()


def test_a_new_key_s_writer_refuses_a_log_whose_head_was_deleted(tmp_path: Path) -> None:
    """A key rotation: the old key's writer kept a head; records cut from the end with their checkpoint and the head
    deleted. The new key's writer checks only its own checkpoints (none here), so it took the log for one written
    before heads, opened it, and its first batch wrote a head that agrees with the cut: verify, given both keys, then
    passed. It refuses it now (the log's format says its writers keep a head), and leaves it as it was."""
    path = tmp_path / "audit.db"
    store = write(path, 5, 3, checkpoint_after=1)  # records 1..8, checkpoint at 5, head at 8
    store.open()
    store.checkpoint()  # and at 8
    store.close()
    tamper(path, "DELETE FROM audit_records WHERE seq > 6", "DELETE FROM audit_checkpoints WHERE seq > 6")
    Path(f"{path}-head").unlink()
    new = Ed25519PrivateKey.generate()
    with pytest.raises(LogCut, match=f"head file audit.db-head is missing, but the log's checkpoints after this "
                                     f"key's last one are signed by another key \\({key_id(KEY.public_key())}\\)"):
        AuditStore(path, new).open()
    assert not Path(f"{path}-head").exists()
    assert verify(path, [KEY.public_key(), new.public_key()]).problems == [MISSING.format(5)]


def test_a_new_key_s_writer_still_opens_a_log_written_before_heads(tmp_path: Path) -> None:
    """A log of an aigrid before 6 Dec 2026 (format 0, v1 checkpoints, no head), opened first with a new key: no head
    was ever kept, so none is missing; the writer opens it and starts one."""
    path = tmp_path / "audit.db"
    old_log(path, 4)
    store = AuditStore(path, Ed25519PrivateKey.generate())
    store.open()
    store.append([(r.ts, r.body()) for r in (record(4 + j) for j in range(2))])
    store.close()
    assert Path(f"{path}-head").read_text().startswith("6:")


def test_a_new_key_s_writer_refuses_an_older_head_of_the_old_key_put_back(tmp_path: Path) -> None:
    """A key rotation: the old key's head file from before its last checkpoint put back, the records after that
    checkpoint cut. The old key's writer refuses it (05a123a); the new key's writer could not check the head's
    signature and opened the log, its first batch writing a head past the cut. It refuses it now: the other key's
    checkpoint after the head was signed only once the head was at or past it."""
    path = tmp_path / "audit.db"
    store = AuditStore(path, KEY)
    store.open()
    store.append([(r.ts, r.body()) for r in (record(j) for j in range(5))])
    store.checkpoint()  # at 5, head at 5
    older = Path(f"{path}-head").read_bytes()
    store.append([(r.ts, r.body()) for r in (record(5 + j) for j in range(3))])
    store.checkpoint()  # at 8
    store.append([(r.ts, r.body()) for r in (record(8 + j) for j in range(2))])  # head at 10
    store.close()
    tamper(path, "DELETE FROM audit_records WHERE seq > 8")
    Path(f"{path}-head").write_bytes(older)
    new = Ed25519PrivateKey.generate()
    with pytest.raises(LogCut, match=r"head file audit.db-head \(record 5, not this key's\) is before its checkpoint 8"):
        AuditStore(path, new).open()
    assert Path(f"{path}-head").read_bytes() == older
    assert not verify(path, [KEY.public_key(), new.public_key()]).ok


def test_each_head_written_names_and_is_signed_by_its_own_key(tmp_path: Path) -> None:
    """write_head keeps each key's id once computed (it runs after every batch): heads written with two keys in
    turn each name their own key, verify with it, and leave no temporary file behind."""
    other = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.db-head"
    for seq, key in enumerate((KEY, other, KEY, other), 1):
        write_head(path, seq, f"{seq:064x}", key)
        found = read_head(path)
        assert found is not None and found[:3] == (seq, f"{seq:064x}", key_id(key.public_key()))
        key.public_key().verify(found[3], head_message(seq, f"{seq:064x}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.db-head"]
