"""The bench scripts' best-of timing loop: `calls` calls of a function timed together, `runs` times, the least
kept (the machine is shared: the least is the run least disturbed). `clock` is what is read around each run:
`time.perf_counter` for wall time, `time.process_time` for this process's CPU. Imported by the scripts beside it
(`python scripts/NAME.py` puts this folder first on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_us(fn: Callable[[], object], calls: int, runs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """The least of `runs` readings of `clock` over `calls` calls of `fn`, in microseconds a call."""
    best = float("inf")
    for _ in range(runs):
        start = clock()
        for _ in range(calls):
            fn()
        best = min(best, (clock() - start) / calls)
    return best * 1e6
