"""The Files and Batch APIs' SQLite index (gateway/batch_db.py) under several processes at once."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.batch_db import BatchDb

PROCESSES = 6
TRIALS = 10


def _open(root: str, together: Any) -> str:
    together.wait(timeout=60)  # all PROCESSES at once
    try:
        BatchDb(Path(root)).create()
        return "ok"
    except Exception as e:  # noqa: BLE001 - the failure is the test's finding
        return f"{type(e).__name__}: {e}"


def test_workers_creating_the_index_at_once_all_start(tmp_path: Path) -> None:
    """`--workers N` start together and each creates the index (WAL, tables): SQLite answered some of them
    "database is locked" at once, without waiting its busy timeout (8 of 180 opens, 6 at a time, in a one-off count), and such a
    worker failed its start and was restarted (CI). Now every one of 6 processes starting together opens it, 10
    times over, each time on a new folder."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(PROCESSES) as pool:
        outcomes = []
        for trial in range(TRIALS):
            together = manager.Barrier(PROCESSES)
            pending = [pool.apply_async(_open, (str(tmp_path / f"t{trial}"), together)) for _ in range(PROCESSES)]
            outcomes += [p.get(timeout=60) for p in pending]
    assert outcomes == ["ok"] * (PROCESSES * TRIALS), [o for o in outcomes if o != "ok"]


def test_workers_opening_an_index_of_format_1_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Format 2 added the rows' `jurisdictions` (batch_db._migrate): `--workers N` starting together on an index of
    format 1 each open it, and it is migrated once, in the transaction that opens it (a second ALTER TABLE would
    fail its worker's start with "duplicate column name"): every one of 6 processes starts, 5 times over, and the
    batch of an EU-only key takes that key's jurisdictions."""
    from tests.gateway.test_batch_residency import _old_index  # here: the pool's processes import this module

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(PROCESSES) as pool:
        outcomes = []
        for trial in range(5):
            root = tmp_path / f"t{trial}"
            _old_index(root)
            together = manager.Barrier(PROCESSES)
            pending = [pool.apply_async(_open, (str(root), together)) for _ in range(PROCESSES)]
            outcomes += [p.get(timeout=60) for p in pending]
            with closing(sqlite3.connect(root / "index.sqlite3")) as db:
                assert db.execute("PRAGMA user_version").fetchone()[0] == 2
                assert db.execute("SELECT jurisdictions FROM batches WHERE id = 'batch_eu'").fetchone()[0] == '["EU"]'
    assert outcomes == ["ok"] * (PROCESSES * 5), [o for o in outcomes if o != "ok"]


def test_the_folder_of_the_tenants_files_is_private(tmp_path: Path) -> None:
    """The index's folder holds every tenant's uploads and batch answers: it was made with the umask's mode
    (0755 under the usual 022) and its files 0644, readable by any local account. Now 0700, whatever the
    umask."""
    old = os.umask(0o022)
    try:
        root = tmp_path / "batches"
        BatchDb(root).create()
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_a_folder_the_operator_made_is_kept_and_a_readable_one_is_named(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "batches"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="aigrid.batches"):
        BatchDb(root).create()
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert any("chmod 700" in r.getMessage() and str(root) in r.getMessage() for r in caplog.records)
