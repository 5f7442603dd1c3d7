"""Peak RSS of POST /v1/batches' check of a ~91 MiB input file (batch_input.read_input), above the file's bytes.
Run: .venv/bin/python scripts/batch_input_memory.py (docs/security.md, "Found and not fixed")"""
from pathlib import Path
import orjson
from aigrid.gateway.batch_input import read_input

def st(k):
    return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(k))

turn = "Please summarise the following paragraph in one sentence. " * 4
lines = [orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
    "model": "smollm2-135m", "max_tokens": 64, "messages": [{"role": "system", "content": "You are terse."}] + [
        {"role": r, "content": [{"type": "text", "text": f"{turn} {i}"}]} for r in ("user", "assistant") * 3] + [
        {"role": "user", "content": "Go."}]}}) for i in range(50_000)]
raw = b"\n".join(lines)
del lines
Path("/proc/self/clear_refs").write_text("5")
base = st("VmRSS")
checked = read_input(raw, "/v1/chat/completions", {"smollm2-135m"}, 50_000)
assert not checked.errors, checked.errors[:2]
peak = st("VmHWM")
print(f"file {len(raw) / 1048576:.1f} MiB; peak RSS above it {(peak - base) / 1048576:.0f} MiB ({(peak - base) / len(raw):.1f} x)")
