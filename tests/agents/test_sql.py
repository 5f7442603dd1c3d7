"""sql: SELECTs work; every way of writing, attaching, or changing settings is refused; runaways are cut."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from aigrid.agents import sql
from aigrid.agents.sql import MAX_COLUMNS, SqlQuery
from aigrid.agents.tool import NO_CONTEXT, ToolError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, city TEXT, total REAL)")
        conn.executemany("INSERT INTO orders (city, total) VALUES (?, ?)",
                         [("Lyon", 10.5), ("Milan", 20.0), ("Lyon", 4.5)])
    conn.close()
    return path


def count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])
    finally:
        conn.close()


async def test_select(db: Path) -> None:
    tool = SqlQuery.load({"shop": db})
    assert "CREATE TABLE orders" in tool.description
    out = await tool.run({"query": "SELECT city, sum(total) AS t FROM orders GROUP BY city ORDER BY city"}, NO_CONTEXT)
    assert out == "city | t\nLyon | 15.0\nMilan | 20.0"
    assert "(no rows)" in await tool.run({"query": "SELECT * FROM orders WHERE city = 'Oslo'"}, NO_CONTEXT)
    recursive = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT sum(x) FROM n"
    assert (await tool.run({"query": recursive}, NO_CONTEXT)).endswith("\n6")


@pytest.mark.parametrize("query", [
    "INSERT INTO orders (city, total) VALUES ('Evil', 1)",
    "UPDATE orders SET total = 0",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "CREATE TABLE x (a)",
    "CREATE TEMP TABLE x (a)",
    "ATTACH DATABASE '/tmp/evil.db' AS evil",
    "ATTACH DATABASE ':memory:' AS m",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "PRAGMA journal_mode = DELETE",
    "VACUUM INTO '/tmp/copy.db'",
    "SELECT 1; DELETE FROM orders",
    "REPLACE INTO orders (id, city, total) VALUES (1, 'x', 0)",
    "SELECT load_extension('/tmp/evil.so')",
    "BEGIN; DELETE FROM orders; COMMIT",
])
async def test_writes_attach_and_pragmas_are_refused(db: Path, query: str, tmp_path: Path) -> None:
    with pytest.raises(ToolError):
        await SqlQuery({"shop": db}).run({"query": query}, NO_CONTEXT)
    assert count(db) == 3
    assert not Path("/tmp/evil.db").exists() or Path("/tmp/evil.db").stat().st_size == 0
    assert not Path("/tmp/copy.db").exists()


async def test_runaway_and_huge_values_are_cut(db: Path) -> None:
    tool = SqlQuery({"shop": db}, timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(ToolError, match="longer than 0.3s"):
        await tool.run({"query": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
                                 "SELECT count(*) FROM n"}, NO_CONTEXT)
    # cut near its 0.3 s (unstopped it never ends): 5 s, not 2 s, leaves a loaded 2-core machine's worker thread and
    # loop the room other tool deadlines have (test_fetch: 6 s on a 2.5 s deadline), not 1.7 s
    assert time.monotonic() - start < 5
    with pytest.raises(ToolError):
        await tool.run({"query": "SELECT randomblob(2000000000)"}, NO_CONTEXT)
    out = await tool.run({"query": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 500) "
                                   "SELECT x FROM n"}, NO_CONTEXT)
    assert out.endswith("(more than 50 rows; add a LIMIT or a WHERE)")


async def test_unknown_database_and_missing_file(db: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="unknown database"):
        await SqlQuery({"shop": db, "b": db}).run({"query": "SELECT 1"}, NO_CONTEXT)
    with pytest.raises(ToolError, match="does not exist"):
        await SqlQuery({"gone": tmp_path / "gone.db"}).run({"query": "SELECT 1"}, NO_CONTEXT)
    assert not (tmp_path / "gone.db").exists()  # mode=ro never creates the file


A = "printf('%.*c', 30000, 'a')"
B, P = "printf('%.*c', 20000, 'a')", "printf('%.*c', 6000, 'a')"  # 20,000 x 6,002: past the bound
K = "(SELECT json_group_object('k' || value, 1) FROM (WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL " \
    "SELECT value + 1 FROM n WHERE value < 1200) SELECT value FROM n))"  # 12 KB: 12 KB x 12 KB, past the bound


@pytest.mark.parametrize("query", [
    f"SELECT length(ltrim({A}, printf('%.*c', 30000, 'c') || 'a'))",  # 2.2 s in one call: the deadline never ran
    f"SELECT length(rtrim({A}, printf('%.*c', 30000, 'c') || 'a'))",
    f"SELECT length(trim({A}, printf('%.*c', 30000, 'c') || 'a'))",
    f"SELECT instr({A} || {A}, {A} || 'b')",
    f"SELECT length(replace({A} || {A}, {A} || 'b', 'x'))",
    # LIKE and GLOB are like(Y, X) and glob(Y, X): each place of the text tried against the pattern: 990,000
    # characters LIKE a pattern of 50,000 (SQLite's longest) held the thread 184 s under a 1 s deadline
    f"SELECT {B} LIKE '%' || {P} || 'b'",
    f"SELECT {B} LIKE '%' || {P} || 'b' ESCAPE '!'",
    f"SELECT {B} GLOB '*' || {P} || 'b'",
    # each key of the patch looked up among the target's one by one: 40,000 keys each held the thread 25 s
    f"SELECT length(json_patch({K}, {K}))",
])
async def test_a_function_whose_time_grows_with_its_arguments_product_is_refused_past_a_bound(
        db: Path, query: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress handler runs between the VM's steps, never inside a function call: `ltrim` of two values of the
    1 MB limit would hold a thread about 10 minutes past the 1 s deadline, beyond the tool timeout's reach. The
    refusal comes before SQLite's own function runs: every call that reaches it is counted (this was a wall-clock
    bound, under 1 s, which a loaded machine could fail)."""
    ran: list[tuple[str, int]] = []
    guards = sql._Guards.__init__

    class Counted:
        def __init__(self, native: sqlite3.Connection) -> None:
            self._native = native

        def execute(self, statement: str, args: tuple[object, ...]) -> sqlite3.Cursor:
            ran.append((statement, sql._length(args[0]) * sql._length(args[1])))
            return self._native.execute(statement, args)

        def close(self) -> None:
            self._native.close()

    def counting(self: sql._Guards, conn: sqlite3.Connection) -> None:
        guards(self, conn)
        self._native = Counted(self._native)  # type: ignore[assignment]

    monkeypatch.setattr(sql._Guards, "__init__", counting)
    with pytest.raises(ToolError, match="of arguments this long is refused"):
        await SqlQuery({"shop": db}, timeout_s=0.3).run({"query": query}, NO_CONTEXT)
    assert ran == []  # SQLite's own instr/replace/trim never ran on these arguments
    await SqlQuery({"shop": db}).run({"query": "SELECT instr('hello', 'l')"}, NO_CONTEXT)
    assert ran == [("SELECT instr(?, ?)", 5)]  # a call within the bound does reach it, and is counted


async def test_the_guarded_functions_answer_as_sqlite_s_own(db: Path) -> None:
    query = ("SELECT instr('hello', 'l'), instr(x'010203', x'03'), instr(NULL, 'a'), replace('a-b-c', '-', '+'), "
             "replace(12.5, '.', ','), trim('xxhixx', 'x'), ltrim(12300, 1), rtrim(1.50, '0'), rtrim('ab  '), "
             "instr(city, 'y'), 'Hello' LIKE 'h%', 'Hello' GLOB 'h*', 'a_b' LIKE 'a!_b' ESCAPE '!', 'axb' LIKE 'a!_b' "
             "ESCAPE '!', city LIKE '_yo%', NULL GLOB '*', 12.5 LIKE '12%', json_patch('{\"a\":1,\"b\":2}', "
             "'{\"b\":null,\"c\":[3]}'), json(json_patch('{}', '{\"d\":{}}')) -> '$.d' FROM orders ORDER BY id LIMIT 1")
    native = sqlite3.connect(db)
    try:
        expected = " | ".join(str(v) for v in native.execute(query).fetchone())
    finally:
        native.close()
    assert (await SqlQuery({"shop": db}).run({"query": query}, NO_CONTEXT)).endswith("\n" + expected)
    assert expected == ('3 | 3 | None | a+b+c | 12,5 | hi | 2300 | 1.5 | ab | 2 | 1 | 0 | 1 | 0 | 1 | None | 1 | '
                        '{"a":1,"c":[3]} | {}')


@pytest.mark.parametrize(("query", "error"), [
    ("SELECT json_patch('{bad', '{}')", "SQL error: malformed JSON"),
    ("SELECT 'a' LIKE 'a' ESCAPE 'xx'", "SQL error: ESCAPE expression must be a single character"),
])
async def test_a_guarded_function_s_own_error_is_told_as_sqlite_s(db: Path, query: str, error: str) -> None:
    """The model's mistake in a guarded function's arguments is told as SQLite tells it (the native connection's
    error); through the guard SQLite said only "user-defined function raised exception"."""
    with pytest.raises(ToolError) as e:
        await SqlQuery({"shop": db}).run({"query": query}, NO_CONTEXT)
    assert str(e.value) == error


async def test_a_result_is_read_one_row_at_a_time_each_value_cut_as_it_is_read(db: Path) -> None:
    """Every value may be up to 1 MB (the value limit) and the rows were all read before any was cut: 800 columns
    of a 500 KB `zeroblob` over 60 rows (a query of 1,724 characters, within the tool's 2,000) held 4.6 GB and ran 15 s
    past the 1 s deadline (Python's copies are made outside SQLite's steps, where the progress handler cannot stop
    them). Now each row is cut to its cells as it is read, the deadline checked between rows."""
    import tracemalloc

    query = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 60), b(z) AS "
             "(SELECT zeroblob(100000)) SELECT " + ", ".join(["z"] * 40) + " FROM n, b")
    tracemalloc.start()
    try:
        out = await SqlQuery({"shop": db}).run({"query": query}, NO_CONTEXT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.endswith("(more than 50 rows; add a LIMIT or a WHERE)")
    assert out.count("\n") == 51 and "0000..." in out  # the header, 50 rows, the note; each value cut
    assert peak < 30_000_000, f"{peak / 1e6:.0f} MB held at once (4 MB a row, 51 rows: 204 MB before)"


async def test_a_result_of_too_many_columns_is_refused_before_a_row_is_read(db: Path) -> None:
    columns = ", ".join(f"{i} AS c{i}" for i in range(MAX_COLUMNS + 1))
    with pytest.raises(ToolError, match=f"more than {MAX_COLUMNS} columns"):
        await SqlQuery({"shop": db}).run({"query": f"SELECT {columns}"}, NO_CONTEXT)
    columns = ", ".join(f"{i} AS c{i}" for i in range(MAX_COLUMNS))
    assert (await SqlQuery({"shop": db}).run({"query": f"SELECT {columns}"}, NO_CONTEXT)).endswith(f"| {MAX_COLUMNS - 1}")


def test_a_blob_cell_is_written_out_no_further_than_its_cut() -> None:
    """A blob's cell is its hex cut to MAX_CELL: the whole blob (up to 1 MB) was written out as hex (2 MB) first."""
    import tracemalloc

    from aigrid.agents.sql import MAX_CELL, _cell

    blob = bytes(range(256)) * 4_000
    tracemalloc.start()
    try:
        cell = _cell(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cell == blob.hex()[:MAX_CELL] + "..." and _cell(b"\x01\x02") == "0102"
    assert peak < 100_000, f"{peak / 1e6:.1f} MB held for a cell of {MAX_CELL} characters"
