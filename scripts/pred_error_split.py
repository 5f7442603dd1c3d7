"""Where the default policy's prediction error comes from, in one scoreboard cell: `python
scripts/pred_error_split.py examples/sim/global.yaml 0.9053624618616062` splits the requests the simulator's
`pred_err_*` counts (served on the first attempt without waiting in the admission queue) by whether the chosen
candidate's prediction had queue ahead, and prints each part's absolute and signed relative TTFT error and
its engine-time error in ms (observed TTFT minus the observed round trip against the predicted queue plus
prefill). 16 gateways, 2 s lag, as scripts/routing_matrix.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from routing_matrix import configure  # noqa: E402

from aigrid.sim.experiment import arrivals_from, simulate  # noqa: E402
from aigrid.sim.geography import load_cities  # noqa: E402
from aigrid.sim.grid import build_grid  # noqa: E402
from aigrid.sim.routers import make_router  # noqa: E402
from aigrid.sim.runner import OK  # noqa: E402
from aigrid.sim.workload import build_workload  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario")
    ap.add_argument("factor", type=float)
    ap.add_argument("--policy", default="balanced")
    a = ap.parse_args()
    sc = configure(a.scenario, 16, 2.0)
    cities = load_cities()
    w = build_workload(sc, cities, load=a.factor)
    arr, grid = arrivals_from(sc, w, cities), build_grid(sc, cities)
    router, pol = make_router(a.policy, frozenset(), sc.slo.ttft_ms)
    r = simulate(sc, grid, arr, router, a.policy, pol, keep_decisions=True)
    last = {d.request_id: d.chosen.prediction for d in r.decisions or () if d.chosen is not None}
    counted = (r.status == OK) & (r.attempts == 1) & np.isfinite(r.predicted_ms)
    if r.waited is not None:
        counted &= ~r.waited
    idx = np.array([i for i in np.flatnonzero(counted) if arr.request(int(i)).id in last], dtype=int)
    if not len(idx):
        print("no request to split (a baseline predicts nothing)")
        return 1
    preds = [last[arr.request(int(i)).id] for i in idx]
    obs = r.ttft_s[idx] * 1000.0
    pred = np.array([p.ttft_ms for p in preds])
    queue = np.array([p.queue_ms for p in preds])
    engine_err = (queue + np.array([p.prefill_ms for p in preds])) - (obs - r.rtt_s[idx] * 1000.0)
    rel = (pred - obs) / obs
    pct = lambda x, qs: " / ".join(f"{v:.0%}" for v in np.percentile(x, qs))  # noqa: E731
    print(f"{Path(a.scenario).stem} x{a.factor:g} {a.policy}: {len(idx)} requests, |error| p50 / p90 "
          f"{pct(np.abs(rel), (50, 90))}")
    for name, m in (("no queue ahead", queue <= 0.0), ("queue ahead", queue > 0.0)):
        if m.any():
            ms = " / ".join(f"{v:+.0f}" for v in np.percentile(engine_err[m], (10, 50, 90)))
            print(f"  {name}: {m.mean():.0%} of them; |error| p50 / p90 {pct(np.abs(rel[m]), (50, 90))}; signed "
                  f"p10 / p50 / p90 {pct(rel[m], (10, 50, 90))}; engine time predicted - observed p10 / p50 / p90 "
                  f"{ms} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
