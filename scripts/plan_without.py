"""Would a plan still pass without some of its sites or replicas? Re-run the plan's checks on an edited placement.

    python scripts/plan_without.py DEMAND.yaml PLAN_DIR [--drop SITE ...] [--scale SITE=DELTA ...]
        [--hardware SITE=HW ...] [--add CANDIDATE=HW ...] [--chunk HW=TOKENS ...] [--workers N] [--detail] [--loads]

Reads PLAN_DIR/plan.json (written by `aigrid plan`), removes the --drop sites, adds DELTA replicas to each
--scale site (negative to remove), moves each --hardware site to another hardware option of the demand and
opens each --add candidate site (an id of the demand's candidates) with one replica of HW; hardware gets
the demand's price and the prefill chunk the planner would give it (plan/chunks.py). An edit that puts more
devices at a site than its limits allow (max_gpus_per_site, and its supply.limits entry's max_gpus and
max_power_kw: supply.device_cap, the planner's one rule) is refused naming the site; --chunk then sets the
prefill chunk (vLLM's max_num_batched_tokens) of every site of HW in the edited placement, chunks the planner
would not choose included (the simulator judges the TPOT the streams see). Then it runs the same checks as the planner (plan/verify.py: the plan's peak
hours, every site up and each remaining site down) in the simulator and prints each check's verdict. For
questions the planner's own refinement does not ask (it trims replicas, never whole sites), e.g. "is the
sixth site needed?" (docs/planning.md). --loads prints beside each verdict the screen's prediction for that check:
the pooled model's fluid load of the placement at the check's hour with its site down (PooledModel.check_loads;
"-" where a site is not one of the demand's candidates or its hardware not one the screen sizes with).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from aigrid.plan.checks import Check
from aigrid.plan.chunks import DEFAULT_CHUNK
from aigrid.plan.demand import Demand, load_demand
from aigrid.plan.placement import Placement, PlannedSite, cap_of, chunk_of, price_of
from aigrid.plan.pooled import PooledModel
from aigrid.plan.runs import LocalBackend
from aigrid.plan.screen import Screen
from aigrid.plan.supply import candidate_sites
from aigrid.plan.traffic import Traffic, build_traffic
from aigrid.plan.verify import Verifier, passes
from aigrid.sim.geography import load_cities


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demand")
    ap.add_argument("plan_dir", type=Path)
    ap.add_argument("--drop", nargs="*", default=[], metavar="SITE")
    ap.add_argument("--scale", nargs="*", default=[], metavar="SITE=DELTA")
    ap.add_argument("--hardware", nargs="*", default=[], metavar="SITE=HW")
    ap.add_argument("--add", nargs="*", default=[], metavar="CANDIDATE=HW")
    ap.add_argument("--chunk", nargs="*", default=[], metavar="HW=TOKENS",
                    help="the prefill chunk of every site of HW (after the other edits)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--detail", action="store_true", help="per site figures of each failing check")
    ap.add_argument("--loads", action="store_true", help="each check's load by the pooled model (the screen's figure)")
    return ap.parse_args(argv)


def edited(a: argparse.Namespace, demand: Demand, doc: dict) -> Placement:
    """The plan of `doc` (plan.json) with a's edits; SystemExit naming a site or hardware that is not there.
    Also what scripts/plan_sweep.py prices a variant with before running it."""
    known = {s["id"] for s in doc["plan"]["sites"]}
    deltas = {k: int(v) for k, v in (x.split("=", 1) for x in a.scale)}
    moves = dict(x.split("=", 1) for x in a.hardware)
    adds = dict(x.split("=", 1) for x in a.add)
    unknown = (set(a.drop) | set(deltas) | set(moves)) - known
    if unknown:
        raise SystemExit(f"not sites of the plan: {', '.join(sorted(unknown))} (sites: {', '.join(sorted(known))})")
    chunks = dict(x.split("=", 1) for x in a.chunk)
    bad_hw = sorted((set(moves.values()) | set(adds.values()) | set(chunks)) - set(demand.supply.hardware))
    if bad_hw:
        raise SystemExit(f"not hardware options of the demand: {', '.join(bad_hw)}")
    bad_chunk = sorted(f"{hw}={c}" for hw, c in chunks.items() if not (c.isdigit() and 64 <= int(c) <= 65536))
    if bad_chunk:
        raise SystemExit(f"--chunk {' '.join(bad_chunk)}: a chunk is a whole number of tokens from 64 to 65536")
    sites = [
        PlannedSite(s["id"], s["city"], s["lat"], s["lon"], s["country"], s["jurisdiction"], s["hardware"],
                    s["gpus_per_replica"], s["usd_per_device_hour"],
                    tuple((m, max(1, n + deltas.get(s["id"], 0))) for m, n in sorted(s["replicas"].items())),
                    s.get("chunk_tokens", DEFAULT_CHUNK))
        for s in doc["plan"]["sites"] if s["id"] not in a.drop]
    for k, site in enumerate(sites):
        if site.id in moves:
            hw = moves[site.id]
            sites[k] = replace(site, hardware=hw, usd_per_device_hour=price_of(demand, hw)[0],
                               gpus_per_replica=price_of(demand, hw)[1], chunk_tokens=chunk_of(demand, hw))
    cands = candidate_sites(demand, load_cities(), a.demand)
    model = demand.models[0].name
    for cid, hw in adds.items():
        if cid not in cands.id or cid in known:
            raise SystemExit(f"--add {cid}: not a candidate site of the demand, or already in the plan")
        i = cands.index(cid)
        price, gpus = price_of(demand, hw)
        sites.append(PlannedSite(cid, cands.city[i], float(cands.lat[i]), float(cands.lon[i]), cands.country[i],
                                 cands.jurisdiction[i], hw, gpus, price, ((model, 1),), chunk_of(demand, hw)))
    # each site keeps its candidate's limits (a site of no candidate, written by hand: max_gpus_per_site alone)
    sites = [replace(s, max_devices=tuple((h, int(n)) for h, n in zip(cands.hardware, cands.max_devices[
        cands.index(s.id)], strict=True))) if s.id in cands.id else s for s in sites]
    over = [f"{s.id} ({s.devices} x {s.hardware}, its limit {cap_of(demand, s, s.hardware)})" for s in sites
            if s.devices > cap_of(demand, s, s.hardware)]
    if over:
        raise SystemExit(f"more devices than the site's limit (supply.max_gpus_per_site, supply.limits): "
                         f"{', '.join(over)}")
    sites = [replace(s, chunk_tokens=int(chunks[s.hardware])) if s.hardware in chunks else s for s in sites]
    return Placement("edited", tuple(sites))


def check_loads(demand: Demand, traffic: Traffic, placement: Placement, checks: list[Check],
                source: str) -> list[float | None]:
    """Each check's load of `placement` by the pooled model (PooledModel.check_loads), None for every check where a
    site is not a candidate of the demand or its hardware not an option the screen sizes with."""
    cands = candidate_sites(demand, load_cities(), source)
    screen = Screen(demand, traffic, cands)
    hw = list(screen.hw)
    sites = placement.sites
    if any(s.id not in cands.id or s.hardware not in hw for s in sites):
        return [None] * len(checks)
    ids = [s.id for s in sites]
    got = PooledModel(screen).check_loads([cands.index(s.id) for s in sites], [hw.index(s.hardware) for s in sites],
                                          [dict(s.replicas) for s in sites],
                                          [(c.hour, None if c.failed is None else ids.index(c.failed)) for c in checks])
    return list(got)


def main() -> None:
    a = parse_args()
    demand = load_demand(a.demand)
    doc = json.loads((a.plan_dir / "plan.json").read_text())
    placement = edited(a, demand, doc)
    sites = placement.sites
    cities = load_cities()
    print(f"{len(sites)} sites, {placement.devices} devices, ${placement.usd_per_hour:.2f}/h: "
          + ", ".join(f"{x.id} {x.hardware} x {x.devices} (chunk {x.chunk_tokens})" for x in sites))
    hours = sorted({int(c["check"][:2]) for c in doc["checks"]})  # labels: "HH:00 UTC, ..."
    checks = [Check(h, None) for h in hours] + [Check(h, s.id) for h in hours for s in sites]
    traffic = build_traffic(demand, cities, demand.verify.window_s)
    backend = LocalBackend(workers=a.workers)
    verifier = Verifier(demand, traffic, backend, note=print)
    t0 = time.perf_counter()
    try:
        outcomes = verifier.run(placement, checks)
    finally:  # the worker processes end here, not in the interpreter's exit (which printed "Bad file descriptor")
        backend.close()
    loads = check_loads(demand, traffic, placement, checks, a.demand) if a.loads else None
    for k, o in enumerate(outcomes):
        tenant, t = min(o["tenants"].items(), key=lambda kv: kv[1]["attainment"])
        if loads is not None:
            print(f"screen load {'-' if loads[k] is None else f'{loads[k]:.3f}'}; ", end="")
        print(f"{o['check']['label']}: {'meets' if passes(o, verifier.attainment) else 'FAILS'}; worst tenant "
              f"{tenant} {t['attainment']:.2%} within the SLO; TTFT p99 {o['ttft_p99_ms']:.0f} ms; "
              f"{o['rejected']} not served; TPOT p99 {o['tpot_p99_ms'] or 0:.0f} ms, max {o['tpot_max_ms'] or 0:.0f} ms")
        if a.detail and not passes(o, verifier.attainment):
            for sid, st in o["sites"].items():
                print(f"    {sid}: {st['served']} served, {st['bad']} outside the SLO ({st['slow_ttft']} over TTFT, "
                      f"{st['slow_tpot']} over TPOT), utilisation {st['utilization']:.0%}")
    print(f"{len(checks)} checks in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
