"""Peak memory of one Message Batches create's check (docs/batches.md, "Memory and disk").
Run: PYTHONPATH=. .venv/bin/python scripts/message_batch_memory.py [MiB]
(the figure before 5 Dec 2026: first `git show b8dc341~1:src/aigrid/gateway/message_batches_api.py >
src/aigrid/gateway/message_batches_api.py`, then restore it)
Builds a valid batch body of about MiB (default 100) of multi-turn requests, then measures the process's
peak RSS (VmHWM, reset with /proc/self/clear_refs 5) while MessageBatchesApi checks it and writes its lines:
the raw body is already resident before the reset, so the figure is what the parse adds on top of it."""
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson


def status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

async def main() -> None:
    from tests.gateway.test_batches import batch_spec, engines_for, started, stopped
    mib = float(sys.argv[1]) if len(sys.argv) > 1 else 100
    tmp = Path(tempfile.mkdtemp())
    gw = await started(batch_spec(tmp, max_lines=50_000, max_file_bytes=int(mib * 1048576) + 1), engines_for(tmp))
    from aigrid.gateway.app import build_app
    build_app(gw)
    api = gw.batches.message_batches_api
    turn = "Please summarise the following paragraph in one sentence. " * 4
    def one(i: int) -> dict:
        return {"custom_id": f"r{i}", "params": {
            "model": "smollm2-135m", "max_tokens": 64, "system": "You are terse.",
            "messages": [{"role": r, "content": [{"type": "text", "text": f"{turn} {i}"}]} for r in ("user", "assistant") * 3
                         ] + [{"role": "user", "content": "Go."}]}}
    size = len(orjson.dumps(one(0)))
    n = min(50_000, int(mib * 1048576 / (size + 1)))
    raw = orjson.dumps({"requests": [one(i) for i in range(n)]})
    size_raw = len(raw)
    print(f"body {len(raw)/1048576:.1f} MiB, {n} requests")
    Path("/proc/self/clear_refs").write_text("5")
    base = status("VmRSS")
    t = time.monotonic()
    import inspect
    import tempfile as tf
    if "src" in inspect.signature(api._check).parameters:  # after the fix: the body read from its spool file
        with tf.SpooledTemporaryFile(1 << 20) as src, tf.SpooledTemporaryFile(1 << 20) as out:
            src.write(raw)  # on disk: what create spooled as it arrived
            del raw
            Path("/proc/self/clear_refs").write_text("5")
            base = status("VmRSS")
            count = api._check(src, lambda m: True, out)
    else:  # before: bytes in, bytes out
        data, count = api._check(raw, lambda m: True)
    peak = status("VmHWM")
    print(f"parse+check {time.monotonic()-t:.1f} s; peak RSS above the resident body (after the fix: above what was resident, the body on disk): {(peak-base)/1048576:.0f} MiB "
          f"({(peak-base)/size_raw:.1f} x the body); total peak {peak/1048576:.0f} MiB")
    await stopped(gw)

asyncio.run(main())
