"""CPU and wall time of one audit head-file write (audit/head.write_head: sign, write, fsync, rename), which the
audit writer does after every committed batch, and of its signature alone (docs/benchmarks.md, "Twenty-fifth
session"). CPU is the calling thread's (user + system); the file is written in a temporary folder under the
working directory (that file system's fsync).

    .venv/bin/python scripts/bench_head_write.py [--n 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aigrid.audit.head import head_message, write_head


def _timed(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return 1e6 * (time.thread_time() - cpu) / n, 1e6 * (time.perf_counter() - wall) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    n = ap.parse_args().n
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(dir=".") as folder:
        path = Path(folder) / "audit.db-head"
        for name, fn in (("write_head", lambda i: write_head(path, i, "ab" * 32, key)),
                         ("its signature alone", lambda i: key.sign(head_message(i, "ab" * 32)))):
            cpu, wall = _timed(fn, n)
            print(f"{name}: {cpu:.0f} us CPU, {wall:.0f} us wall a call ({n} calls)")


if __name__ == "__main__":
    main()
