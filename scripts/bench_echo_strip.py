"""CPU time of continuation.EchoStrip dropping an engine's echo of a prefill of N characters sent 4 characters a
piece (a client's final assistant turn on the Messages door, a continuation's text delivered): brief QUAD,
thirty-sixth session (each piece cut the rest of the prefill off as a new string: quadratic).

    .venv/bin/python scripts/bench_echo_strip.py [N ...]   # default 100000 200000 400000

Prints figures (no pass/fail).
"""

from __future__ import annotations

import sys
import time

from aigrid.gateway.continuation import EchoStrip


def main() -> None:
    for n in [int(a) for a in sys.argv[1:]] or [100_000, 200_000, 400_000]:
        strip = EchoStrip("a" * n)
        t = time.process_time()
        for _ in range(n // 4):
            strip("aaaa")
        print(f"{n:,} characters echoed 4 a piece: {(time.process_time() - t) * 1000:.1f} ms CPU", flush=True)


if __name__ == "__main__":
    main()
