"""How long one routing decision takes (the pure core, no I/O).

    python scripts/bench_schedule.py [N ...] [--telemetry] [--decisions D]

Builds a grid of N endpoints spread over the demo's four sites and times Scheduler() on a Tokyo request: CPU
time (time.process_time, not wall time, so that other work on a shared machine counts less), the best of
ROUNDS rounds. Without --telemetry no endpoint has a state (the core's fallbacks); with it every endpoint has
what a simulated gateway's view gives it (engine counts, requests in flight, a recent TTFT and TPOT, a
calibration on three in four), as on planet.

--decisions D makes exactly D decisions per size and prints no timing: for an instruction count that does
not depend on the machine's load, run it under valgrind with D and with 0 and divide the difference by D:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python scripts/bench_schedule.py 8 --telemetry --decisions 400

--observations D folds D outcomes into a calibration as another gateway's (core.calibration.observe with
weight 1/15, as the simulator shares them between 16 gateways), untimed and with no decisions, for the same
kind of count: `python scripts/bench_schedule.py --observations 20000` against `--observations 0`.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

from aigrid.core.calibration import Calibration, observe
from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.scheduler import schedule
from aigrid.core.types import Endpoint, EndpointState, GeoPoint, GridView, ModelInfo, RequestInfo, Site

SITES = {
    "fra": Site("fra", "Frankfurt", GeoPoint(50.11, 8.68), "EU"),
    "iad": Site("iad", "Ashburn", GeoPoint(39.04, -77.49), "US"),
    "nrt": Site("nrt", "Tokyo", GeoPoint(35.68, 139.69), "JP"),
    "gru": Site("gru", "Sao Paulo", GeoPoint(-23.55, -46.63), "BR"),
}

ROUNDS = 5


def telemetry(eps: tuple[Endpoint, ...]) -> dict[str, EndpointState]:
    rnd, cal = random.Random(0), Calibration()
    for _ in range(20):
        cal = observe(cal, rnd.random() * 100, rnd.random() * 50, rnd.random() * 200)
    return {ep.id: EndpointState(running=i % 3, ttft_s=0.2, tpot_s=0.015, mean_output_tokens=120.0,
                                 pending_requests=i % 2, pending_prompt_tokens=300 * (i % 2), decoding=i % 3,
                                 calibration=cal if i % 4 else None) for i, ep in enumerate(eps)}


def fold(n: int) -> None:
    """n outcomes (drawn before the loop) folded into one calibration with weight 1/15."""
    rnd = random.Random(0)
    outcomes = [(rnd.random() * 100, rnd.random() * 50, rnd.random() * 200) for _ in range(n)]
    cal = Calibration()
    for ahead, own, observed in outcomes:
        cal = observe(cal, ahead, own, observed, weight=1 / 15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[4, 8, 32, 128])
    ap.add_argument("--telemetry", action="store_true", help="every endpoint has a state, as in the simulator")
    ap.add_argument("--decisions", type=int, help="make exactly this many decisions per size, untimed")
    ap.add_argument("--observations", type=int, help="fold exactly this many shared outcomes, untimed, and stop")
    args = ap.parse_args()
    if args.observations is not None:
        fold(args.observations)
        return
    base = Endpoint("e", "fra", "m", "f", 8.0, 0.1, 0.2, max_concurrency=64, prefill_tps=5000, decode_tps=60)
    request = RequestInfo("r", "m", 500, 128, GeoPoint(35.6, 139.7), prefix_hash="p")
    for n in args.sizes:
        eps = tuple(replace(base, id=f"e{i}", site_id=list(SITES)[i % 4]) for i in range(n))
        view = GridView(SITES, eps, telemetry(eps) if args.telemetry else {}, {}, {"m": ModelInfo("m", "f", 8.0)})
        rng, policy = random.Random(0), BUILTIN_POLICIES["balanced"]
        if args.decisions is not None:
            for _ in range(args.decisions):
                schedule(request, view, policy, rng)
            continue
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
    main()
