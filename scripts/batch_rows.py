"""What one tenant's batches that failed validation take of the batch index, and how fast they are made.

Each is a row of the index holding up to 100 errors and its metadata (16 keys of 500 characters here), counted by
no storage quota; before gateway.batch.max_batches (twenty-first session) nothing bounded how many a tenant kept.
In process (FAKE engines, the openai SDK over ASGI); prints the count made, the rate, the index's size, the batches
the tenant keeps at the end, and what the Files API counts for it.

    PYTHONPATH=. .venv/bin/python scripts/batch_rows.py [N] [MAX_BATCHES]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tests.gateway.test_batches import batch_spec, clients, engines_for, jsonl, line, started, stopped


async def main(n: int, most: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    gw = await started(batch_spec(tmp, max_batches=most), engines_for(tmp))
    try:
        oai, _ = clients(gw)  # builds the app, and with it gw.batches
        assert gw.batches is not None
        bad = jsonl(*(dict(line(f"c{i}", "hi"), method="GET" + "x" * 60) for i in range(101)))
        f = await oai.files.create(file=("bad.jsonl", bad), purpose="batch")
        meta = {f"k{i}": "v" * 500 for i in range(16)}
        start = time.perf_counter()
        for _ in range(n):
            await oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                     metadata=meta)
        took = time.perf_counter() - start
        folder = Path(gw.spec.gateway.batch.dir)
        size = sum(p.stat().st_size for p in folder.glob("index.sqlite3*"))
        kept = await gw.batches.store.db.read(lambda db: db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
        counted = await gw.batches.files.db.read(lambda db: db.execute("SELECT SUM(bytes) FROM files").fetchone()[0])
        print(f"{n} failed batches in {took:.1f} s ({n / took:.0f}/s); index and its WAL {size / 1e6:.1f} MB; "
              f"{kept} kept (max_batches {most}); the tenant's files count {counted} bytes")
    finally:
        await stopped(gw)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 100))
