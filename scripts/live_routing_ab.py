"""Live A/B of routing policies through the real gateway, selected per request with `x-aigrid-policy`.

Four ENGINE EMULATORS (aigrid-emulator: OpenAI-compatible, realistic prefill/decode timing, batch slots) of
different speeds at four sites at different emulated distances from one client in Frankfurt: a small slow
engine next door (Frankfurt), a mid one in Paris, fast ones in Ashburn and Tokyo. The gateway (`aigrid up`
path, gateway.network: emulate) waits each site's modelled round trip. The same slice of the Azure code
trace (bursty long prompts) is replayed once per policy against the same gateway, one after the other, and
the table reports the client-side TTFT p50/p99 and goodput (TTFT <= 1 s and TPOT <= 100 ms), plus, for
aigrid's policy, the live prediction error read back from /v1/decisions.

    python scripts/live_routing_ab.py [--requests 300] [--speedup 1.0] [--policies balanced round-robin least-loaded] [--misses]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from aigrid.bench import workload
from aigrid.bench.cli import DEFAULT_TRACE
from aigrid.bench.compare import loop_run
from aigrid.bench.procs import Proc
from aigrid.bench.report import Slo, summary
from aigrid.bench.runner import Result, RunConfig, run
from aigrid.engines.llama_server import free_port

MODEL = "emulated"
SLO = Slo(1000.0, 100.0)
"""What goodput counts, and the grid's `slo` in the spec: the operator tells aigrid the SLO it is held to, as a
simulated scenario's `slo` does (before 2026-12-02 20:45 UTC the spec set none: the policy gated on 2 s)."""
# site: (city, lat, lon, slots, prefill ms/token, decode base ms)
SITES = {
    "fra": ("Frankfurt", 50.11, 8.68, 4, 0.20, 12.0),
    "par": ("Paris", 48.86, 2.35, 8, 0.06, 10.0),
    "iad": ("Ashburn", 39.04, -77.49, 32, 0.01, 8.0),
    "nrt": ("Tokyo", 35.68, 139.69, 32, 0.01, 8.0),
}


def spec_text(ports: dict[str, int], gw_port: int) -> str:
    sites = "\n".join(f"  {s}: {{name: {c}, lat: {la}, lon: {lo}, jurisdiction: EU}}"
                      for s, (c, la, lo, *_r) in SITES.items())
    eps = "\n".join(
        f"  - {{id: {s}-emu, site: {s}, model: {MODEL}, engine: vllm, url: 'http://127.0.0.1:{ports[s]}', "
        f"slots: {slots}, prefill_tps: {1000 / pf:.0f}, decode_tps: {1000 / dec:.0f}}}"
        for s, (_c, _la, _lo, slots, pf, dec) in SITES.items())
    return (f"name: live-ab\ngateway: {{host: 127.0.0.1, port: {gw_port}, network: emulate}}\n"
            f"models:\n  {MODEL}: {{family: emulated, params_b: 1.0, context: 32768}}\nsites:\n{sites}\n"
            f"endpoints:\n{eps}\n"
            f"slo: {{ttft_ms: {SLO.ttft_ms}, tpot_ms: {SLO.tpot_ms}}}\n"
            "security: {firewall: {injection: 'off', pii_input: 'off', pii_output: 'off'}, audit: null}\n")


def prediction_error(base: str, n: int) -> tuple[float, float] | None:
    rows = httpx.get(f"{base}/v1/decisions", params={"limit": n}, timeout=10).json()["data"]
    errs = []
    for d in rows:
        served = next((c for c in d["candidates"] if c["endpoint"] == d.get("served_by")), None)
        if served is None or d.get("ttft_ms") is None or len(d.get("attempts", [])) != 1:
            continue
        errs.append(abs(d["ttft_ms"] - served["predicted_ttft_ms"]) / max(d["ttft_ms"], 1e-3))
    if not errs:
        return None
    errs.sort()
    return statistics.median(errs), errs[int(0.9 * (len(errs) - 1))]


def misses(policy: str, results: list[Result]) -> str:
    """The requests outside the SLO: failed, TTFT over 1 s, or TPOT alone over 100 ms (with their figures)."""
    ok = [r for r in results if r.ok]
    late = sorted(round(r.ttft * 1000) for r in ok if r.ttft is not None and r.ttft > 1.0)
    slow = sorted(round(r.tpot * 1000) for r in ok if r.tpot is not None and r.tpot > 0.1
                  and not (r.ttft is not None and r.ttft > 1.0))
    return (f"<!-- {policy}: {len(results) - len(ok)} failed; TTFT over 1 s: {late} ms; "
            f"TPOT alone over 100 ms: {slow} ms -->")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--speedup", type=float, default=1.0)
    ap.add_argument("--trace-start", type=int, default=0)
    ap.add_argument("--policies", nargs="+", default=["balanced", "round-robin", "least-loaded"])
    ap.add_argument("--misses", action="store_true", help="also print each policy's requests outside the SLO")
    ap.add_argument("--dump", type=Path, help="write each policy's decision records to DIR/POLICY.json")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aigrid-live-ab-"))
    procs: list[Proc] = []
    try:
        ports = {s: free_port() for s in SITES}
        for s, (_c, _la, _lo, slots, pf, dec) in SITES.items():
            procs.append(Proc(f"emu-{s}", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(ports[s]),
                                           "--model", MODEL, "--slots", str(slots), "--prefill-ms-per-token", str(pf),
                                           "--prefill-base-ms", "5", "--decode-base-ms", str(dec)], work).start())
        for s in SITES:
            procs[list(SITES).index(s)].wait_ready(f"http://127.0.0.1:{ports[s]}/health", 30)
        gw_port = free_port()
        spec = work / "spec.yaml"
        spec.write_text(spec_text(ports, gw_port))
        gw = Proc("gateway", [sys.executable, "-m", "aigrid.bench.gateway_launch", str(spec), "--port", str(gw_port)],
                  work).start()
        procs.append(gw)
        base = f"http://127.0.0.1:{gw_port}"
        gw.wait_ready(f"{base}/healthz", 60)
        plans = workload.trace(DEFAULT_TRACE.with_name("azure_llm_2023_code.csv"), speedup=a.speedup,
                               count=a.requests, start=a.trace_start, max_prompt_tokens=8000, max_output_tokens=256)
        print(f"{a.requests} requests of the Azure code trace (speedup {a.speedup:g}), client in Frankfurt, "
              f"logs in {work}\n")
        print("| policy | TTFT p50 ms | TTFT p99 ms | goodput | served by (fra/par/iad/nrt) | prediction error p50/p90 |")
        print("|---|---|---|---|---|---|")
        for policy in a.policies:
            cfg = RunConfig((f"{base}/v1",), MODEL, headers=(("x-aigrid-policy", policy),
                                                             ("x-aigrid-client-location", "Frankfurt")))
            result = loop_run(run(cfg, plans))
            s = summary(result, SLO)
            if a.misses:
                print(misses(policy, result.results), flush=True)
            rows = httpx.get(f"{base}/v1/decisions", params={"limit": a.requests}, timeout=10).json()["data"]
            if a.dump:
                a.dump.mkdir(parents=True, exist_ok=True)
                (a.dump / f"{policy}.json").write_text(json.dumps(rows))
            by_site = {site: sum(1 for d in rows if (d.get("served_by") or "").startswith(site)) for site in SITES}
            err = prediction_error(base, a.requests) if policy not in ("round-robin", "least-loaded") else None
            print(f"| {policy} | {s['ttft_ms']['p50']:.0f} | {s['ttft_ms']['p99']:.0f} | {s['goodput']['fraction']:.1%} | "
                  f"{'/'.join(str(by_site[x]) for x in SITES)} | "
                  f"{'-' if err is None else f'{err[0]:.0%} / {err[1]:.0%}'} |", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
