"""What one `sql` tool query holds in memory and how long it runs, on the code now and on the code before
f6858c2 (which read a result's rows whole, up to MAX_ROWS + 1 of them, before it cut any value): the figure of
docs/security.md's sql row ("800 columns of a 500 KB zeroblob over 60 rows ... held 4.6 GB and ran 15 s past the
tool's 1 s deadline"), reproduced with bounded memory.

Each run is a child process under an address-space limit (`--cap-mb`, default 1024): the code before either
finishes (a small query) or stops with a MemoryError at the cap, so the script never takes this machine's memory;
it prints each child's peak resident memory (ru_maxrss), its wall time and the tool's answer (or error), cut.

    .venv/bin/python scripts/sql_result_memory.py                      # 40 columns of 100 KB over 60 rows
    .venv/bin/python scripts/sql_result_memory.py --columns 800 --value-bytes 500000   # the row's query

The second is the query of the row (1,724 characters, within the tool's 2,000): before, 51 rows of 800 values of
500 KB would be 20.4 GB of Python bytes; under the cap it is a MemoryError after the time shown (it held 4.6 GB
when first measured, with no command recorded). "Before" is `git archive REV src` (REV: --before, f6858c2~1)
put on PYTHONPATH, so this needs the repository's git history.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import asyncio, sys, time
from pathlib import Path
from aigrid.agents.sql import SqlQuery
from aigrid.agents.tool import ToolContext, ToolError
db, query = sys.argv[1], sys.argv[2]
began = time.monotonic()
try:
    out = asyncio.run(SqlQuery({"db": Path(db)}).run({"query": query}, ToolContext()))
    what = f"answered, {len(out):,} characters: {out[:60]!r}"
except ToolError as e:
    what = f"tool error: {str(e)[:90]}"
except MemoryError:
    what = "MemoryError (at the cap)"
print(f"{time.monotonic() - began:.2f} s; {what}", flush=True)
"""


def query(columns: int, value_bytes: int, rows: int) -> str:
    return (f"WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<{rows}), b(z) AS "
            f"(SELECT zeroblob({value_bytes})) SELECT {','.join(['z'] * columns)} FROM n, b")


def run(src: Path, db: Path, q: str, cap_mb: int) -> tuple[str, float]:
    """The child's line, and its peak resident memory in MB."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))

    env = {**os.environ, "PYTHONPATH": str(src), "AIGRID_PURE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), q], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, preexec_fn=limit, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    line = out.strip().splitlines()[-1] if out.strip() else f"no output (status {status})"
    return line[:160], usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--columns", type=int, default=40)
    ap.add_argument("--value-bytes", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--cap-mb", type=int, default=1024, help="each child's address-space limit (MB)")
    ap.add_argument("--before", default="f6858c2~1", help="the revision whose src is 'before'")
    args = ap.parse_args()
    q = query(args.columns, args.value_bytes, args.rows)
    held = min(args.rows, 51) * args.columns * args.value_bytes
    print(f"query: {len(q):,} characters; {args.columns} columns of {args.value_bytes:,} bytes over {args.rows} "
          f"rows (the code before would hold {held / 1e6:,.0f} MB of values); each child capped at "
          f"{args.cap_mb} MB; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load "
          f"{os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "empty.db"
        import sqlite3
        sqlite3.connect(db).close()
        archive = Path(tmp) / "before.tar"
        with archive.open("wb") as f:
            subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"], stdout=f, check=True)
        with tarfile.open(archive) as t:
            t.extractall(Path(tmp) / "before", filter="data")
        for name, src in ((f"before ({args.before})", Path(tmp) / "before" / "src"), ("now", ROOT / "src")):
            line, peak = run(src, db, q, args.cap_mb)
            print(f"{name:>22}: peak RSS {peak:,.0f} MB; {line}")


if __name__ == "__main__":
    main()
