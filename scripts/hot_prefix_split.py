"""One hot prefix through the real gateway: how aigrid's default policy splits it over two equal engines.

The data-plane benchmark's setting (aigrid.bench.compare: two ENGINE EMULATORS, 512 slots each, the gateway
spec it writes), with STREAMS clients each sending 4 streamed chat requests with the same prompt one after
the other. Prints how many requests each engine served and three decisions from the middle of the run.
SRC is the src/ folder the gateway runs from (this checkout's by default; `git archive REV src` for another).

    python scripts/hot_prefix_split.py [--streams 100] [--src SRC]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from aigrid.bench import compare
from aigrid.engines.llama_server import free_port, free_ports


async def load(base: str, streams: int) -> None:
    body = {"model": compare.MODEL, "messages": [{"role": "user", "content": "0 " + "tok " * 100}],
            "max_tokens": 60, "stream": True}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=streams + 10)) as client:
        async def one_client() -> None:
            for _ in range(4):
                async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                    async for _chunk in r.aiter_bytes():
                        pass
        await asyncio.gather(*(one_client() for _ in range(streams)))


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
        asyncio.run(load(base, a.streams))
        rows = httpx.get(f"{base}/v1/decisions", params={"limit": 4 * a.streams}, timeout=10).json()["data"]
        served = collections.Counter(str(d.get("served_by")) for d in rows)
        print(f"{a.streams} streams x 4 requests, one prompt, gateway from {a.src}: served {dict(sorted(served.items()))}"
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
