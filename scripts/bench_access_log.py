"""CPU per access-log line on the serving thread (the caller side of aigrid.logs: record, JSON, queue).

    .venv/bin/python scripts/bench_access_log.py [N]

Logs N access lines shaped like the gateway's (aigrid.access, ~16 fields) into a StringIO through
`aigrid.logs.configure` and prints the process CPU per line; the writer thread's work is not counted
(it runs beside the event loop)."""

from __future__ import annotations

import argparse
import io
import logging
import time

from aigrid import logs


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=50_000, help="access lines to log (default 50,000)")
    n = ap.parse_args().n
    sink = logs.configure("info", io.StringIO())
    log = logging.getLogger("aigrid.access")
    f = {"decision": "dec-0123456789abcdef", "tenant": "default", "model": "smollm2-135m", "site": "fra",
         "endpoint": "fra-smollm2", "status": 200, "outcome": "ok", "ttft_ms": 12.3, "duration_ms": 240.5,
         "prompt_tokens": 32, "completion_tokens": 24, "policy": "balanced", "route": "/v1/chat/completions",
         "client": "127.0.0.1", "stream": True, "retries": 0}
    started = time.thread_time()
    for _ in range(n):
        log.info("%s %s", "/v1/chat/completions", "ok", extra=logs.fields(**f))
    print(f"{(time.thread_time() - started) / n * 1e6:.1f} us per access line on the calling thread ({n} lines)")
    sink.stop()


if __name__ == "__main__":
    main()
