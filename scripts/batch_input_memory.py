"""Peak RSS of POST /v1/batches' check of a ~91 MiB input file (batch_input.check_file, read from disk a line at a
time), then of a running batch's read of it (batch_input.LineReader, a chunk at a time), above the process before.
Run: PYTHONPATH=. .venv/bin/python scripts/batch_input_memory.py (docs/batches.md, "Validation at create")"""
import tempfile
from pathlib import Path

import orjson

from aigrid.gateway.batch_input import LineReader, check_file


def st(k):
    return next(int(s.split()[1]) * 1024 for s in Path("/proc/self/status").read_text().splitlines() if s.startswith(k))

turn = "Please summarise the following paragraph in one sentence. " * 4
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "input.jsonl"
    with path.open("wb") as f:
        for i in range(50_000):
            f.write(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
                "model": "smollm2-135m", "max_tokens": 64, "messages": [{"role": "system", "content": "You are terse."}] + [
                    {"role": r, "content": [{"type": "text", "text": f"{turn} {i}"}]} for r in ("user", "assistant") * 3] + [
                    {"role": "user", "content": "Go."}]}}) + b"\n")
    size = path.stat().st_size
    Path("/proc/self/clear_refs").write_text("5")
    base = st("VmRSS")
    checked = check_file(path, "/v1/chat/completions", {"smollm2-135m"}, 50_000)
    assert not checked.errors and checked.count == 50_000, checked.errors[:2]
    peak = st("VmHWM")
    print(f"file {size / 1048576:.1f} MiB; create's check: peak RSS above the process before {(peak - base) / 1048576:.1f} MiB")
    Path("/proc/self/clear_refs").write_text("5")
    base = st("VmRSS")
    reader, n = LineReader(path, "/v1/chat/completions", 50_000), 0
    while chunk := reader.chunk():
        n += len(chunk)
    reader.close()
    assert n == 50_000
    peak = st("VmHWM")
    print(f"running batch's read, chunk by chunk: peak RSS above the process before {(peak - base) / 1048576:.1f} MiB")
