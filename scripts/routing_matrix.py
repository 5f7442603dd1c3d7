"""The routing scoreboard: aigrid's default policy against every baseline, per scenario and utilisation.

For each scenario, a first round-robin run at the file's load measures its mean utilisation; the load is then
scaled linearly to each target utilisation (the measured utilisation of each run is printed beside it). Every
run uses the same gateways and telemetry lag (default 16 gateways, 2 s), every policy the same traffic.
Prints one table per scenario and load, and a verdict per row: the default must have the highest goodput,
a p99 TTFT at most 1.05x the best baseline's and a p50 within 1.1x of the best p50.

    python scripts/routing_matrix.py examples/sim/global.yaml examples/sim/bursty.yaml --loads 0.3 0.6 0.8 0.9

`--wait-limits 30s 5s 1slo` runs the policies once per longest wait of a standard request in the admission
queue (seconds, or a multiple of the TTFT SLO: gateway.admission.max_wait_s / max_wait_slo), on the same
traffic and load factors; each row names its limit and the requests its queue shed.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from aigrid.core.policies import DEFAULT_POLICY
from aigrid.sim.experiment import arrivals_from, simulate
from aigrid.sim.geography import load_cities
from aigrid.sim.grid import build_grid
from aigrid.sim.metrics import summarize
from aigrid.sim.routers import make_router
from aigrid.sim.scenario import Scenario, load_scenario
from aigrid.sim.workload import build_workload

BASELINES = ["round-robin", "least-loaded", "power-of-two", "nearest", "lowest-latency", "llm-d", "dynamo"]


def wait_limit(text: str) -> dict[str, dict[str, float | None]]:
    """"30s" or "2slo": the admission settings that make it a standard request's longest wait."""
    if text.endswith("slo"):
        return {"max_wait_slo": {"standard": float(text.removesuffix("slo"))}}
    return {"max_wait_s": {"standard": float(text.removesuffix("s"))}, "max_wait_slo": {"standard": None}}


def configure(path: str, gateways: int, lag: float, limit: str | None = None) -> Scenario:
    sc = load_scenario(path)
    update: dict[str, object] = {"count": gateways, "telemetry_lag_s": lag}
    if limit is not None:
        adm = sc.gateway.admission
        changes = {k: {**(getattr(adm, k) or {}), **v} for k, v in wait_limit(limit).items()}
        update["admission"] = adm.model_validate({**adm.model_dump(), **changes})
    gw = sc.gateway.model_copy(update=update)
    return sc.model_copy(update={"gateway": gw, "sweep": []})


def run_one(args: tuple[str, int, float, float, str] | tuple[str, int, float, float, str, str | None]
            ) -> dict[str, object]:
    path, gateways, lag, factor, policy, *rest = args
    limit = rest[0] if rest else None
    sc = configure(path, gateways, lag, limit)
    cities = load_cities()
    w = build_workload(sc, cities, load=factor)
    arr = arrivals_from(sc, w, cities)
    grid = build_grid(sc, cities)
    router, pol = make_router(policy, frozenset({sc.central_site}) if sc.central_site else frozenset(),
                              sc.slo.ttft_ms)
    m = summarize(sc, grid, w, simulate(sc, grid, arr, router, policy, pol))
    return {"scenario": sc.name, "factor": factor, "policy": policy, "wait_limit": limit, **m.summary()}


def verdict(rows: list[dict[str, object]], default: str) -> str:
    me = next(r for r in rows if r["policy"] == default)
    others = [r for r in rows if r["policy"] != default]
    if not others:
        return "no baseline in this run"
    best_good = max(float(r["goodput"]) for r in others)  # type: ignore[arg-type]
    best_p99 = min(float(r["ttft_p99_ms"]) for r in others)  # type: ignore[arg-type]
    best_p50 = min(float(r["ttft_p50_ms"]) for r in rows)  # type: ignore[arg-type]
    checks = [("goodput", float(me["goodput"]) >= best_good),  # type: ignore[arg-type]
              ("p99<=1.05x", float(me["ttft_p99_ms"]) <= 1.05 * best_p99),  # type: ignore[arg-type]
              ("p50<=1.1x", float(me["ttft_p50_ms"]) <= 1.1 * best_p50)]  # type: ignore[arg-type]
    return " ".join(f"{name}:{'ok' if ok else 'MISS'}" for name, ok in checks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="+")
    ap.add_argument("--loads", nargs="+", type=float, default=[0.3, 0.6, 0.8, 0.9])
    ap.add_argument("--gateways", type=int, default=16)
    ap.add_argument("--lag", type=float, default=2.0)
    ap.add_argument("--policies", nargs="+", default=[DEFAULT_POLICY, *BASELINES])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write every row here")
    ap.add_argument("--wait-limits", nargs="+", default=[None], metavar="LIMIT",
                    help="a standard request's longest wait in the admission queue: 30s, 5s, 1slo, 2slo ...")
    a = ap.parse_args()
    out: list[dict[str, object]] = []
    with ProcessPoolExecutor(a.workers) as pool:
        probes = list(pool.map(run_one, [(p, a.gateways, a.lag, 1.0, "round-robin") for p in a.scenarios]))
        for path, probe in zip(a.scenarios, probes, strict=True):
            u1 = float(probe["mean_utilization"])  # type: ignore[arg-type]
            for load in a.loads:
                factor = load / u1
                for limit in a.wait_limits:
                    rows = list(pool.map(run_one, [(path, a.gateways, a.lag, factor, pol, limit)
                                                   for pol in a.policies]))
                    out.extend(rows)
                    print(f"\n## {probe['scenario']} at {load:.0%} utilisation (load x{factor:.4f}, "
                          f"{a.gateways} gateways, {a.lag:g} s lag" + (f", wait limit {limit}" if limit else "") + ")")
                    print("| policy | TTFT p50 | p99 | goodput | shed | util | pred. error p50/p90 | "
                          "TTFT/floor p50/p99 |")
                    print("|---|---|---|---|---|---|---|---|")
                    for r in rows:
                        print(f"| {r['policy']} | {r['ttft_p50_ms']:,.0f} | {r['ttft_p99_ms']:,.0f} | "
                              f"{float(r['goodput']):.2%} | {r.get('shed', 0)} | "  # type: ignore[arg-type]
                              f"{float(r['mean_utilization']):.2f} | "  # type: ignore[arg-type]
                              f"{r['pred_err_p50']}/{r['pred_err_p90']} | "
                              f"{r['floor_ratio_p50']}/{r['floor_ratio_p99']} |")
                    print(f"verdict ({a.policies[0]}): {verdict(rows, a.policies[0])}", flush=True)
                    if a.json:  # written as it goes: a long run that is stopped keeps its finished rows
                        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
