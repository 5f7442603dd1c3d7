"""The plan as files to run: a grid spec for `aigrid up`, a launcher that puts an ENGINE EMULATOR behind every
planned replica, and the simulator scenario of the peak check for `aigrid sim`.

Planned GPUs do not exist yet, so every endpoint is declared as what it will be (`engine: vllm` with a
url) and run-emulated.sh starts `aigrid emulator` processes on those urls, one per site, timed like the
simulator's engine model of that hardware (prefill per token, step time W + h x batch, batch slots, KV
tokens, prefill chunk). The prefill chunk the plan chose for each site's hardware (plan/chunks.py) is an
engine flag the spec has no field for: grid.yaml names it per site in its header comment, the emulators get
it as --chunk-tokens and the check scenarios as each site's chunk_tokens, so `aigrid up` and `aigrid sim`
run the engines the plan was checked with. When the real engines exist, start them with that chunk, point
the urls at them and run `aigrid gateway grid.yaml`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from aigrid.engines.step_cost import EnginePerf
from aigrid.plan.checks import Check, scenario_for
from aigrid.plan.demand import Demand
from aigrid.plan.placement import Placement
from aigrid.plan.traffic import Traffic
from aigrid.sim.hardware import HARDWARE, engine_perf
from aigrid.sim.scenario import Scenario


def _perf(demand: Demand, hardware: str, model: str, gpus: int, usd: float, chunk: int) -> EnginePerf:
    m = next(x for x in demand.models if x.name == model)
    return engine_perf(hardware, m.params_b, m.kv_bytes_per_token, gpus, chunk, usd_per_hour=usd)


def grid_spec(demand: Demand, placement: Placement, port: int = 9100) -> tuple[dict[str, Any], list[list[str]]]:
    """(grid spec as a dict, one `aigrid emulator` argv per site and model)."""
    sites: dict[str, Any] = {}
    endpoints: list[dict[str, Any]] = []
    emulators: list[list[str]] = []
    for s in placement.sites:
        hw = HARDWARE[s.hardware]
        sites[s.id] = {"name": s.city, "lat": round(s.lat, 4), "lon": round(s.lon, 4),
                       "jurisdiction": s.jurisdiction, "hardware": s.hardware,
                       "idle_power_w": hw.idle_w * s.devices, "peak_power_w": hw.peak_w * s.devices}
        for model, n in s.replicas:
            perf = _perf(demand, s.hardware, model, s.gpus_per_replica, s.usd_per_device_hour, s.chunk_tokens)
            first = port
            for r in range(n):
                endpoints.append({
                    "id": f"{s.id}-{model}-{r}", "site": s.id, "model": model, "engine": "vllm",
                    "url": f"http://127.0.0.1:{port}", "slots": perf.max_seqs,
                    "price_in_per_mtok": perf.price_in_per_mtok, "price_out_per_mtok": perf.price_out_per_mtok,
                    "prefill_tps": round(perf.prefill_tps, 1), "decode_tps": round(perf.decode_tps, 1)})
                port += 1
            emulators.append(["emulator", "--port", str(first), "--engines", str(n), "--model", model,
                              "--slots", str(perf.max_seqs), "--prefill-base-ms", f"{perf.pf_step_ms:.4f}",
                              "--prefill-ms-per-token", f"{perf.pf_tok_ms:.6f}",
                              "--decode-base-ms", f"{perf.w_ms:.4f}", "--decode-ms-per-seq", f"{perf.h_seq_ms:.6f}",
                              "--kv-ms-per-token", f"{perf.k_kv_ms:.9f}", "--chunk-tokens", str(perf.chunk_tokens),
                              "--kv-tokens", str(perf.kv_capacity_tokens)])
    spec = {
        "name": f"{demand.name}-plan",
        "gateway": {"network": "emulate", "default_policy": demand.verify.policy},
        "slo": {"ttft_ms": demand.slo.ttft_ms, "tpot_ms": demand.slo.tpot_ms},  # what the plan was checked against
        "models": {m.name: {"family": m.family, "params_b": m.params_b} for m in demand.models},
        "sites": sites,
        "endpoints": endpoints,
        "tenants": {t.name: ({"allowed_jurisdictions": list(t.jurisdictions)} if t.jurisdictions else {})
                    for t in demand.tenants},
    }
    return spec, emulators


def engine_settings(placement: Placement) -> str:
    """Comment lines for grid.yaml: the prefill chunk each site's engines must run with (the plan's timing,
    the simulator's and the emulators' assume it; the spec has no field for engine flags)."""
    lines = []
    for s in placement.sites:
        c = s.chunk_tokens
        lines.append(f"# {s.id} ({s.hardware}): prefill chunk {c} tokens (vLLM --max-num-batched-tokens {c}, "
                     f"SGLang --chunked-prefill-size {c})\n")
    return "".join(lines)


LAUNCHER = """#!/usr/bin/env bash
# Start an ENGINE EMULATOR for every planned replica (timed like the simulator's model of its hardware),
# then the gateway in front of them: bash {dir}/run-emulated.sh [--port 8080]. Ctrl-C stops everything.
# AIGRID=/path/to/aigrid overrides the command. Generated by `aigrid plan`.
set -euo pipefail
here="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
aigrid="${{AIGRID:-aigrid}}"
pids=()
cleanup() {{ for p in "${{pids[@]}}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }}
trap cleanup EXIT INT TERM
rm -f "$here"/emulator-*.log
{starts}
for k in $(seq 0 {last}); do  # every emulator prints its banner once it listens (its log may not exist yet)
  log="$here/emulator-$k.log"
  for _ in $(seq 600); do grep -qs "engine emulator" "$log" && break; sleep 0.1; done
  grep -qs "engine emulator" "$log" || {{ echo "emulator $k did not start within 60 s, see $log" >&2; exit 1; }}
done
"$aigrid" up "$here/grid.yaml" "$@"
"""


def write_grid(out: Path, demand: Demand, traffic: Traffic, placement: Placement, checks: list[Check],
               port: int = 9100) -> list[Path]:
    """grid.yaml, run-emulated.sh, scenario.yaml (the first check) and checks/*.yaml (every check)."""
    peak = checks[0]
    spec, emulators = grid_spec(demand, placement, port)
    header = (f"# Grid spec planned by `aigrid plan` for demand {demand.name!r}: {len(placement.sites)} sites, "
              f"{placement.devices} devices, ${placement.usd_per_month:,.0f} per month.\n"
              "# Endpoints point at engine emulators until the GPUs exist: bash run-emulated.sh\n"
              + engine_settings(placement))
    grid = out / "grid.yaml"
    grid.write_text(header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120))
    starts = "\n".join(f'"$aigrid" {shlex.join(argv)} >"$here/emulator-{k}.log" 2>&1 & pids+=($!)'
                       for k, argv in enumerate(emulators))
    launcher = out / "run-emulated.sh"
    launcher.write_text(LAUNCHER.format(dir=out, starts=starts, last=len(emulators) - 1))
    launcher.chmod(0o755)
    sc = out / "scenario.yaml"
    _scenario_yaml(sc, scenario_for(demand, traffic, placement, peak), f"The peak check of the plan ({peak.label})")
    written = [grid, launcher, sc]
    (out / "checks").mkdir(exist_ok=True)
    for k, check in enumerate(checks):
        path = out / "checks" / f"{k:02d}-{check.hour:02d}h-{check.failed or 'all-up'}.yaml"
        written.append(_scenario_yaml(path, scenario_for(demand, traffic, placement, check), f"Check {check.label}"))
    return written


def _scenario_yaml(path: Path, scenario: Scenario, what: str) -> Path:
    path.write_text(f"# {what} as a simulator scenario: aigrid sim {path}\n"
                    + yaml.safe_dump(scenario.model_dump(mode="json", exclude_defaults=True), sort_keys=False,
                                     allow_unicode=True, width=120))
    return path
