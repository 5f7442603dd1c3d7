"""sql: one read-only SELECT over a SQLite database the site owns.

Three independent locks, so that no single mistake opens a write path:
1. the file is opened through a `mode=ro` URI (the OS-level handle cannot write);
2. `PRAGMA query_only = ON`;
3. an authorizer that allows only reading (SELECT, column reads, functions, recursive CTEs) and denies
   everything else at prepare time: INSERT/UPDATE/DELETE, CREATE/DROP, ATTACH/DETACH, PRAGMA, ...
Runaway queries are cut by a progress handler at a deadline; value sizes are capped with
sqlite3 limits (so `randomblob(2e9)` fails instead of allocating), and rows, columns and output are bounded.
The result is read one row at a time, each value cut to its cell as it is read: a value may be up to the 1 MB
limit, and 800 columns of `zeroblob(500000)` over 51 rows, read whole before they were cut, held 4.6 GB for
15 s (Python's copies are made outside SQLite's steps, where the progress handler cannot stop them); the
deadline is checked between rows too.
Each call opens its own connection in a worker thread and closes it.

The progress handler runs between the VM's steps, never inside one function call, and a few built-in
functions take time that grows with the product of their arguments' lengths: `ltrim(X, Y)` with 40,000
characters each took 3.9 s, `instr` of a 500,000-character needle in 1,000,000 characters 6.9 s, 990,000
characters LIKE a pattern of 50,000 (`'%aa...ab'`) 184 s, `json_patch` of two objects of 40,000 keys 25 s (at the 1 MB
value limit, by extrapolation, `ltrim` would run about 10 minutes), each on a thread the tool's timeout cannot stop. Those
functions (`QUADRATIC`) are replaced on each connection by a guard that refuses arguments whose lengths
multiply past MAX_QUADRATIC_WORK and otherwise asks SQLite's own function on a private connection (the same
answer, type conversions included).

A database is the grid's (shared: every tenant allowed the tool reads it) or serves named tenants only
(`Database.tenants`, from `agents.sql.NAME: {path, tenants}`): the tool as registered describes and offers the
shared ones only; `seen_by(context)` is the view of one request's tenant (its own databases' schemas and names
too), and `run` reads only a database serving the context's tenant, whichever view is asked: another tenant's
name is refused as an unknown one is, the error listing only what that tenant may read.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigrid.agents.tool import ToolContext, ToolError, require_str
from aigrid.security.firewall.texts import Source

MAX_SQL = 2_000
MAX_ROWS = 50
MAX_COLUMNS = 50
"""Columns of a result at most: a row is read whole (each value up to MAX_VALUE_BYTES) before it is cut."""
MAX_CELL = 200
MAX_VALUE_BYTES = 1_000_000

ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                             getattr(sqlite3, "SQLITE_RECURSIVE", 33)})
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
QUADRATIC = (("instr", 2), ("replace", 3), ("trim", 2), ("ltrim", 2), ("rtrim", 2), ("like", 2), ("like", 3),
             ("glob", 2), ("json_patch", 2))
"""Built-in functions whose time grows with the product of their first two arguments' lengths (name, arity). `like`
and `glob` are the LIKE and GLOB operators (`X LIKE Y ESCAPE Z` calls like(Y, X, Z)): a pattern `%aa...ab` is tried
at every place of the text, each try up to the pattern's length, and a pattern may be 50,000 bytes (SQLite's
LIKE_PATTERN_LENGTH): 990,000 characters LIKE such a pattern held its thread 184 s under a 1 s deadline.
`json_patch` looks each key of the patch up in the target's keys one by one: two objects of 40,000 keys (400 KB
each) held it 25 s under a 1 s deadline. Through the guard its result is text, no longer JSON, to an enclosing JSON
function (Python cannot give a result SQLite's JSON subtype): `json_object('k', json(json_patch(a, b)))` nests it."""
PROGRESS_OPS = 1_000
"""VM steps between two looks at the deadline. A step may call a function on a value of up to MAX_VALUE_BYTES
(`randomblob`, `hex`, `upper`: a millisecond or more each), and at 10,000 steps a query of such calls ran 2.6 s
under a 1 s deadline; a look costs a Python call, well under 1% of 1,000 steps."""
MAX_QUADRATIC_WORK = 100_000_000
"""Most a guarded function's first two arguments' lengths may multiply to (about 0.25 s of `ltrim`)."""


def _authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action not in ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write `path`, attach other files or change settings."""
    if not path.is_file():
        raise ToolError(f"database {path.name} does not exist")
    uri = f"file:{urllib.request.pathname2url(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA query_only = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL * 2)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_authorizer)
    return conn


class _Guards:
    """The QUADRATIC functions on one connection, each refusing arguments too long for its time (module docstring);
    `refused` says why the last refusal was made, or SQLite's own error of the last call that failed (SQLite reports
    only that a function raised)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._native = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._native.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self.refused: str | None = None
        for name, arity in QUADRATIC:
            conn.create_function(name, arity, self._guard(name, arity), deterministic=True)

    def _guard(self, name: str, arity: int) -> Any:
        native = f"SELECT {name}({', '.join('?' * arity)})"

        def call(*args: Any) -> Any:
            if _length(args[0]) * _length(args[1]) > MAX_QUADRATIC_WORK:
                self.refused = (f"{name}() of arguments this long is refused (its time grows with the product of their "
                                f"lengths, here past {MAX_QUADRATIC_WORK:,})")
                raise ValueError(self.refused)
            try:
                return self._native.execute(native, args).fetchone()[0]
            except sqlite3.Error as e:  # SQLite's own error ('malformed JSON'), which it reports of a Python
                self.refused = f"SQL error: {e}"  # function only as "user-defined function raised exception"
                raise

        return call

    def close(self) -> None:
        self._native.close()


def _length(value: object) -> int:
    return len(value) if isinstance(value, str | bytes) else 0 if value is None else len(str(value))


def read_schema(path: Path) -> str:
    """The CREATE statements of `path`'s tables and views (shown to the model in the tool description)."""
    conn = connect_read_only(path)
    try:
        conn.set_authorizer(None)
        rows = conn.execute("SELECT sql FROM sqlite_schema WHERE type IN ('table', 'view') AND sql IS NOT NULL")
        return "; ".join(" ".join(r[0].split()) for r in rows)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Database:
    """One SQLite file of the tool's, and the tenants it serves (None: every tenant allowed the tool)."""

    path: Path
    tenants: frozenset[str] | None = None

    def serves(self, tenant: str | None) -> bool:
        return self.tenants is None or tenant in self.tenants


def _as_databases(databases: Mapping[str, Path | Database]) -> dict[str, Database]:
    """Each database as a Database (a bare path: a shared one)."""
    return {n: d if isinstance(d, Database) else Database(d) for n, d in databases.items()}


class SqlQuery:
    name = "sql"
    source = Source.TOOL_RESULT

    def __init__(self, databases: Mapping[str, Path | Database], schemas: Mapping[str, str] | None = None,
                 *, timeout_s: float = 1.0, seen: Iterable[str] | None = None) -> None:
        """`seen`: the databases this view describes and offers (seen_by: one tenant's). None: the tool as
        registered, which describes the shared ones only and, when a database serves named tenants, takes any
        name for `database` (its grammar names none of theirs; their model, told the name, can still ask)."""
        if not databases:
            raise ValueError("the sql tool needs at least one database")
        self.databases = _as_databases(databases)
        self.timeout_s = timeout_s
        self._schemas = dict(schemas or {})
        self._views: dict[tuple[str, ...], SqlQuery] = {}
        shown = self._serving(None) if seen is None else sorted(seen)
        props: dict[str, Any] = {"query": {"type": "string", "pattern": r"^\s*(SELECT|select|WITH|with)\s.{1,1500}$"}}
        if seen is None and len(shown) < len(self.databases):
            props["database"] = {"type": "string", "maxLength": 128}
        elif len(shown) > 1:
            props["database"] = {"enum": shown}
        self.parameters: Mapping[str, Any] = {"type": "object", "properties": props, "required": ["query"],
                                              "additionalProperties": False}
        tables = " ".join(f"[{n}] {self._schemas[n]}" for n in shown if self._schemas.get(n))
        self.description = ("Run one read-only SQL SELECT over the site's SQLite database and return the "
                            f"rows (at most {MAX_ROWS}). Schema: "
                            f"{tables or ('see the database' if shown else 'no database is open to this request')}")

    @classmethod
    def load(cls, databases: Mapping[str, Path | Database], *, timeout_s: float = 1.0) -> SqlQuery:
        """The tool with each database's schema read once (at startup) for its description."""
        dbs = _as_databases(databases)
        return cls(dbs, {name: read_schema(db.path) for name, db in dbs.items()}, timeout_s=timeout_s)

    def _serving(self, tenant: str | None) -> list[str]:
        return sorted(n for n, db in self.databases.items() if db.serves(tenant))

    def seen_by(self, context: ToolContext) -> SqlQuery:
        """The tool as `context`'s tenant is offered it: its description and parameters name the shared databases
        and the tenant's own, no other tenant's. A view is made once for each set of databases (so at most one
        for each tenant a database names, and one for every other tenant)."""
        names = tuple(self._serving(context.tenant))
        view = self._views.get(names)
        if view is None:
            view = self._views[names] = SqlQuery(self.databases, self._schemas, timeout_s=self.timeout_s, seen=names)
        return view

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        query = require_str(arguments, "query", max_len=MAX_SQL)
        known = self._serving(context.tenant)  # another tenant's database is unknown here, whatever view runs
        name = arguments.get("database")
        if name is None and len(known) == 1:
            name = known[0]
        if not isinstance(name, str) or name not in known:
            raise ToolError(f"unknown database {name!r} (known: {', '.join(known) or 'none'})")
        return await asyncio.to_thread(self._query, self.databases[name].path, query)

    def _query(self, path: Path, query: str) -> str:
        conn = connect_read_only(path)
        guards = _Guards(conn)
        deadline = time.monotonic() + self.timeout_s
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_OPS)
        try:
            _check_columns(_planned_columns(conn, query))  # before SQLite computes a row: it holds one row whole
            cur = conn.execute(query)
            columns = [d[0] for d in cur.description or ()]
            _check_columns(len(columns))
            rows = _cut_rows(cur, deadline)
        except sqlite3.DatabaseError as e:
            if guards.refused is not None:
                raise ToolError(guards.refused) from e
            if "interrupted" in str(e):
                raise ToolError(f"the query ran longer than {self.timeout_s}s") from e
            if "not authorized" in str(e) or "prohibited" in str(e):
                raise ToolError("only reading is allowed (SELECT); this statement was refused") from e
            raise ToolError(f"SQL error: {e}") from e
        except sqlite3.Warning as e:  # Python 3.11: several statements in one call
            raise ToolError(f"SQL error: {e}") from e
        finally:
            conn.close()
            guards.close()
        more = len(rows) > MAX_ROWS
        lines = [" | ".join(columns)] + [" | ".join(row) for row in rows[:MAX_ROWS]]
        if more:
            lines.append(f"(more than {MAX_ROWS} rows; add a LIMIT or a WHERE)")
        return "\n".join(lines) if rows else " | ".join(columns) + "\n(no rows)"


def _planned_columns(conn: sqlite3.Connection, query: str) -> int:
    """The result's columns, read from the statement's program (`EXPLAIN` runs nothing; its `ResultRow` writes
    p2 columns): `execute` computes the first row before it says how many columns there are, and SQLite holds
    that row whole (800 copies of a 500 KB CTE value: 400 MB). 0 if the program has no such step."""
    return max((int(op[3]) for op in conn.execute("EXPLAIN " + query) if op[1] == "ResultRow"), default=0)


def _check_columns(n: int) -> None:
    if n > MAX_COLUMNS:
        raise ToolError(f"the result has more than {MAX_COLUMNS} columns ({n}); select fewer")


def _cut_rows(cur: sqlite3.Cursor, deadline: float) -> list[list[str]]:
    """At most MAX_ROWS + 1 rows, each as its cells, read one at a time (one row's values held at once, not every
    row's); the deadline checked between rows (the progress handler runs only inside SQLite's steps)."""
    rows: list[list[str]] = []
    for row in cur:
        rows.append([_cell(v) for v in row])
        if len(rows) > MAX_ROWS:
            break
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("interrupted")
    return rows


def _cell(value: object) -> str:
    # a blob's first MAX_CELL bytes only: their hex is already past the cut (a 1 MB blob was 2 MB of hex per cell)
    text = value[:MAX_CELL].hex() if isinstance(value, bytes) else str(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL] + "..."
