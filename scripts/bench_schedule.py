"""How long one routing decision takes (the pure core, no I/O): `python scripts/bench_schedule.py [N ...]`.

Builds a grid of N endpoints spread over the demo's four sites and times Scheduler() on a Tokyo request: CPU
time (time.process_time, not wall time, so that other work on a shared machine counts less), the best of
ROUNDS rounds.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import replace

from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.scheduler import schedule
from aigrid.core.types import Endpoint, GeoPoint, GridView, ModelInfo, RequestInfo, Site

SITES = {
    "fra": Site("fra", "Frankfurt", GeoPoint(50.11, 8.68), "EU"),
    "iad": Site("iad", "Ashburn", GeoPoint(39.04, -77.49), "US"),
    "nrt": Site("nrt", "Tokyo", GeoPoint(35.68, 139.69), "JP"),
    "gru": Site("gru", "Sao Paulo", GeoPoint(-23.55, -46.63), "BR"),
}

ROUNDS = 5


def main(sizes: list[int]) -> None:
    base = Endpoint("e", "fra", "m", "f", 8.0, 0.1, 0.2, max_concurrency=64, prefill_tps=5000, decode_tps=60)
    request = RequestInfo("r", "m", 500, 128, GeoPoint(35.6, 139.7), prefix_hash="p")
    for n in sizes:
        eps = tuple(replace(base, id=f"e{i}", site_id=list(SITES)[i % 4]) for i in range(n))
        view = GridView(SITES, eps, {}, {}, {"m": ModelInfo("m", "f", 8.0)})
        rng, policy = random.Random(0), BUILTIN_POLICIES["balanced"]
        reps = max(200, 20_000 // n)
        best = float("inf")
        for _ in range(ROUNDS):
            start = time.process_time()
            for _ in range(reps):
                schedule(request, view, policy, rng)
            best = min(best, time.process_time() - start)
        per = best / reps
        print(f"{n:5d} endpoints: {per * 1e6:8.1f} us per decision ({per * 1e6 / n:.1f} us per endpoint)")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [4, 8, 32, 128])
