"""Would a plan still pass without some of its sites or replicas? Re-run the plan's checks on an edited placement.

    python scripts/plan_without.py DEMAND.yaml PLAN_DIR [--drop SITE ...] [--scale SITE=DELTA ...] [--workers N]

Reads PLAN_DIR/plan.json (written by `aigrid plan`), removes the --drop sites and adds DELTA replicas to each
--scale site (negative to remove), then runs the same checks as the planner (plan/verify.py: the plan's peak
hours, every site up and each remaining site down) in the simulator and prints each check's verdict. For
questions the planner's own refinement does not ask (it trims replicas, never whole sites), e.g. "is the
sixth site needed?" (docs/planning.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aigrid.plan.checks import Check
from aigrid.plan.demand import load_demand
from aigrid.plan.placement import Placement, PlannedSite
from aigrid.plan.runs import LocalBackend
from aigrid.plan.traffic import build_traffic
from aigrid.plan.verify import Verifier, passes
from aigrid.sim.geography import load_cities


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demand")
    ap.add_argument("plan_dir", type=Path)
    ap.add_argument("--drop", nargs="*", default=[], metavar="SITE")
    ap.add_argument("--scale", nargs="*", default=[], metavar="SITE=DELTA")
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    demand = load_demand(a.demand)
    doc = json.loads((a.plan_dir / "plan.json").read_text())
    known = {s["id"] for s in doc["plan"]["sites"]}
    deltas = {k: int(v) for k, v in (x.split("=", 1) for x in a.scale)}
    unknown = (set(a.drop) | set(deltas)) - known
    if unknown:
        raise SystemExit(f"not sites of the plan: {', '.join(sorted(unknown))} (sites: {', '.join(sorted(known))})")
    sites = tuple(
        PlannedSite(s["id"], s["city"], s["lat"], s["lon"], s["country"], s["jurisdiction"], s["hardware"],
                    s["gpus_per_replica"], s["usd_per_device_hour"],
                    tuple((m, max(1, n + deltas.get(s["id"], 0))) for m, n in sorted(s["replicas"].items())))
        for s in doc["plan"]["sites"] if s["id"] not in a.drop)
    placement = Placement("edited", sites)
    hours = sorted({int(c["check"][:2]) for c in doc["checks"]})  # labels: "HH:00 UTC, ..."
    checks = [Check(h, None) for h in hours] + [Check(h, s.id) for h in hours for s in sites]
    traffic = build_traffic(demand, load_cities(), demand.verify.window_s)
    verifier = Verifier(demand, traffic, LocalBackend(workers=a.workers), note=print)
    t0 = time.perf_counter()
    for o in verifier.run(placement, checks):
        tenant, t = min(o["tenants"].items(), key=lambda kv: kv[1]["attainment"])
        print(f"{o['check']['label']}: {'meets' if passes(o, verifier.attainment) else 'FAILS'}; worst tenant "
              f"{tenant} {t['attainment']:.2%} within the SLO; TTFT p99 {o['ttft_p99_ms']:.0f} ms; "
              f"{o['rejected']} not served")
    print(f"{len(checks)} checks in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
