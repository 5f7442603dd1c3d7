"""A file upload's time while a flood of long chat bodies is parsed: the gateway's own parse threads (Gateway.parses,
parse_pool.py) against asyncio's default pool (`--shared`: the parse and texts' walk run by asyncio.to_thread, as
before the thirty-seventh session, beside the Files API's disk work). A gateway on FAKE engines served by uvicorn
(tests/gateway/socket_grid), one process; `--flood` clients (default 12) of a tenant without quotas each post, one after another, a chat body
whose message carries a key of 20,000 empty arrays (60 KB: past body_values.OFF_LOOP_BYTES, parsed and walked off
the loop), while one client uploads a 256 KiB JSONL file `--uploads` times (default 20), one after another.

    .venv/bin/python scripts/bench_parse_pool.py [--shared] [--flood N] [--uploads N]

Prints the uploads' median and worst seconds, alone and under the flood, and the flood's bodies served (no
pass/fail)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gateway.socket_grid import MODEL, TENANT, served  # noqa: E402

T = TypeVar("T")
LONG = orjson.dumps({"model": MODEL, "max_tokens": 4, "messages": [
    {"role": "user", "content": "hi", "note": [[] for _ in range(20_000)]}]})
UPLOAD = b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
    "model": MODEL, "messages": [{"role": "user", "content": "x" * 200}]}}) + b"\n" for i in range(1_000))[:256 * 1024]


class SharedPool:
    """The parse work on asyncio's default pool (asyncio.to_thread), as before the gateway had its own."""

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    def close(self) -> None:
        return None


def uploads(port: int, n: int) -> list[float]:
    took = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=TENANT, timeout=120) as c:
        for _ in range(n):
            t = time.perf_counter()
            r = c.post("/v1/files", files={"file": ("in.jsonl", UPLOAD)}, data={"purpose": "batch"})
            took.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text[:300]
    return took


def flood(port: int, stop: threading.Event, served_count: list[int]) -> None:
    headers = {"x-aigrid-tenant": "default", "content-type": "application/json"}  # no quota: never refused
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as c:
        while not stop.is_set():
            r = c.post("/v1/chat/completions", content=LONG)
            assert r.status_code == 200, r.text[:300]
            served_count.append(1)


def figures(label: str, took: list[float]) -> str:
    return f"{label}: median {statistics.median(took):.3f} s, worst {max(took):.3f} s of {len(took)} uploads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", action="store_true", help="parse on asyncio's default pool (before)")
    ap.add_argument("--flood", type=int, default=12)
    ap.add_argument("--uploads", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as grid:
        if args.shared:
            grid.gw.parses = SharedPool()  # type: ignore[assignment]
        print(f"parses on {'asyncio default pool (--shared)' if args.shared else 'the gateway parse pool'}; "
              f"long body {len(LONG):,} bytes, upload {len(UPLOAD):,} bytes", flush=True)
        print(figures("alone      ", uploads(grid.port, args.uploads)), flush=True)
        stop, count = threading.Event(), []
        clients = [threading.Thread(target=flood, args=(grid.port, stop, count)) for _ in range(args.flood)]
        for t in clients:
            t.start()
        time.sleep(1.0)
        t0, before = time.perf_counter(), len(count)
        took = uploads(grid.port, args.uploads)
        rate = (len(count) - before) / (time.perf_counter() - t0)
        stop.set()
        for t in clients:
            t.join()
        print(figures(f"flood of {args.flood}", took) + f"; {rate:.1f} long bodies served/s meanwhile", flush=True)


if __name__ == "__main__":
    main()
