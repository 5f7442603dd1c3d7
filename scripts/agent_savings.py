"""What running the agent loop at the site saves: long-haul round trips and end-to-end latency.

Two measurements and one model:

1. live, embedded (default): one real llama-server (SmolLM2-135M) runs the same multi-step agent task
   (two server-side tools, constrained tool calls, temperature 0) twice per client location:
   - loop at the site: the request crosses the client<->site network once, then every model turn and tool
     run happens beside the engine (what the gateway does with server-side tools);
   - loop at the client: every model turn crosses the network (the client calls the grid, reads the tool
     call, runs the tool locally, calls again).
   Network distance is emulated with the demo gateway's model of it: the modelled RTT (aigrid.core.geo.rtt_ms:
   9 ms + 1.45 x the great circle's time in fibre, fitted to Azure's measured round trips), slept once per
   request that crosses it (the demo gateway sleeps half before the send and half before the first byte: the
   same wait).
   Because decoding is greedy, both loops make the same calls; the script checks that they did.
2. live, through a running gateway (--gateway URL): the client-side loop sends each turn as a plain chat
   request through the gateway (which emulates the RTT); the site-side loop sends one request that names
   server-side tools (needs the gateway wiring of aigrid.agents).
3. analytic: for N tool steps, T_client = (N+1)(RTT + m) + N t and T_site = RTT + (N+1) m + N t, with the
   measured model-turn time m and tool time t: the loop at the site saves N x RTT and N round trips.

    .venv/bin/python scripts/agent_savings.py [--repeats 3] [--gateway http://127.0.0.1:8080]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from aigrid.agents import Finished, builtin_tools, run_tool_loop
from aigrid.agents.graph import graph_from_edges
from aigrid.core.geo import distance_km, rtt_ms
from aigrid.core.types import GeoPoint
from aigrid.engines.llama_server import LlamaServerProcess, embedded_config
from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.protocol import Engine, EngineStats, UpstreamResponse

SITE = ("fra", GeoPoint(50.11, 8.68))
CLIENTS = {"Frankfurt": GeoPoint(50.11, 8.68), "Ashburn": GeoPoint(39.04, -77.49),
           "Tokyo": GeoPoint(35.68, 139.69), "Sao Paulo": GeoPoint(-23.55, -46.63)}
RAIL = graph_from_edges([["Paris", "Lyon", 465], ["Paris", "Frankfurt", 570], ["Lyon", "Zurich", 410],
                         ["Zurich", "Frankfurt", 400], ["Lyon", "Milan", 440], ["Paris", "Brussels", 300]])
TASK = {"model": "smollm2-135m", "temperature": 0,
        "messages": [{"role": "user", "content": "What is 1234 * 5678? Then find the rail route from Lyon to Frankfurt."}],
        "tools": [{"type": "function", "function": {"name": "calculator"}},
                  {"type": "function", "function": {"name": "shortest_path"}}]}


class DistantEngine:
    """The engine as a client `rtt_s` away sees it: every request first pays one network round trip."""

    def __init__(self, inner: Engine, rtt_s: float) -> None:
        self.inner, self.rtt_s = inner, rtt_s
        self.kind, self.base_url = inner.kind, inner.base_url
        self.round_trips = 0

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self._open(path, body)

    @asynccontextmanager
    async def _open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.round_trips += 1
        await asyncio.sleep(self.rtt_s)
        async with self.inner.open(path, body) as upstream:
            yield upstream

    async def health(self) -> bool:
        return await self.inner.health()

    async def stats(self) -> EngineStats:
        return await self.inner.stats()

    async def aclose(self) -> None:
        pass


async def finish(engine: Engine, body: dict[str, Any]) -> Finished:
    registry = builtin_tools(graphs={"rail": RAIL})
    fin = None
    async for ev in run_tool_loop(engine, body, registry):
        if isinstance(ev, Finished):
            fin = ev
    assert fin is not None
    return fin


async def at_site(engine: Engine, rtt_s: float) -> tuple[float, Finished, int]:
    start = time.perf_counter()
    await asyncio.sleep(rtt_s)  # the one request from the client to the site (the gateway's emulation)
    fin = await finish(engine, TASK)
    return time.perf_counter() - start, fin, 1


async def at_client(engine: Engine, rtt_s: float) -> tuple[float, Finished, int]:
    distant = DistantEngine(engine, rtt_s)
    start = time.perf_counter()
    fin = await finish(distant, TASK)
    return time.perf_counter() - start, fin, distant.round_trips


def calls(fin: Finished) -> list[tuple[str, str]]:
    return [(s.tool, orjson.dumps(s.arguments, option=orjson.OPT_SORT_KEYS).decode()) for s in fin.steps]


async def live_embedded(repeats: int) -> dict[str, Any]:
    log = Path(tempfile.mkdtemp(prefix="aigrid-savings-")) / "llama-server.log"
    rows = []
    model_ms: list[float] = []
    tool_ms: list[float] = []
    async with LlamaServerProcess(embedded_config(log, context=2048, slots=1, threads=1)) as server, \
            httpx.AsyncClient(timeout=120) as client:
        engine = OpenAICompatEngine("llamacpp", server.base_url, client)
        await finish(engine, TASK)  # warm the prompt cache once, so both loops start equal
        for city, where in CLIENTS.items():
            rtt = rtt_ms(distance_km(where, SITE[1])) / 1000
            site_t, client_t = [], []
            for _ in range(repeats):
                ts, fs, rt_site = await at_site(engine, rtt)
                tc, fc, rt_client = await at_client(engine, rtt)
                if calls(fs) != calls(fc):
                    print(f"warning: the two loops made different calls for {city}: {calls(fs)} vs {calls(fc)}",
                          file=sys.stderr)
                site_t.append(ts)
                client_t.append(tc)
                model_ms.extend([fs.model_ms / fs.model_calls])
                tool_ms.extend(s.duration_ms for s in fs.steps)
            rows.append({"client": city, "rtt_ms": round(rtt * 1000, 1), "steps": len(fs.steps),
                         "model_calls": fs.model_calls, "round_trips_site": rt_site, "round_trips_client": rt_client,
                         "site_ms": round(statistics.median(site_t) * 1000), "client_ms": round(statistics.median(client_t) * 1000),
                         "tools": [s.tool for s in fs.steps]})
    return {"rows": rows, "model_turn_ms": statistics.median(model_ms), "tool_ms": statistics.median(tool_ms)}


async def live_gateway(url: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    async with httpx.AsyncClient(timeout=300, trust_env=False) as client:
        for city in CLIENTS:
            # An EU-only tenant: the model runs in Frankfurt wherever the client is, so the distance is real
            # (the gateway emulates each client-to-site round trip) and the loop's placement matters.
            headers = {"x-aigrid-client-location": city, "x-aigrid-residency": "EU"}
            gateway = OpenAICompatEngine("openai", url, client, headers=headers)
            site_t, client_t, wired = [], [], True
            for _ in range(repeats):
                start = time.perf_counter()
                r = await client.post(url + "/v1/chat/completions", json=TASK, headers=headers)
                site_t.append(time.perf_counter() - start)
                wired = wired and r.status_code == 200 and "aigrid_steps" in r.json()
                start = time.perf_counter()
                fin = await finish(gateway, TASK)
                client_t.append(time.perf_counter() - start)
            rows.append({"client": city, "site": r.headers.get("x-aigrid-site"), "server_side_tools_wired": wired,
                         "site_ms": round(statistics.median(site_t) * 1000),
                         "client_ms": round(statistics.median(client_t) * 1000), "model_calls": fin.model_calls})
    return rows


def analytic(model_ms: float, tool_ms: float, rtts: list[float], steps: list[int]) -> list[dict[str, Any]]:
    out = []
    for rtt in rtts:
        for n in steps:
            client = (n + 1) * (rtt + model_ms) + n * tool_ms
            site = rtt + (n + 1) * model_ms + n * tool_ms
            out.append({"rtt_ms": rtt, "steps": n, "client_ms": round(client), "site_ms": round(site),
                        "saved_ms": round(client - site), "speedup": round(client / site, 2),
                        "round_trips_client": n + 1, "round_trips_site": 1})
    return out


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gateway", help="also measure through a running gateway at this URL")
    args = parser.parse_args()

    live = await live_embedded(args.repeats)
    print(f"## Live, embedded engine (site {SITE[0]}, SmolLM2-135M, medians of {args.repeats})\n")
    print(table(live["rows"], ["client", "rtt_ms", "steps", "model_calls", "round_trips_client",
                               "round_trips_site", "client_ms", "site_ms", "tools"]))
    m, t = live["model_turn_ms"], live["tool_ms"]
    print(f"\nmedian model turn m = {m:.0f} ms, median tool run t = {t:.2f} ms\n")
    print("## Analytic, N tool steps (m and t as measured)\n")
    rtts = sorted({r["rtt_ms"] for r in live["rows"]})
    print(table(analytic(m, t, rtts, [1, 2, 4, 8, 16]),
                ["rtt_ms", "steps", "round_trips_client", "round_trips_site", "client_ms", "site_ms", "saved_ms",
                 "speedup"]))
    if args.gateway:
        print(f"\n## Live, through the gateway at {args.gateway}\n")
        print(table(await live_gateway(args.gateway, args.repeats),
                    ["client", "site", "server_side_tools_wired", "model_calls", "client_ms", "site_ms"]))


if __name__ == "__main__":
    asyncio.run(main())
