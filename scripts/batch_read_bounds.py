"""Python allocations (tracemalloc's peak) of what the Batch API reads from disk: POST /v1/batches' check of an input
file of one long line (batch_input.check_file at gateway.max_body_bytes' default, 4 MiB), and a resumed batch's read of
its results (batch_output.BatchOutput.recover, 4,000 answers of about 4 KB). Run before and after the twentieth
session's change to compare (docs/batches.md, "Validation at create" and "Where it runs").
Run: PYTHONPATH=. .venv/bin/python scripts/batch_read_bounds.py"""
import inspect
import tempfile
import tracemalloc
from pathlib import Path

import orjson

from aigrid.gateway import batch_input
from aigrid.gateway.batch_output import BatchOutput

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "long.jsonl"
    bounded = "max_line_bytes" in inspect.signature(batch_input.check_file).parameters
    for mib in (32, 96):
        with path.open("wb") as f:
            f.write(b'{"custom_id": "long", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", '
                    b'"messages": [{"role": "user", "content": "')
            for _ in range(mib):
                f.write(b"x" * (1 << 20))
            f.write(b'"}]}}\n')
        tracemalloc.start()
        checked = batch_input.check_file(path, "/v1/chat/completions", {"m"}, 100,
                                         **({"max_line_bytes": 4 << 20} if bounded else {}))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"check_file, one line of {mib} MiB: peak {peak / 2**20:.1f} MiB allocated; errors {checked.errors}")
    out = BatchOutput(Path(tmp), "batch_x")
    answer = {"choices": [{"message": {"content": "x" * 4000}}], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    with out.output.open("wb") as f:
        for i in range(4000):
            f.write(orjson.dumps({"custom_id": f"q{i}", "response": {"status_code": 200, "body": answer}}) + b"\n")
    tracemalloc.start()
    out.recover()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"recover, {out.output.stat().st_size / 2**20:.1f} MiB of results: peak {peak / 2**20:.2f} MiB allocated")
