"""CPU seconds of a scenario's runs, one policy at a time in this process, setup included.

    PYTHONPATH=CHECKOUT/src python scripts/sim_cpu.py examples/sim/planet.yaml 20000 balanced,nearest

Uses only load_scenario and run_experiment, so the same command measures an older checkout of the simulator
(point PYTHONPATH at it) beside today's: CPU seconds, unlike wall time, do not count waiting for a busy core,
but on a shared machine compare two checkouts run one after the other, not figures from different days.
"""

from __future__ import annotations

import sys
import time

from aigrid.sim.experiment import run_experiment
from aigrid.sim.scenario import load_scenario


def main() -> None:
    path, requests, policies = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    for policy in policies:
        sc = load_scenario(path).model_copy(update={"requests": requests, "policies": [policy]})
        one = {"workers": 1} if "workers" in run_experiment.__code__.co_varnames else {}
        t = time.process_time()
        ex = run_experiment(sc, **one)  # type: ignore[arg-type]
        print(f"{policy}: {time.process_time() - t:.2f} s CPU, {getattr(ex, 'events', '?')} events", flush=True)


if __name__ == "__main__":
    main()
