"""Where a simulator run spends its CPU: a statistical profile (ITIMER_PROF samples of the Python stack).

    python scripts/sim_profile.py examples/sim/planet.yaml 50000 balanced [--every-ms 2]

Every `every-ms` of CPU the signal handler records the running function (self) and every function on the
stack (inclusive); a generated dataclass __init__ is named with the line that called it. Unlike cProfile
it adds almost nothing per call, so many small calls are not inflated. One process, the policies in turn.
"""

from __future__ import annotations

import argparse
import collections
import signal
import time
from types import FrameType

from aigrid.sim.experiment import run_experiment
from aigrid.sim.scenario import load_scenario


def _name(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_filename.split('/src/')[-1]}:{code.co_name}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("requests", type=int)
    ap.add_argument("policies")
    ap.add_argument("--every-ms", type=float, default=2.0)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    samples = [0]

    def sample(_sig: int, frame: FrameType | None) -> None:
        if frame is None:
            return
        samples[0] += 1
        key = _name(frame)
        if key.startswith("<string>") and frame.f_back is not None:
            key = f"{key} <- {_name(frame.f_back)}:{frame.f_back.f_lineno}"
        own[key] += 1
        seen: set[str] = set()
        f: FrameType | None = frame
        while f is not None:
            k = _name(f)
            if k not in seen:
                inclusive[k] += 1
                seen.add(k)
            f = f.f_back

    sc = load_scenario(args.scenario).model_copy(update={"requests": args.requests,
                                                         "policies": args.policies.split(",")})
    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, args.every_ms / 1000, args.every_ms / 1000)
    cpu = time.process_time()
    run_experiment(sc, workers=1)
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    n = max(samples[0], 1)
    print(f"{time.process_time() - cpu:.1f} s CPU, {samples[0]} samples")
    print("--- self")
    for k, c in own.most_common(args.top):
        print(f"{c / n:6.1%} {k}")
    print("--- inclusive")
    for k, c in inclusive.most_common(args.top):
        print(f"{c / n:6.1%} {k}")


if __name__ == "__main__":
    main()
