"""The overloaded box of tests/sim/test_urgency.py (one L40S, two gateways, about twice what it serves) over
several traffic seeds, at each engine-queue share: mean goodput, TTFT p50 and p99 of the default policy.

    python scripts/overload_box.py --shares 1.0 0.5 --seeds 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aigrid.sim.experiment import run_experiment  # noqa: E402
from tests.sim.test_urgency import overloaded  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shares", nargs="+", type=float, default=[1.0, 0.5])
    ap.add_argument("--seeds", type=int, default=8, help="seeds 1..N")
    a = ap.parse_args()
    for share in a.shares:
        rows = []
        for seed in range(1, a.seeds + 1):
            sc = overloaded({"engine_queue_share": share}).model_copy(update={"seed": seed})
            m = run_experiment(sc).runs[0].metrics
            rows.append((m.goodput, m.ttft_p50_ms, m.ttft_p99_ms))
        g, p50, p99 = np.mean(rows, axis=0)
        print(f"share {share:g}: {a.seeds} seeds, mean goodput {g:.1%}, TTFT p50 {p50:,.0f} ms, p99 {p99:,.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
