"""One cell of the routing scoreboard at a given load factor: `python scripts/routing_cell.py
examples/sim/global.yaml 1.81 [POLICY ...]` prints each policy's TTFT p50 / p99, goodput, requests shed,
utilisation and prediction error (16 gateways, 2 s lag, as scripts/routing_matrix.py), for A/B runs of a
change at the same traffic without the matrix's round-robin probe."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from routing_matrix import run_one  # noqa: E402

KEYS = ("ttft_p50_ms", "ttft_p99_ms", "goodput", "shed", "mean_utilization", "pred_err_p50", "pred_err_p90")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("scenario")
    ap.add_argument("factor", type=float)
    ap.add_argument("policies", nargs="*", default=["balanced"])
    ap.add_argument("--gateways", type=int, default=16)
    ap.add_argument("--lag", type=float, default=2.0)
    a = ap.parse_args()
    for policy in a.policies:
        started = time.perf_counter()
        row = run_one((a.scenario, a.gateways, a.lag, a.factor, policy))
        figures = " ".join(f"{k}={row.get(k)}" for k in KEYS)
        print(f"{Path(a.scenario).stem} x{a.factor:g} {policy}: {figures} ({time.perf_counter() - started:.0f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
