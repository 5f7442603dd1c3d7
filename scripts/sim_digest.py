"""Fingerprint a scenario's runs, to check that a speed-up kept every decision (aigrid.sim.digest).

    python scripts/sim_digest.py examples/sim/planet.yaml [--requests N] [--policies balanced nearest]

Prints one JSON object: per policy the decisions and outcomes digests and the summary figures, plus the
wall and CPU time of the whole run. Run it before and after a change and compare (`diff`): equal digests mean
every call went to the same endpoint after the same attempts, with the same TTFT, TPOT, E2E and cost.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from aigrid.sim.digest import run_digest
from aigrid.sim.experiment import run_experiment
from aigrid.sim.scenario import load_scenario


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--requests", type=int, help="override the scenario's request count")
    ap.add_argument("--policies", nargs="+", help="override the scenario's policies")
    ap.add_argument("--workers", type=int, help="processes running policies side by side (default: one per core)")
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    update: dict[str, object] = {}
    if args.requests:
        update["requests"] = args.requests
    if args.policies:
        update["policies"] = args.policies
    if update:
        sc = sc.model_copy(update=update)
    wall, cpu = time.perf_counter(), os.times()
    ex = run_experiment(sc, workers=args.workers) if args.workers else run_experiment(sc)
    end = os.times()
    out = {
        "scenario": sc.name, "requests": sc.requests,
        "policies": {r.label: {**run_digest(r.result), **r.metrics.summary()} for r in ex.runs},
        "run_cpu_s": {r.label: round(getattr(r, "cpu_s", 0.0), 1) for r in ex.runs},
        "events": ex.events,
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(sum(end[:4]) - sum(cpu[:4]), 1),
    }
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
