"""The dashboard test's burst against `aigrid up SPEC`, without the browser: what happens to each stream.

tests/dashboard/test_demo_dashboard.py sends 36 streams (six waves 2 s apart, 10 client threads) from a
dozen cities to the demo grid. This sends the same ones and prints each stream's status, site, time to the
first byte and, for any answer that is not 200, its error body and Retry-After; then the gateway's admission
counters (waited, dispatched, shed) and how long requests waited in its queue.

    PYTHONPATH=src:. python scripts/demo_burst.py examples/demo.yaml
    PYTHONPATH=src:. taskset -c 0 python scripts/demo_burst.py examples/demo.yaml   # the grid on one core
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.dashboard.test_demo_dashboard import CITIES, PROMPTS
from tests.e2e.processes import running_grid


def stream(base: str, city: str, prompt: str) -> dict[str, object]:
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 48, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}]}
    t0, first = time.monotonic(), None
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=120,
                      headers={"x-aigrid-client-location": city}) as r:
        chunks = []
        for chunk in r.iter_bytes():
            first = time.monotonic() - t0 if first is None else first
            chunks.append(chunk)
        return {"city": city, "status": r.status_code, "site": r.headers.get("x-aigrid-site", ""),
                "retry_after": r.headers.get("retry-after"), "first_byte_s": round(first or 0.0, 2),
                "error": b"".join(chunks).decode(errors="replace")[:300] if r.status_code != 200 else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_grid(a.spec.resolve(), Path(tmp)) as grid:
        with ThreadPoolExecutor(max_workers=10) as pool:
            futures = []
            for wave in range(6):
                for k, city in enumerate(CITIES):
                    if (k + wave) % 2 == 0:
                        futures.append(pool.submit(stream, grid.base, city, PROMPTS[(k + wave) % len(PROMPTS)]))
                time.sleep(2.0)
            rows = [f.result() for f in futures]
        for row in rows:
            print(json.dumps(row))
        unserved = [r for r in rows if r["status"] != 200]
        slowest = max(float(r["first_byte_s"]) for r in rows)  # type: ignore[arg-type]
        print(f"served {len(rows) - len(unserved)} of {len(rows)}; first byte at most {slowest:.1f} s; "
              f"sites {sorted({str(r['site']) for r in rows if r['site']})}")
        metrics = httpx.get(grid.base + "/metrics").text
        for line in metrics.splitlines():
            if line.startswith(("aigrid_admission_total", "aigrid_admission_wait_seconds_bucket")):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
