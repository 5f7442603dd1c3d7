"""The audit writer and verify: intact logs pass; changed, deleted and reordered rows are pinpointed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.chain import entry_hash
from aigrid.audit.cli import keygen_command, verify_command
from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord
from aigrid.audit.signing import load_private_key
from aigrid.audit.verify import verify
from tests.audit.signed_log import KEY, record, tamper, write_log


async def test_intact_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 45)
    report = verify(path, KEY.public_key())
    assert report.ok, report.problems
    assert (report.records, report.last_checkpoint_seq, report.unsigned_tail) == (45, 45, 0)
    assert report.checkpoints >= 4
    body = json.loads(sqlite3.connect(path).execute("SELECT body FROM audit_records WHERE seq=3").fetchone()[0])
    assert body["request_id"] == "r2" and "prompt_text" in body and body["prompt_text"] is None


async def test_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 5)
    await write_log(path, 5)
    assert verify(path, KEY.public_key()).ok


async def test_rows_are_append_only_by_trigger(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 3)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        sqlite3.connect(path).execute("UPDATE audit_records SET body='{}' WHERE seq=2")


async def test_changed_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    tamper(path, "UPDATE audit_records SET body=replace(body, '\"EU\"', '\"US\"') WHERE seq=17")
    report = verify(path, KEY.public_key())
    assert not report.ok and report.first_bad_seq == 17
    assert "record 17" in report.problems[0]


async def test_deleted_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    tamper(path, "DELETE FROM audit_records WHERE seq=12")
    report = verify(path, KEY.public_key())
    assert report.first_bad_seq == 12 and "deleted" in report.problems[0]


async def test_reordered_rows_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    tamper(path, "UPDATE audit_records SET seq=-1 WHERE seq=8", "UPDATE audit_records SET seq=8 WHERE seq=9",
           "UPDATE audit_records SET seq=9 WHERE seq=-1")
    report = verify(path, KEY.public_key())
    assert report.first_bad_seq == 8


async def test_truncated_tail_before_a_checkpoint_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30)
    tamper(path, "DELETE FROM audit_records WHERE seq > 25")
    report = verify(path, KEY.public_key())
    assert report.first_bad_seq == 26 and "deleted" in report.problems[0]


async def test_rewritten_chain_is_caught_by_the_signed_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 30, every=10, batch_max=1)  # checkpoints at 10, 20, 30
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER audit_records_no_update")
    rows = db.execute("SELECT seq, body, prev_hash FROM audit_records WHERE seq >= 14 ORDER BY seq").fetchall()
    prev = rows[0][2]
    for seq, body, _ in rows:  # change record 14 and recompute every later hash, as a careful attacker would
        if seq == 14:
            body = body.replace('"k1"', '"k2"')
        h = entry_hash(seq, prev, body)
        db.execute("UPDATE audit_records SET body=?, prev_hash=?, hash=? WHERE seq=?", (body, prev, h, seq))
        prev = h
    db.commit()
    db.close()
    report = verify(path, KEY.public_key())
    assert not report.ok and report.bad_range == (11, 20) and report.first_bad_seq == 11


async def test_wrong_public_key_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await write_log(path, 12)
    report = verify(path, Ed25519PrivateKey.generate().public_key())
    assert not report.ok and "signature invalid" in report.problems[0]


async def test_log_without_checkpoints_is_not_proven(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, None)
    await log.start()
    await log.append(record(1))
    await log.stop()
    assert not verify(path, KEY.public_key()).ok
    assert verify(path, KEY.public_key(), require_checkpoint=False).ok


async def test_records_appended_together_are_written_in_one_batch(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", KEY, linger_s=0.05)
    await log.start()
    batches: list[int] = []
    real = log.store.append

    def counting(entries: list[tuple[float, str]]) -> int:
        batches.append(len(entries))
        return real(entries)

    log.store.append = counting  # type: ignore[method-assign]
    await log.append(record(0))
    await asyncio.sleep(0.01)  # the writer lingers for the rest of the batch
    for i in range(1, 5):
        await log.append(record(i))
    await log.stop()
    assert batches == [5]
    report = verify(tmp_path / "audit.db", KEY.public_key())
    assert report.ok and report.records == 5


async def test_a_flush_or_a_stop_does_not_wait_out_the_writers_linger(tmp_path: Path) -> None:
    """The writer lingers after a batch's first record for more to join it; a flush() or a stop() waits only for
    records queued already, so it cuts the linger short (before, each waited it out: 50 ms at every gateway stop)."""
    log = AuditLog(tmp_path / "audit.db", KEY, linger_s=3600)
    await log.start()
    for i in range(2):
        await log.append(record(i))
        for _ in range(3000):  # the writer takes the record, then lingers for more
            if log._pending:
                break
            await asyncio.sleep(0.01)
        assert log._pending
        async with asyncio.timeout(60):  # far below the linger: only a flush that cuts it short returns
            await (log.flush() if i == 0 else log.stop())
    report = verify(tmp_path / "audit.db", KEY.public_key())
    assert report.ok and report.records == 2



def test_a_log_started_again_under_another_event_loop_lingers_without_a_writer_restart(tmp_path: Path) -> None:
    """start() after stop() under a new event loop (a gateway's lifespan run twice, each under its own loop) works
    as the first: the event that cuts the linger short belongs to the loop of the start, as the queue does (one
    made once was bound to the first loop: the next linger raised, the writer restarted after retry_s, logged)."""
    log = AuditLog(tmp_path / "audit.db", KEY, linger_s=3600, retry_s=3600)

    async def one_run(i: int) -> None:
        await log.start()
        await log.append(record(i))
        for _ in range(3000):  # the writer takes the record, then lingers for more (or fails and restarts)
            if log._pending or log.restarts:
                break
            await asyncio.sleep(0.01)
        assert log._pending and log.restarts == 0
        async with asyncio.timeout(60):
            await log.stop()

    for i in range(2):
        asyncio.run(one_run(i))
    report = verify(tmp_path / "audit.db", KEY.public_key())
    assert report.ok and report.records == 2

async def test_appends_do_not_block_the_event_loop(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", KEY, checkpoint_every=50)
    await log.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    for i in range(300):
        await log.append(record(i))
    await log.flush()
    task.cancel()
    await log.stop()
    assert ticks > 10  # the loop kept running while batches were written in a thread
    assert verify(tmp_path / "audit.db", KEY.public_key()).records == 300


async def test_cli_verify_and_keygen(tmp_path: Path) -> None:
    priv, pub = tmp_path / "audit.key", tmp_path / "audit.pub"
    out: list[str] = []
    assert keygen_command(priv, pub, out.append) == 0
    assert keygen_command(priv, pub, out.append) == 2
    path = tmp_path / "audit.db"
    log = AuditLog(path, load_private_key(priv))
    await log.start()
    for i in range(5):
        await log.append(record(i))
    await log.stop()
    assert verify_command(path, pub, out.append) == 0 and out[-1].startswith("OK")
    tamper(path, "DELETE FROM audit_records WHERE seq=2")
    assert verify_command(path, pub, out.append) == 1
    assert any("first bad record 2" in line for line in out)
    assert verify_command(tmp_path / "missing.db", pub, out.append) == 2


async def test_unserialisable_record_fails_in_the_caller_not_the_writer(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", KEY)
    await log.start()
    with pytest.raises(TypeError):
        await log.append(AuditRecord(ts=1.0, request_id="r", tenant="t", key_id="k", model="m",
                                     decision={"bad": object()}))
    await log.append(record(1))
    await log.stop()  # does not hang: the writer is still alive
    assert verify(tmp_path / "audit.db", KEY.public_key()).records == 1


async def test_a_bug_in_the_writer_is_logged_and_the_writer_restarts_without_losing_the_batch(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(tmp_path / "a.db", KEY, retry_s=0.01)
    await log.start()
    real, calls = log.store.append, []

    def flaky(entries: list[tuple[float, str]]) -> int:
        calls.append(len(entries))
        if len(calls) == 1:
            raise KeyError("a bug, not a disk error")
        return real(entries)

    log.store.append = flaky  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="aigrid.audit.log"):
        await log.append(record(0))
        await asyncio.wait_for(log.flush(), 5)
    assert log.restarts == 1 and "restarting" in caplog.text and "KeyError" in caplog.text
    await log.stop()
    assert verify(tmp_path / "a.db", KEY.public_key()).records == 1


async def test_append_waits_a_bounded_time_then_says_the_log_is_unavailable(tmp_path: Path) -> None:
    from aigrid.errors import AuditUnavailable

    log = AuditLog(tmp_path / "a.db", KEY, queue_max=1)
    await log.start()
    log._task.cancel()  # type: ignore[union-attr]  # a writer that no longer drains the queue
    await log.append(record(0), timeout=0.05)
    assert not log.accepting()
    with pytest.raises(AuditUnavailable, match="queue stayed full for 0.05 s"):
        await log.append(record(1), timeout=0.05)


async def test_stop_gives_up_on_a_dead_disk_within_its_bound_and_counts_the_loss(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(tmp_path / "a.db", KEY, retry_s=0.01, linger_s=0, stop_wait_s=0.2)
    await log.start()

    def dead(entries: list[tuple[float, str]]) -> int:
        raise OSError(5, "Input/output error")

    log.store.append = dead  # type: ignore[method-assign]
    for i in range(3):
        await log.append(record(i))
    with caplog.at_level("ERROR", logger="aigrid.audit.log"):
        await asyncio.wait_for(log.stop(), 5)  # once hung forever: flush() waited on a writer retrying for ever
    assert log.lost == 3 and not log.accepting()
    assert "3 records still unwritten after 0.2 s" in caplog.text
    assert verify(tmp_path / "a.db", KEY.public_key()).records == 0


async def test_stop_with_the_default_bound_returns_on_a_dead_disk(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.db", KEY, retry_s=0.01)
    await log.start()
    log.store.append = lambda entries: (_ for _ in ()).throw(OSError(28, "No space left on device"))  # type: ignore[method-assign]
    await log.append(record(0))
    await asyncio.wait_for(log.stop(), 5)
    assert log.lost == 1


HUNG_DISK_SCRIPT = """
import asyncio, sys, threading, time
from pathlib import Path
from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord

async def main(path):
    log = AuditLog(Path(path), linger_s=0, stop_wait_s=0.2)
    await log.start()
    log.store.append = lambda entries: threading.Event().wait()  # a write stuck in the kernel: never returns
    await log.append(AuditRecord(ts=1.0, request_id="r", tenant="t", key_id="k", model="m", decision={}))
    started = time.monotonic()
    await log.stop()
    print(f"stopped in {time.monotonic() - started:.2f} s, lost {log.lost}", flush=True)

asyncio.run(main(sys.argv[1]))
"""


def test_a_write_that_hangs_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    """stop() gives the hung write up within its bound, and the interpreter then exits: the store's thread is a
    daemon (the loop's default executor, joined at exit, once kept such a process alive for ever)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HUNG_DISK_SCRIPT, str(tmp_path / "a.db")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "lost 1" in done.stdout
    assert float(done.stdout.split()[2]) < 2.0  # two bounds of 0.2 s: the drain, then the hung call


async def test_the_store_runs_on_one_daemon_thread(tmp_path: Path) -> None:
    import threading

    log = AuditLog(tmp_path / "a.db", KEY, linger_s=0)
    seen: list[threading.Thread] = []
    real = log.store.append

    def spy(entries: list[tuple[float, str]]) -> int:
        seen.append(threading.current_thread())
        return real(entries)

    log.store.append = spy  # type: ignore[method-assign]
    await log.start()
    for i in range(3):
        await log.append(record(i))
        await log.flush()
    await log.stop()
    assert len(seen) == 3 and len(set(seen)) == 1 and seen[0].daemon
    assert verify(tmp_path / "a.db", KEY.public_key()).records == 3


async def test_a_record_with_a_lone_surrogate_does_not_stall_the_writer(tmp_path: Path) -> None:
    """A lone surrogate in any field of a record (UTF-8 has none) failed the writer's whole batch at every
    restart: no record was written again and stop() gave them all up as lost. The record is written now
    (escaped), and a body already serialised with one is refused in the caller."""
    log = AuditLog(tmp_path / "a.db", KEY, retry_s=0.01)
    await log.start()
    await log.append(AuditRecord(ts=1.0, request_id="r", tenant="t", key_id="k", model="m", extra={"x": "\ud800"}))
    with pytest.raises(UnicodeEncodeError):
        await log.append_entry(2.0, '{"x":"\ud800"}')
    await log.append(record(1))
    await asyncio.wait_for(log.flush(), 5)
    await log.stop()
    assert log.restarts == 0 and log.lost == 0
    report = verify(tmp_path / "a.db", KEY.public_key())
    assert report.ok and report.records == 2


async def test_a_quiet_log_signs_its_last_records_within_checkpoint_after_s(tmp_path: Path) -> None:
    """Three records on a quiet gateway: before, unsigned until 100 records or stop() (verify failed a fresh
    log: records and no checkpoint); now signed within checkpoint_after_s while the log runs."""
    path = tmp_path / "audit.db"
    log = AuditLog(path, KEY, checkpoint_every=100, checkpoint_after_s=0.2, linger_s=0)
    await log.start()
    try:
        for i in range(3):
            await log.append(record(i))
        await log.flush()
        assert log.store.last_checkpoint == 0  # not yet: fewer than 100 records, not yet 0.2 s
        for _ in range(1500):  # polled up to 30 s: a loaded machine is late, not wrong
            if log.store.last_checkpoint == 3:
                break
            await asyncio.sleep(0.02)
        assert log.store.last_checkpoint == 3
        report = verify(path, KEY.public_key())
        assert report.ok and report.unsigned_tail == 0, report.problems
        await log.append(record(3))  # a later record: its own checkpoint, as quickly
        for _ in range(1500):  # polled up to 30 s: a loaded machine is late, not wrong
            if log.store.last_checkpoint == 4:
                break
            await asyncio.sleep(0.02)
        assert log.store.last_checkpoint == 4
    finally:
        await log.stop()
    assert verify(path, KEY.public_key()).checkpoints == 2  # stop() had nothing left to sign


SECOND_WRITER_SCRIPT = """
import asyncio, sys
from pathlib import Path
from aigrid.audit.log import AuditLog

async def main(path):
    log = AuditLog(Path(path))
    try:
        await log.start()
    except OSError as e:
        print(f"refused: {e}", flush=True)
        return
    await log.stop()
    print("opened", flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_second_process_cannot_write_a_log_another_one_writes(tmp_path: Path) -> None:
    """Two gateways started on one audit path: each took the next seq from its own memory, so one's batch failed
    ('UNIQUE constraint failed') and was retried for ever, then lost at stop, while verify said OK. Now the
    second refuses to open the log, naming the lock; once the first stops, a writer opens it again."""
    import subprocess
    import sys

    path = tmp_path / "audit.db"
    first = AuditLog(path, KEY, checkpoint_every=10, linger_s=0)
    await first.start()
    await asyncio.gather(*(first.append(record(i)) for i in range(5)))
    await first.flush()
    second = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", SECOND_WRITER_SCRIPT, str(path)],
                                     capture_output=True, text=True, timeout=60)
    assert second.stdout.startswith("refused: another process writes this audit log (it holds "
                                    f"{path}-writer.lock)"), (second.stdout, second.stderr)
    await asyncio.gather(*(first.append(record(i)) for i in range(5, 12)))
    await first.stop()
    assert first.lost == 0
    report = verify(path, KEY.public_key())
    assert report.ok and report.records == 12
    again = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", SECOND_WRITER_SCRIPT, str(path)],
                                    capture_output=True, text=True, timeout=60)
    assert again.stdout == "opened\n", (again.stdout, again.stderr)  # the lock went with the first one's close


async def test_a_record_added_to_the_file_while_the_writer_runs_is_not_built_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A row appended behind the running writer's back (a writer without the lock, or by hand): the next batch
    says the head moved and is kept for retry; it is not chained after the stranger's record. Two stores of
    one process (the lock is the process's) are told apart this way too."""
    path = tmp_path / "audit.db"
    log = AuditLog(path, KEY, retry_s=0.01, linger_s=0, stop_wait_s=0.2)
    await log.start()
    await asyncio.gather(*(log.append(record(i)) for i in range(3)))
    await log.flush()
    db = sqlite3.connect(path)
    prev = db.execute("SELECT hash FROM audit_records WHERE seq = 3").fetchone()[0]
    body = record(99).body()
    db.execute("INSERT INTO audit_records VALUES (4, ?, ?, ?, ?)", (record(99).ts, body, prev,
                                                                   entry_hash(4, prev, body)))
    db.commit()
    db.close()
    with caplog.at_level("ERROR", logger="aigrid.audit.log"):
        await log.append(record(3))
        await asyncio.wait_for(log.stop(), 5)
    assert log.lost == 1
    assert "the audit log's last record is record 4, not record 3 this writer wrote last" in caplog.text


def test_a_log_that_fails_to_open_drops_its_writer_lock(tmp_path: Path) -> None:
    """A log whose records table the writer's reads refuse (its hash column gone) fails to open: the lock on
    <log>-writer.lock went with it. The reads after the format check were outside the guarded block, so the lock's
    descriptor (and the connection) stayed open, and no other process could write the log while this one lived."""
    import subprocess
    import sys

    from aigrid.audit.store import AuditStore

    path = tmp_path / "audit.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE audit_records (seq INTEGER PRIMARY KEY, ts REAL, body TEXT, prev_hash TEXT)")
    db.commit()
    db.close()
    store = AuditStore(path, KEY)
    with pytest.raises(sqlite3.OperationalError, match="hash"):
        store.open()
    other = subprocess.run([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
                            "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('locked')", f"{path}-writer.lock"],
                           capture_output=True, text=True, timeout=60)
    assert other.stdout == "locked\n", other.stderr


async def test_a_record_appended_while_stop_ends_the_writer_is_written_or_refused_never_dropped(
        tmp_path: Path) -> None:
    """Between stop()'s drain and the end of its writer the queue still took records that no writer would read:
    an append there returned as queued, and its record was neither written nor counted lost. The queue is closed
    when the drain ends: such an append is refused (AuditUnavailable, which its caller logs and counts)."""
    from aigrid.errors import AuditUnavailable

    path = tmp_path / "a.db"
    log = AuditLog(path, KEY)
    await log.start()
    drain, late = log._drain, []

    async def drained() -> None:  # the drain ends; a request finishing then appends at the next loop turn
        await drain()
        late.append(asyncio.get_running_loop().create_task(log.append(record(1))))

    log._drain = drained  # type: ignore[method-assign]
    await log.append(record(0))
    await log.stop()
    refused = isinstance(late[0].exception(), AuditUnavailable)
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM audit_records").fetchone()[0]
    assert refused or rows == 2, (late[0].exception(), rows)
