#!/usr/bin/env python3
"""Live right-sizing through the real gateway process: `model: auto` from a tenant with a quality target,
two model sizes, held-out prompts with known labels.

The two "models" are ENGINE EMULATORS (aigrid emulator: OpenAI-compatible timing stand-ins that generate
filler text, not models; only one real small model exists on this machine): small-1b next to the client
(Frankfurt, cheap) and large-70b in Ashburn (10x the price). The prompts are the test split of
../shared/data/model-routing (MMLU subjects, GSM8K problems and MT-Bench questions the estimate never saw),
so each routed prompt's quality is known from RouteLLM's labels: the small model's label when it went to
small-1b, the large one's when it went to large-70b. Prints where easy prompts (the mid-size model answered
correctly, or scored 10 on MT-Bench) and hard ones (the large model did better) were sent, the realised
quality against always-large, and what the estimate's operating table promised for the target.

    python scripts/live_right_size.py [--per-file 150] [--quality-target 0.05] [--data ../shared/data/model-routing]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

from aigrid.bench.procs import Proc
from aigrid.engines.llama_server import free_port
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.routing_data import RoutingData, concat, read_routing_csv, split_mask

FILES = ("mmlu_mixtral_vs_gpt4.csv", "gsm8k_mixtral_vs_gpt4.csv", "mt_bench_mixtral_vs_gpt4.csv")


def spec_text(ports: dict[str, int], gw_port: int, target: float) -> str:
    return f"""name: live-right-size
gateway: {{host: 127.0.0.1, port: {gw_port}, network: emulate}}
models:
  small-1b: {{family: small, params_b: 1.0, context: 32768}}
  large-70b: {{family: large, params_b: 70.0, context: 32768}}
sites:
  fra: {{name: Frankfurt, lat: 50.11, lon: 8.68, jurisdiction: EU}}
  iad: {{name: Ashburn, lat: 39.04, lon: -77.49, jurisdiction: US}}
endpoints:
  - {{id: fra-small, site: fra, model: small-1b, engine: vllm, url: 'http://127.0.0.1:{ports["small"]}', slots: 16,
     prefill_tps: 5000, decode_tps: 100, price_in_per_mtok: 0.05, price_out_per_mtok: 0.10}}
  - {{id: iad-large, site: iad, model: large-70b, engine: vllm, url: 'http://127.0.0.1:{ports["large"]}', slots: 16,
     prefill_tps: 1000, decode_tps: 25, price_in_per_mtok: 0.50, price_out_per_mtok: 1.00}}
tenants:
  auto: {{right_size: {{quality_target: {target}}}}}
security: {{firewall: {{injection: 'off', pii_input: 'off', pii_output: 'off'}}, audit: null,
           abuse: {{action: 'off'}}}}
"""


def held_out(data_dir: Path, per_file: int, seed: int) -> RoutingData:
    rng = np.random.default_rng(seed)
    parts = []
    for name in FILES:
        d = read_routing_csv(data_dir / name)
        d = d.subset(split_mask(d, "test"))
        keep = np.zeros(len(d), bool)
        keep[rng.choice(len(d), min(per_file, len(d)), replace=False)] = True
        parts.append(d.subset(keep))
    return concat(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-file", type=int, default=150)
    ap.add_argument("--quality-target", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model-routing")
    a = ap.parse_args()
    data = held_out(a.data, a.per_file, a.seed)
    work = Path(tempfile.mkdtemp(prefix="aigrid-live-right-size-"))
    procs: list[Proc] = []
    try:
        ports = {"small": free_port(), "large": free_port()}
        for size, model, pf in (("small", "small-1b", "0.02"), ("large", "large-70b", "0.1")):
            procs.append(Proc(f"emu-{size}", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port",
                                              str(ports[size]), "--model", model, "--slots", "16",
                                              "--prefill-ms-per-token", pf, "--prefill-base-ms", "5"], work).start())
        for p, size in zip(procs, ports, strict=True):
            p.wait_ready(f"http://127.0.0.1:{ports[size]}/health", 30)
        gw_port = free_port()
        spec = work / "spec.yaml"
        spec.write_text(spec_text(ports, gw_port, a.quality_target))
        gw = Proc("gateway", [sys.executable, "-m", "aigrid.bench.gateway_launch", str(spec), "--port",
                              str(gw_port)], work).start()
        procs.append(gw)
        base = f"http://127.0.0.1:{gw_port}"
        gw.wait_ready(f"{base}/healthz", 60)
        served: list[str] = []
        ttft: list[float] = []
        with httpx.Client(base_url=base, timeout=60) as client:
            for prompt in data.prompts:
                r = client.post("/v1/chat/completions", json={
                    "model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": prompt}]},
                    headers={"x-aigrid-tenant": "auto", "x-aigrid-client-location": "Frankfurt"})
                r.raise_for_status()
                served.append(r.headers["x-aigrid-model"])
                ttft.append(r.elapsed.total_seconds() * 1000)
    finally:
        for p in reversed(procs):
            p.stop()
    large = np.array([m == "large-70b" for m in served])
    easy = data.small >= 1.0
    hard = (data.large > data.small)
    quality = np.where(large, data.large, data.small)
    table = QualityEstimator.load().table
    assert table is not None
    tau = table.threshold_for(a.quality_target)
    share, drop = table.at(tau)
    print(f"{len(data)} held-out prompts ({a.per_file} per file, test split), quality target {a.quality_target:.0%} "
          f"-> threshold {tau:.4f} on the estimated gain; emulated engines; logs in {work}")
    print("| | prompts | sent to large-70b |\n|---|---|---|")
    print(f"| easy (the mid-size model answered correctly) | {easy.sum()} | {large[easy].mean():.1%} |")
    print(f"| hard (the large model did better) | {hard.sum()} | {large[hard].mean():.1%} |")
    print(f"| all | {len(data)} | {large.mean():.1%} |")
    rel = (data.large.mean() - quality.mean()) / data.large.mean()
    print(f"\nrealised quality {quality.mean():.4f} vs always-large {data.large.mean():.4f} (relative drop {rel:.2%}) "
          f"and always-small {data.small.mean():.4f}; the operating table (out of fold, training data) promised "
          f"{share:.1%} large calls and a {drop:.2%} drop")
    print(f"request latency (whole non-streamed answer, client side) median: small-1b "
          f"{np.median(np.array(ttft)[~large]):.0f} ms, large-70b {np.median(np.array(ttft)[large]):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
