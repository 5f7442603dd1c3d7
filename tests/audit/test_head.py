"""The head file beside the log (`<log>-head`): a log cut at its end is found without an anchor; a crash
between the log's commit and the head's write never makes a clean log fail; an older copy of both files put
back together is not found (the anchor's job: test_verify_attacks.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aigrid.audit import store as store_module
from aigrid.audit.store import AuditStore
from aigrid.audit.verify import verify
from tests.audit.test_audit_log import KEY, record, tamper


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


def test_the_writer_refuses_a_cut_log_and_opens_it_once_the_head_is_moved_aside(tmp_path: Path) -> None:
    """Appending to a cut log would overwrite its head, and the evidence with it."""
    path = tmp_path / "audit.db"
    write(path, 5, 2, checkpoint_after=1)
    tamper(path, "DELETE FROM audit_records WHERE seq > 5")
    store = AuditStore(path, KEY)
    with pytest.raises(store_module.LogCut, match="ends at record 5, before record 7 its head file audit.db-head "
                                                  "names: it was cut"):
        store.open()
    Path(f"{path}-head").rename(tmp_path / "kept-head")
    store.open()
    store.close()
    assert Path(f"{path}-head").read_text().startswith("5:")  # its last checkpoint, which it signed


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
    head.unlink()  # a log no writer of this version opened, or the head deleted: a note, not a failure
    report = verify(path, KEY.public_key())
    assert report.ok and report.notes[-1].startswith("no head file audit.db-head beside the log: a cut at its end "
                                                     "is not seen"), report.notes


def test_a_log_written_before_the_head_file_gets_one_at_its_last_checkpoint(tmp_path: Path) -> None:
    """Never at records after it, which the writer did not write (they may have been added to the file)."""
    path = tmp_path / "audit.db"
    write(path, 5, 2, checkpoint_after=1)
    Path(f"{path}-head").unlink()
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
