"""The Files and Batch APIs' SQLite index (gateway/batch_db.py) under several processes at once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

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
