"""CPU seconds of a scenario's runs, one policy at a time in this process, setup included.

    PYTHONPATH=CHECKOUT/src python scripts/sim_cpu.py examples/sim/planet.yaml 20000 balanced,nearest [--dense]

--dense keeps the scenario's density instead of its duration: `duration_s` cut in proportion to the request
count (so each request meets as much traffic as in the full run) and no faults (their times would fall
outside); each line then also gives the run's own CPU seconds (PolicyRun.cpu_s, setup excluded).

Uses only load_scenario and run_experiment, so the same command measures an older checkout of the simulator
(point PYTHONPATH at it) beside today's: CPU seconds, unlike wall time, do not count waiting for a busy core,
but on a shared machine compare two checkouts run one after the other, not figures from different days.
Each line also gives the CPU seconds the cyclic garbage collector spent (gc.callbacks, setup included) and
its collections per generation.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from aigrid.sim.experiment import run_experiment
from aigrid.sim.scenario import load_scenario


class CollectorClock:
    """CPU seconds inside the cyclic garbage collector, and its collections per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0
        gc.callbacks.append(self._event)

    def _event(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.collections[info["generation"]] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("scenario", help="a simulator scenario (YAML)")
    ap.add_argument("requests", type=int, help="requests per run")
    ap.add_argument("policies", help="comma-separated policies, e.g. balanced,nearest")
    ap.add_argument("--dense", action="store_true", help="keep the scenario's density instead of its duration")
    args = ap.parse_args()
    path, requests, policies, dense = args.scenario, args.requests, args.policies.split(","), args.dense
    for policy in policies:
        sc = load_scenario(path)
        update: dict[str, Any] = {"requests": requests, "policies": [policy]}
        if dense:
            update |= {"duration_s": sc.duration_s * requests / sc.requests, "faults": []}
        sc = sc.model_copy(update=update)
        one = {"workers": 1} if "workers" in run_experiment.__code__.co_varnames else {}
        clock = CollectorClock()
        t = time.process_time()
        ex = run_experiment(sc, **one)  # type: ignore[arg-type]
        gc.callbacks.remove(clock._event)
        run = f", run {ex.runs[0].cpu_s:.2f} s" if dense else ""
        print(f"{policy}: {time.process_time() - t:.2f} s CPU{run}, {getattr(ex, 'events', '?')} events, "
              f"collector {clock.seconds:.2f} s ({'/'.join(map(str, clock.collections))} collections)", flush=True)


if __name__ == "__main__":
    main()
