"""Prediction error live: stream requests through a running gateway (e.g. `make run`: four real llama.cpp
engines) from the demo's cities, then compare each served decision's predicted TTFT (p50, and p90 coverage)
with the TTFT the gateway observed, before and after a warm-up.

    make run &                       # or any gateway
    python scripts/live_prediction_error.py --url http://127.0.0.1:8080 --warmup 200 --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics

import httpx

CITIES = ["Frankfurt", "Tokyo", "Ashburn", "Sao Paulo", "Paris", "London", "Seoul", "New York"]
WORDS = "the grid routes each request to the best place it can find under the rules".split()


async def one(client: httpx.AsyncClient, rng: random.Random, model: str) -> str | None:
    words = rng.randint(5, 400)
    body = {"model": model, "stream": True, "max_tokens": rng.randint(4, 32),
            "messages": [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(words))}]}
    async with client.stream("POST", "/v1/chat/completions", json=body,
                             headers={"x-aigrid-client-location": rng.choice(CITIES)}) as r:
        await r.aread()
        return r.headers.get("x-aigrid-decision") if r.status_code == 200 else None


def errors(client: httpx.Client, ids: list[str]) -> tuple[list[float], list[bool]]:
    errs, covered = [], []
    for i in ids:
        d = client.get(f"/v1/decisions/{i}").json()
        served = next((c for c in d["candidates"] if c["endpoint"] == d.get("served_by")), None)
        if served is None or d.get("ttft_ms") is None or len(d.get("attempts", [])) != 1:
            continue
        errs.append(abs(d["ttft_ms"] - served["predicted_ttft_ms"]) / max(d["ttft_ms"], 1e-3))
        covered.append(d["ttft_ms"] <= served.get("predicted_ttft_p90_ms", float("inf")))
    return errs, covered


async def drive(url: str, n: int, concurrency: int, seed: int, model: str) -> list[str]:
    rng = random.Random(seed)
    ids: list[str] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def task() -> None:
            async with sem:
                did = await one(client, rng, model)
                if did:
                    ids.append(did)
        await asyncio.gather(*(task() for _ in range(n)))
    return ids


def report(name: str, errs: list[float], covered: list[bool]) -> None:
    if not errs:
        print(f"{name}: no served streams")
        return
    errs = sorted(errs)
    print(f"{name}: {len(errs)} streams, median |error| {statistics.median(errs):.0%}, "
          f"p90 {errs[int(0.9 * (len(errs) - 1))]:.0%}, observed <= predicted p90 in {sum(covered) / len(covered):.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    warm = asyncio.run(drive(a.url, a.warmup, a.concurrency, a.seed, a.model))
    ids = asyncio.run(drive(a.url, a.requests, a.concurrency, a.seed + 1, a.model))
    with httpx.Client(base_url=a.url, timeout=30) as client:
        report("warm-up", *errors(client, warm))
        report("after warm-up", *errors(client, ids))


if __name__ == "__main__":
    main()
