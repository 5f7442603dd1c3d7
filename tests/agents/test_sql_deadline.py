"""The sql tool's deadline holds for a query each of whose steps works on a large value (helper 132, 5 Dec 2026)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from aigrid.agents import sql
from aigrid.agents.sql import SqlQuery
from aigrid.agents.tool import NO_CONTEXT, ToolError

# every row of the recursion makes two more, each a random value of 900 KB: about a millisecond of SQLite's time per
# step of its program, where the progress handler that enforces the deadline is called only between steps
FAN_OUT = ("WITH RECURSIVE r(x) AS (SELECT randomblob(900000) UNION ALL SELECT randomblob(900000) FROM r, "
           "(SELECT 1 UNION ALL SELECT 2)) SELECT count(*) FROM r")


async def test_a_query_of_heavy_steps_stops_near_its_deadline(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked every 10,000 steps, the query ran 2.6 s under a 1 s deadline. It was timed on the wall clock
    (under 1 s for a 0.3 s deadline: a loaded machine could fail it); now the work is counted: the tool's clock says the deadline passed as soon as the query starts,
    and SQLite's randomblob is replaced by one that counts its calls, so what runs past the deadline is a number
    of ~1 ms steps, the same on any machine."""
    path = tmp_path / "empty.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    made: list[int] = []
    looks: list[float] = []

    def clock() -> float:  # the first look sets the deadline; every later one is past it
        looks.append(0.0 if not looks else 1e9)
        return looks[-1]

    def counted(n: int) -> bytes:
        made.append(n)
        return bytes(n)

    opened = sql.connect_read_only

    def connect(db: Path) -> sqlite3.Connection:
        conn = opened(db)
        conn.create_function("randomblob", 1, counted)
        return conn

    monkeypatch.setattr(sql, "connect_read_only", connect)
    monkeypatch.setattr(sql, "time", SimpleNamespace(monotonic=clock))
    with pytest.raises(ToolError, match="longer than 0.3s"):
        await SqlQuery({"db": path}, timeout_s=0.3).run({"query": FAN_OUT}, NO_CONTEXT)
    assert len(looks) == 2  # the deadline set, then the progress handler's first look: past it, stopped
    # 85 values of 900 KB before that look (868 at a look every 10,000 steps)
    assert 0 < len(made) <= 200, f"{len(made)} values of 900 KB made past the deadline"
