"""What llama-server's own sampler fields cost the engine: one /v1/completions of 16 tokens on the embedded
llama-server (SmolLM2-135M, 49,152 tokens of vocabulary; one thread, one slot), with llama.cpp's default sampler
chain, a `samplers` chain of --samplers "temperature" entries and of schemas.MAX_SAMPLERS, and DRY
(`dry_multiplier` 0.8) with its four default `dry_sequence_breakers`, schemas.MAX_DRY_BREAKERS of them and
--breakers of them. The engine does this work in the one loop that serves all its slots (a long chain on every token
it samples; each breaker is a scan of the whole vocabulary when the slot starts), so every other request on it
waits as long.

    .venv/bin/python scripts/bench_llama_server_fields.py [--runs 2] [--samplers 10000] [--breakers 100]

Prints the best of --runs requests per case, in seconds (wall time of the request; the machine is shared: the least
is the run least disturbed); no pass/fail. docs/security.md quotes it (the thirty-fourth session's rows on
`samplers` and `dry_sequence_breakers`). Needs the embedded engine (`make engine`) and its model (`make install`).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import time
import urllib.request
from typing import Any

from aigrid.engines.model_files import find_llama_server, find_model_file
from aigrid.gateway.schemas import MAX_DRY_BREAKERS, MAX_SAMPLERS

DRY_DEFAULT = ["\n", ":", '"', "*"]
"""llama.cpp's default DRY sequence breakers."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def completion(port: int, extra: dict[str, Any]) -> float:
    """Seconds one completion of 16 tokens with `extra` took."""
    body = {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.8, "seed": 1, **extra}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=900) as r:
        json.loads(r.read())
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--samplers", type=int, default=10_000, help="entries of the long sampler chain")
    ap.add_argument("--breakers", type=int, default=100, help="DRY sequence breakers of the largest case")
    args = ap.parse_args()
    port = free_port()
    engine = subprocess.Popen([str(find_llama_server()), "-m", str(find_model_file()), "--host", "127.0.0.1",
                               "--port", str(port), "-t", "1", "-c", "2048", "-np", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        dry = {"dry_multiplier": 0.8}
        cases: list[tuple[str, dict[str, Any]]] = [
            ("default chain", {}),
            (f"samplers x{MAX_SAMPLERS} (MAX_SAMPLERS)", {"samplers": ["temperature"] * MAX_SAMPLERS}),
            (f"samplers x{args.samplers:,}", {"samplers": ["temperature"] * args.samplers}),
            ("DRY, 4 default breakers", {**dry, "dry_sequence_breakers": DRY_DEFAULT}),
            (f"DRY, {MAX_DRY_BREAKERS} breakers (MAX_DRY_BREAKERS)",
             {**dry, "dry_sequence_breakers": [f"b{i}" for i in range(MAX_DRY_BREAKERS)]}),
            (f"DRY, {args.breakers:,} breakers", {**dry, "dry_sequence_breakers": [f"b{i}" for i in range(args.breakers)]}),
        ]
        for label, extra in cases:
            best = min(completion(port, extra) for _ in range(args.runs))
            print(f"{label:36s} {best:8.3f} s", flush=True)
    finally:
        engine.terminate()
        engine.wait(timeout=30)


if __name__ == "__main__":
    main()
