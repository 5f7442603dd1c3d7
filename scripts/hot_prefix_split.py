"""One hot prefix through the real gateway: how aigrid's default policy splits it over two equal engines.

The data-plane benchmark's setting (aigrid.bench.compare: two ENGINE EMULATORS, 512 slots each, the gateway
spec it writes), with STREAMS clients each sending 4 streamed chat requests with the same prompt one after
the other (`--per-stream`), sent by the project's bench client. Prints the bench's request rate, TTFT and
TPOT (the data-plane benchmark's columns), how many requests each engine served, how evenly the two engines
shared the streams from moment to moment (each engine's running requests from its /metrics every 50 ms:
the mean and 90th percentile of |a - b| / (a + b), 0 an even split, 1 all on one; an even total can hide a
load that swings from one engine to the other), and three decisions from the middle of the run.
SRC is the src/ folder the gateway runs from (this checkout's by default; `git archive REV src` for another).

    python scripts/hot_prefix_split.py [--streams 100] [--per-stream 4] [--src SRC]
    python scripts/hot_prefix_split.py --rate 400 --runs 3 [--policy round-robin] [--unique]
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

from aigrid.bench import compare
from aigrid.bench.report import Slo, summary
from aigrid.bench.runner import Run, RunConfig, run
from aigrid.engines.llama_server import free_port, free_ports


async def running(client: httpx.AsyncClient, url: str) -> int:
    text = (await client.get(url)).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running"))


async def sample_split(urls: list[str], samples: list[float], stop: asyncio.Event) -> None:
    """|a - b| / (a + b) of the two engines' running requests every 50 ms until `stop`."""
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            a, b = await asyncio.gather(*(running(client, u) for u in urls))
            if a + b > 0:
                samples.append(abs(a - b) / (a + b))
            await asyncio.sleep(0.05)


async def load(base: str, a: argparse.Namespace, metrics: list[str]) -> tuple[Run, list[float]]:
    """`a.streams` closed-loop clients of the project's bench client (aigrid.bench: the compare harness's
    requests, 32-token prompts, 16-32 output tokens, one repeated prompt), or with `a.rate` its Poisson
    sweep's requests at that rate for 4 s; the engines' split sampled meanwhile."""
    if a.rate:
        plans = compare.sweep_plans(a.rate, 4.0)
    else:
        plans = compare.closed_plans(a.streams, a.streams * a.per_stream, (16, 32), random.Random(a.streams))
    headers = (("x-aigrid-policy", a.policy),) if a.policy else ()
    config = RunConfig((f"{base}/v1",), compare.MODEL, concurrency=0 if a.rate else a.streams, timeout_s=60.0,
                       unique_prompts=a.unique, headers=headers, drain_s=compare.DRAIN_S)
    samples: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_split(metrics, samples, stop))
    result = await run(config, plans)
    stop.set()
    await sampler
    return result, samples


def report(outcome: tuple[Run, list[float]], a: argparse.Namespace) -> None:
    result, split = outcome
    load = f"Poisson {a.rate:g}/s" if a.rate else f"{a.streams} streams x {a.per_stream} requests"
    figures = summary(result, Slo())
    print(f"{load}, {'a unique prompt each' if a.unique else 'one prompt'}, policy {a.policy or 'default'}, "
          f"gateway from {a.src}: {figures['completed']} completed, {figures['failed']} failed; "
          f"{figures['request_rate']:.0f} req/s, TTFT p50 {figures['ttft_ms']['p50']:.1f} ms, p99 "
          f"{figures['ttft_ms']['p99']:.1f} ms; TPOT p50 {figures['tpot_ms']['p50']:.1f} ms", flush=True)
    split.sort()
    if split:
        print(f"  imbalance of the running requests |a - b| / (a + b), {len(split)} samples: mean "
              f"{sum(split) / len(split):.2f}, p90 {split[int(0.9 * (len(split) - 1))]:.2f}", flush=True)


def wait_ready(url: str, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--per-stream", type=int, default=4, help="requests each client sends one after the other")
    ap.add_argument("--rate", type=float, help="open loop instead: the data-plane benchmark's Poisson sweep "
                    "step at this rate (requests/s, 4 s)")
    ap.add_argument("--policy", help="route with this policy (x-aigrid-policy) instead of the default")
    ap.add_argument("--unique", action="store_true", help="a different prompt per request (no hot prefix)")
    ap.add_argument("--runs", type=int, default=1, help="load the same gateway this many times, one after the other")
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aigrid-hot-prefix-"))
    emu_port = free_ports(2)  # the emulator's two engines listen on emu_port and emu_port + 1
    gw_port = free_port()
    while gw_port in (emu_port, emu_port + 1):
        gw_port = free_port()
    emu = subprocess.Popen([sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(emu_port),
                            "--engines", "2", "--model", compare.MODEL, "--slots", "512", "--prefill-base-ms", "0.2",
                            "--prefill-ms-per-token", "0.01", "--decode-base-ms", "10", "--decode-ms-per-seq", "0.05"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    compare.AIGRID_PORT = gw_port
    compare.aigrid_spec(work / "spec.yaml", [emu_port, emu_port + 1])
    env = {**os.environ, "PYTHONPATH": str(a.src.resolve())}
    with open(work / "gateway.log", "w") as log:
        gw = subprocess.Popen([sys.executable, "-m", "aigrid.cli", "up", str(work / "spec.yaml"), "--port", str(gw_port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{gw_port}"
    try:
        for url in (f"http://127.0.0.1:{emu_port}/health", f"http://127.0.0.1:{emu_port + 1}/health", f"{base}/healthz"):
            wait_ready(url)
        metrics = [f"http://127.0.0.1:{p}/metrics" for p in (emu_port, emu_port + 1)]
        for _ in range(a.runs - 1):
            report(asyncio.run(load(base, a, metrics)), a)
        result, split = asyncio.run(load(base, a, metrics))
        report((result, split), a)
        rows = httpx.get(f"{base}/v1/decisions", params={"limit": min(len(result.results), 1000)},
                         timeout=10).json()["data"]
        served = collections.Counter(str(d.get("served_by")) for d in rows)
        print(f"  the last {len(rows)} decisions: served {dict(sorted(served.items()))}"
              + (f"; statuses {dict(collections.Counter(d.get('status') for d in rows))}" if "None" in served else ""))
        rows.sort(key=lambda d: d["at"])
        for d in rows[len(rows) // 2:len(rows) // 2 + 3]:
            print(" ", d["reason"], [(c["endpoint"], c["total"], c["notes"][2:4]) for c in d["candidates"]])
    finally:
        gw.terminate()
        emu.terminate()
        gw.wait(10)
        emu.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
