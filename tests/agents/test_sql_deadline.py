"""The sql tool's deadline holds for a query each of whose steps works on a large value (helper 132, 5 Dec 2026)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from aigrid.agents.sql import SqlQuery
from aigrid.agents.tool import NO_CONTEXT, ToolError

# every row of the recursion makes two more, each a random value of 900 KB: about a millisecond of SQLite's time per
# step of its program, where the progress handler that enforces the deadline is called only between steps
FAN_OUT = ("WITH RECURSIVE r(x) AS (SELECT randomblob(900000) UNION ALL SELECT randomblob(900000) FROM r, "
           "(SELECT 1 UNION ALL SELECT 2)) SELECT count(*) FROM r")


async def test_a_query_of_heavy_steps_stops_near_its_deadline(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    start = time.monotonic()
    with pytest.raises(ToolError, match="longer than 0.3s"):
        await SqlQuery({"db": path}, timeout_s=0.3).run({"query": FAN_OUT}, NO_CONTEXT)
    # checked every 10,000 steps, it ran about 2 s past its 0.3 s (2.6 s under a 1 s deadline)
    assert time.monotonic() - start < 1.0
