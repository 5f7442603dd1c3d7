"""One cell of the routing scoreboard at a given load factor: `python scripts/routing_cell.py
examples/sim/global.yaml 1.81 [POLICY ...]` prints each policy's TTFT p50 / p99, goodput, requests shed,
utilisation and prediction error (16 gateways, 2 s lag, as scripts/routing_matrix.py), for A/B runs of a
change at the same traffic without the matrix's round-robin probe.

`--sync S` exchanges the gateways' ledgers every S seconds instead of the scenario's `shared_state_s`;
`--engine-share S` sets the admission queue's `engine_queue_share` (1.0: the rule before it, docs/simulator.md);
`--seed N` draws another traffic sample; `--detail` also prints where the requests went and what their TTFT looked like: requests served per
endpoint, TTFT p25 / p50 / p75 / p90, and the share that waited in the admission queue with its median."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from routing_matrix import configure  # noqa: E402

from aigrid.sim.experiment import arrivals_from, simulate  # noqa: E402
from aigrid.sim.geography import load_cities  # noqa: E402
from aigrid.sim.grid import build_grid  # noqa: E402
from aigrid.sim.metrics import summarize  # noqa: E402
from aigrid.sim.routers import make_router  # noqa: E402
from aigrid.sim.runner import RunResult  # noqa: E402
from aigrid.sim.workload import build_workload  # noqa: E402

KEYS = ("ttft_p50_ms", "ttft_p99_ms", "goodput", "shed", "mean_utilization", "pred_err_p50", "pred_err_p90")


def detail(r: RunResult) -> str:
    ttft = r.ttft_s * 1000.0
    served = np.isfinite(ttft)
    per_endpoint = np.bincount(r.endpoint[served & (r.endpoint >= 0)].astype(int)).tolist()
    pcts = "/".join(f"{np.percentile(ttft[served], q):,.0f}" for q in (25, 50, 75, 90))
    text = f"  served per endpoint {per_endpoint}; TTFT p25/p50/p75/p90 {pcts} ms"
    if r.waited is not None and r.waited.any():
        waited = r.waited & served
        text += (f"; {r.waited.mean():.1%} waited in the admission queue (TTFT median {np.median(ttft[waited]):,.0f}"
                 f" ms; the others {np.median(ttft[served & ~r.waited]):,.0f} ms)")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario")
    ap.add_argument("factor", type=float)
    ap.add_argument("policies", nargs="*", default=["balanced"])
    ap.add_argument("--gateways", type=int, default=16)
    ap.add_argument("--lag", type=float, default=2.0)
    ap.add_argument("--sync", type=float, help="the gateways' ledger exchange interval, seconds")
    ap.add_argument("--detail", action="store_true")
    ap.add_argument("--seed", type=int, help="another traffic sample than the scenario's seed")
    ap.add_argument("--engine-share", type=float, help="gateway.admission.engine_queue_share (0 < S <= 1)")
    a = ap.parse_args()
    sc = configure(a.scenario, a.gateways, a.lag)
    if a.sync is not None:
        sc = sc.model_copy(update={"gateway": sc.gateway.model_copy(update={"shared_state_s": a.sync})})
    if a.engine_share is not None:
        if not 0.0 < a.engine_share <= 1.0:
            ap.error(f"--engine-share must be > 0 and <= 1, not {a.engine_share}")
        adm = sc.gateway.admission
        adm = adm.model_validate({**adm.model_dump(), "engine_queue_share": a.engine_share})
        sc = sc.model_copy(update={"gateway": sc.gateway.model_copy(update={"admission": adm})})
    if a.seed is not None:
        sc = sc.model_copy(update={"seed": a.seed})
    cities = load_cities()
    w = build_workload(sc, cities, load=a.factor)
    arr, grid = arrivals_from(sc, w, cities), build_grid(sc, cities)
    for policy in a.policies:
        started = time.perf_counter()
        router, pol = make_router(policy, frozenset({sc.central_site}) if sc.central_site else frozenset(),
                                  sc.slo.ttft_ms)
        r = simulate(sc, grid, arr, router, policy, pol)
        row = summarize(sc, grid, w, r).summary()
        figures = " ".join(f"{k}={row.get(k)}" for k in KEYS)
        print(f"{Path(a.scenario).stem} x{a.factor:g} {policy}: {figures} ({time.perf_counter() - started:.0f} s)",
              flush=True)
        if a.detail:
            print(detail(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
