"""`aigrid audit verify` on a log holding a large record (a huge prompt kept as text): its memory is bounded
by BODY_CHUNK, not by the record, and the record is checked all the same (its hash, its ts column)."""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from aigrid.audit import verify as verify_module
from aigrid.audit.store import AuditStore
from aigrid.audit.verify import verify
from tests.audit.signed_log import KEY, record, tamper


def log_with_a_large_record(path: Path, size: int) -> None:
    """Records 1 and 3 small, record 2 with a prompt of `size` characters; one checkpoint over all three."""
    store = AuditStore(path, KEY)
    store.open()
    for i, entry in enumerate((record(1), record(2), record(3))):
        if i == 1:
            entry = type(entry)(**{**{f: getattr(entry, f) for f in entry.__dataclass_fields__},
                                   "prompt_text": "x" * size})
        store.append([(entry.ts, entry.body())])
    store.checkpoint()
    store.close()


def test_a_large_record_is_verified_without_reading_it_whole(tmp_path: Path) -> None:
    """A 40 MB body was fetched whole and parsed (three copies: 854 MiB of RSS for a 200 MiB one); it is now
    hashed in BODY_CHUNK pieces: the Python heap's peak stays a few MB."""
    path = tmp_path / "audit.db"
    log_with_a_large_record(path, 40 << 20)
    tracemalloc.start()
    report = verify(path, KEY.public_key())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.ok, report.problems
    assert report.records == 3
    assert peak < 4 << 20, peak  # was 587 MB


@pytest.fixture
def small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies past 4 KB streamed in 1 KB pieces (the same code as past 16 MiB, on a small log)."""
    monkeypatch.setattr(verify_module, "MAX_PARSED", 4096)
    monkeypatch.setattr(verify_module, "BODY_CHUNK", 1024)


@pytest.mark.usefixtures("small_bound")
@pytest.mark.parametrize(("sql", "expected"), [
    ("UPDATE audit_records SET ts = ts + 1 WHERE seq = 2",
     "record 2: its ts column (1700000003.0) is not the time in its hashed body (1700000002.0) (changed)"),
    ("UPDATE audit_records SET body = replace(body, 'xxxx', 'xxxy') WHERE seq = 2",
     "record 2: content does not match its hash (changed)"),
    ("UPDATE audit_records SET body = replace(body, '\"ts\":', '\"ts0\":') WHERE seq = 2",
     "record 2: content does not match its hash (changed)"),
])
def test_a_streamed_record_is_checked_as_a_parsed_one(tmp_path: Path, sql: str, expected: str) -> None:
    path = tmp_path / "audit.db"
    log_with_a_large_record(path, 20_000)
    assert verify(path, KEY.public_key()).ok
    tamper(path, sql)
    report = verify(path, KEY.public_key())
    assert not report.ok and report.first_break == 2
    assert expected in report.problems, report.problems


@pytest.mark.usefixtures("small_bound")
def test_a_streamed_body_that_does_not_end_with_its_ts_is_named(tmp_path: Path) -> None:
    """A body past MAX_PARSED whose hash holds (rewritten with the chain after it, in the unsigned tail) but
    that is no writer's record: named, as a parsed one that is not a JSON object is."""
    path = tmp_path / "audit.db"
    log_with_a_large_record(path, 10)
    body = "[" + "1," * 5000 + "1]"
    store = AuditStore(path)
    store.open()
    store.append([(1.0, body)])
    store.close()
    report = verify(path, KEY.public_key())
    assert report.problems == ["record 4: its body (10003 bytes, past the 4096 verify parses) is not an audit "
                               "record (not a JSON object ending with its ts)"], report.problems


def test_a_body_is_read_from_its_own_row_whatever_the_rowids(tmp_path: Path) -> None:
    """Bodies are read by rowid (blob I/O), which is the seq only while seq is the table's INTEGER PRIMARY KEY.
    Someone with the file recreates the table with `seq INT PRIMARY KEY` (not the rowid) and swaps the bodies of
    records 1 and 2 between rowids: read by rowid, each seq found its own record's body and verified OK while
    its row held the other's. Such a table is read row by row, as it was before blob I/O."""
    path = tmp_path / "audit.db"
    log_with_a_large_record(path, 10)
    db = sqlite3.connect(path)
    rows = db.execute("SELECT seq, ts, body, prev_hash, hash FROM audit_records ORDER BY seq").fetchall()
    db.executescript("DROP TABLE audit_records; CREATE TABLE audit_records (seq INT PRIMARY KEY, ts REAL, body TEXT, "
                     "prev_hash TEXT, hash TEXT);")
    (s1, t1, b1, p1, h1), (s2, t2, b2, p2, h2), third = rows
    db.execute("INSERT INTO audit_records (rowid, seq, ts, body, prev_hash, hash) VALUES (1, ?, ?, ?, ?, ?)",
               (s2, t2, b1, p2, h2))  # the row of record 2 holds record 1's body
    db.execute("INSERT INTO audit_records (rowid, seq, ts, body, prev_hash, hash) VALUES (2, ?, ?, ?, ?, ?)",
               (s1, t1, b2, p1, h1))
    db.execute("INSERT INTO audit_records (rowid, seq, ts, body, prev_hash, hash) VALUES (3, ?, ?, ?, ?, ?)", third)
    db.commit()
    db.close()
    report = verify(path, KEY.public_key())
    assert not report.ok and report.first_break == 1, report.problems
