"""Apps with long system prompts through the real gateway: prefix-cache affinity against round robin, live.

Two ENGINE EMULATORS (the simulator's engine model with its prefix cache for a chat's leading system
message; `--kv-tokens` sizes the cache at a quarter of it) behind `aigrid up` with the data-plane benchmark's
spec (aigrid.bench.compare). CLIENTS closed-loop clients send REQUESTS streamed chat requests each; each
request opens with the system prompt of one of APPS apps (SYSTEM_TOKENS tokens each, drawn at random) and a
question of its own. Every policy gets fresh engines and a fresh gateway, and the same requests in the same
order. Prints TTFT p50 / p90 / p99, the share of prompt tokens the engines found in their prefix caches
(vllm:prefix_cache_hits_total over vllm:prefix_cache_queries_total) and how many requests each engine
served, per policy.

    python scripts/app_prefix_ab.py [--apps 24] [--system-tokens 2000] [--clients 16] [--requests 30]
        [--kv-tokens 120000] [--policies default round-robin least-loaded] [--src SRC]

SRC is the src/ folder the gateway runs from (this checkout's by default; `git archive REV src` for another);
the emulators always run this checkout's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from hot_prefix_split import wait_ready  # noqa: E402

from aigrid.bench import compare  # noqa: E402
from aigrid.engines.llama_server import free_port, free_ports  # noqa: E402


def conversations(a: argparse.Namespace) -> list[list[tuple[int, str, str]]]:
    """Per client, its requests: (app, system prompt, question); the same for every policy."""
    rng = random.Random(a.seed)
    systems = [f"You are the assistant of app {k}. " + f"Rule {k}: answer politely and briefly. " * (
        a.system_tokens * 4 // 40) for k in range(a.apps)]
    return [[(k, systems[k], f"Client {c} question {i}: " + "tell me more " * 20)
             for i in range(a.requests) for k in [rng.randrange(a.apps)]] for c in range(a.clients)]


async def client_loop(http: httpx.AsyncClient, url: str, policy: str | None, work: list[tuple[int, str, str]],
                      ttfts: list[float], served: collections.Counter[str]) -> None:
    headers = {"x-aigrid-policy": policy} if policy else {}
    for _, system, question in work:
        body = {"model": compare.MODEL, "max_tokens": 16, "stream": True,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
        t0 = time.perf_counter()
        async with http.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code != 200:
                raise SystemExit(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
            first = None
            async for line in r.aiter_lines():
                if line.startswith("data: ") and first is None:
                    first = time.perf_counter() - t0
            ttfts.append(first if first is not None else float("nan"))
            served[r.headers.get("x-aigrid-endpoint", r.headers.get("x-aigrid-site", "?"))] += 1


def cache_counter(port: int, kind: str) -> float:
    """An emulated engine's vllm:prefix_cache_{hits,queries}_total (prompt tokens)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f"vllm:prefix_cache_{kind}_total"))


def one_policy(policy: str | None, a: argparse.Namespace, work: list[list[tuple[int, str, str]]]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="aigrid-app-prefix-"))
    emu_port = free_ports(2)
    gw_port = free_port()
    while gw_port in (emu_port, emu_port + 1):
        gw_port = free_port()
    emu = subprocess.Popen([sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(emu_port),
                            "--engines", "2", "--model", compare.MODEL, "--slots", "256", "--prefill-base-ms", "1",
                            "--prefill-ms-per-token", str(a.prefill_ms_per_token), "--decode-base-ms", "10",
                            "--decode-ms-per-seq", "0.05", "--kv-tokens", str(a.kv_tokens)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    compare.AIGRID_PORT = gw_port
    compare.aigrid_spec(folder / "spec.yaml", [emu_port, emu_port + 1])
    env = {**os.environ, "PYTHONPATH": str(a.src.resolve())}
    with open(folder / "gateway.log", "w") as log:
        gw = subprocess.Popen([sys.executable, "-m", "aigrid.cli", "up", str(folder / "spec.yaml"), "--port",
                               str(gw_port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{gw_port}"
    try:
        for url in (f"http://127.0.0.1:{emu_port}/health", f"http://127.0.0.1:{emu_port + 1}/health",
                    f"{base}/healthz"):
            wait_ready(url)
        ttfts: list[float] = []
        served: collections.Counter[str] = collections.Counter()

        async def go() -> None:
            async with httpx.AsyncClient(timeout=60, trust_env=False,
                                         limits=httpx.Limits(max_connections=a.clients)) as http:
                await asyncio.gather(*(client_loop(http, f"{base}/v1/chat/completions", policy, w, ttfts, served)
                                       for w in work))

        t0 = time.perf_counter()
        asyncio.run(go())
        wall = time.perf_counter() - t0
        ttfts.sort()
        q = lambda p: ttfts[min(int(p * len(ttfts)), len(ttfts) - 1)] * 1000  # noqa: E731
        hits = sum(cache_counter(port, "hits") for port in (emu_port, emu_port + 1))
        queries = sum(cache_counter(port, "queries") for port in (emu_port, emu_port + 1))
        print(f"| {policy or 'default'} | {len(ttfts)} | {len(ttfts) / wall:.1f} | {q(0.5):.0f} | {q(0.9):.0f} | "
              f"{q(0.99):.0f} | {hits / max(queries, 1):.0%} | {dict(sorted(served.items()))} |", flush=True)
    finally:
        gw.terminate()
        emu.terminate()
        gw.wait(10)
        emu.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apps", type=int, default=24)
    ap.add_argument("--system-tokens", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=30, help="per client")
    ap.add_argument("--kv-tokens", type=int, default=120_000, help="each engine's KV cache (a quarter caches prefixes)")
    ap.add_argument("--prefill-ms-per-token", type=float, default=0.05)
    ap.add_argument("--policies", nargs="+", default=["default", "round-robin", "least-loaded"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    a = ap.parse_args()
    work = conversations(a)
    print(f"{a.apps} apps x {a.system_tokens}-token system prompts, {a.clients} clients x {a.requests} requests, "
          f"engines caching {a.kv_tokens // 4:,} prefix tokens each")
    print("| policy | requests | req/s | TTFT p50 ms | p90 | p99 | prompt tokens from the cache | served by |")
    print("|---|---|---|---|---|---|---|---|")
    for policy in a.policies:
        one_policy(None if policy == "default" else policy, a, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
