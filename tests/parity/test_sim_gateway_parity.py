"""Parity: the same trace through the simulator and through the live gateway in front of ENGINE EMULATORS
that run the simulator's own engine model (engines/engine_model.py) on the wall clock.

1. Idle grid (requests seconds apart), unique prompts, a policy without random tie-breaks: the same routing
   core must make the same decisions in both worlds. The gateway's telemetry comes from scraping the
   emulators' vLLM metrics, the simulator's from its engine model, so tiny differences in predicted TTFT
   remain: a decision may differ only where the simulator itself saw the two sites as a near-tie.
2. A bounded burst of long prompts that queues at the sites, then one site killed mid-run (its emulators
   drop every connection; the breaker opens, requests fail over): site choices and the TTFT distribution
   must agree within the tolerances stated in that test.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from aigrid.core import policies
from aigrid.core.types import GeoPoint, RequestInfo
from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.sim.experiment import replay, replay_run
from aigrid.sim.geography import load_cities
from aigrid.sim.grid import build_grid
from aigrid.sim.runner import OK
from aigrid.sim.scenario import Fault, load_scenario
from aigrid.spec.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = [("New York", 40.71, -74.01), ("Frankfurt", 50.11, 8.68), ("Tokyo", 35.68, 139.69),
           ("London", 51.51, -0.13), ("Sao Paulo", -23.55, -46.63), ("Chicago", 41.88, -87.63),
           ("Paris", 48.86, 2.35), ("Seoul", 37.57, 126.98), ("Singapore", 1.35, 103.82),
           ("Los Angeles", 34.05, -118.24), ("Madrid", 40.42, -3.70), ("Mumbai", 19.08, 72.88)]
PROMPT_TOKENS, OUTPUT_TOKENS = 200, 32


def trace() -> list[tuple[float, RequestInfo]]:
    out = []
    for i in range(24):
        name, lat, lon = CLIENTS[i % len(CLIENTS)]
        eu = i % 3 == 2
        out.append((2.0 * i, RequestInfo(
            id=f"r{i}", model="llama-3.1-8b", prompt_tokens=PROMPT_TOKENS, max_output_tokens=OUTPUT_TOKENS,
            client_location=GeoPoint(lat, lon), tenant="eu-bank" if eu else "chat",
            allowed_jurisdictions=frozenset({"EU"}) if eu else None)))
    return out


def grid_spec(grid, urls: dict[str, str], network: str = "none", scrape_s: float = 60) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": "parity",
        "gateway": {"network": network, "scrape_interval_s": scrape_s, "default_policy": "balanced"},
        "models": {m.name: {"family": m.family, "params_b": m.params_b} for m in grid.models.values()},
        "sites": {s.id: {"name": s.name, "lat": s.location.lat, "lon": s.location.lon,
                         "jurisdiction": s.jurisdiction, "hardware": s.hardware,
                         "power_budget_w": s.power_budget_w, "idle_power_w": s.idle_power_w,
                         "peak_power_w": s.peak_power_w} for s in grid.sites.values()},
        "endpoints": [{"id": e.id, "site": e.site_id, "model": e.model, "engine": "vllm", "url": urls[e.id],
                       "slots": e.max_concurrency, "price_in_per_mtok": e.price_in_per_mtok,
                       "price_out_per_mtok": e.price_out_per_mtok, "prefill_tps": e.prefill_tps,
                       "decode_tps": e.decode_tps} for e in grid.endpoints],
        "tenants": {"chat": {}, "eu-bank": {"allowed_jurisdictions": ["EU"]}},
        "security": {"audit": None},
    }


async def test_simulator_and_gateway_decide_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(policies.BUILTIN_POLICIES, "balanced",
                        replace(policies.BUILTIN_POLICIES["balanced"], tie_tolerance=0.0))
    scenario = load_scenario(ROOT / "examples" / "sim" / "small.yaml")
    grid = build_grid(scenario, load_cities())
    requests = trace()
    simulated = {d.request_id: d for d in replay(scenario, requests, "balanced")}

    servers, urls = [], {}
    for endpoint, perf in zip(grid.endpoints, grid.perf, strict=True):
        server, _ = await serve(EmulatorConfig.from_perf(perf, endpoint.model))
        servers.append(server)
        urls[endpoint.id] = f"http://127.0.0.1:{bound_port(server)}"
    up = upstream()
    try:
        spec = parse_spec(grid_spec(grid, urls), "parity")
        gw = build_gateway(spec, build_engines(spec, {}, up), rng=random.Random(0))
        live: dict[str, tuple[str, str]] = {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     timeout=30) as c:
            for _, req in requests:
                await gw.scraper.scrape_once()
                assert req.client_location is not None
                r = await c.post("/v1/completions", json={
                    "model": req.model, "max_tokens": OUTPUT_TOKENS, "ignore_eos": True,
                    "prompt": f"{req.id} " + "x" * (4 * PROMPT_TOKENS - len(req.id) - 1)},
                    headers={"x-aigrid-client-location": f"{req.client_location.lat},{req.client_location.lon}",
                             "x-aigrid-tenant": req.tenant})
                assert r.status_code == 200, r.text
                live[req.id] = (r.headers["x-aigrid-site"], r.headers["x-aigrid-decision"])
    finally:
        await up.aclose()
        for server in servers:
            server.close()

    same, near_ties = 0, []
    for _, req in requests:
        sim = simulated[req.id]
        assert sim.chosen is not None
        site = live[req.id][0]
        if req.allowed_jurisdictions is not None:
            assert grid.sites[site].jurisdiction == "EU" and sim.chosen.jurisdiction == "EU"
        if site == sim.chosen.site_id:
            same += 1
            continue
        best = {c.site_id: c.total for c in reversed(sim.ranked)}
        gap = abs(best[sim.chosen.site_id] - best[site])
        near_ties.append((req.id, sim.chosen.site_id, site, round(gap, 4)))
        assert gap <= 0.02, f"{req.id}: simulator chose {sim.chosen.site_id}, gateway {site}, gap {gap:.3f}"
    print(f"\nPARITY: {same}/{len(requests)} identical site choices; near-ties that differed: {near_ties}")
    assert same >= len(requests) - 2


# ---- 2. under load and through a failure ---------------------------------------------------------------
BURST_CITIES = CLIENTS[:8]  # 4 in Europe (Frankfurt, London, Paris, Madrid), 2 in the US, Tokyo, Seoul
KILL_AT, KILLED = 3.0, "eu-west"
SCRAPE_S = 0.5
MAX_LATENESS_MS = 10.0
"""Above this median event-loop lateness (a machine shared with many busy processes) the live side's timing
says more about the machine than about the model, and the burst comparison skips, saying so."""


def burst_trace() -> list[tuple[float, RequestInfo]]:
    """40 requests in 2 s with prompts of 1-6k tokens (enough to queue seconds of prefill at the L40S site),
    then 16 more in 2-5 s across the kill of eu-west at 3 s; every fourth request is EU-only."""
    rng = random.Random(11)
    times = sorted(rng.uniform(0.0, 2.0) for _ in range(40)) + sorted(rng.uniform(2.0, 5.0) for _ in range(16))
    out = []
    for i, t in enumerate(times):
        name, lat, lon = BURST_CITIES[i % len(BURST_CITIES)]
        eu = i % 4 == 3
        out.append((round(t, 3), RequestInfo(
            id=f"b{i}", model="llama-3.1-8b", prompt_tokens=rng.choice((1000, 2000, 4000, 6000)),
            max_output_tokens=OUTPUT_TOKENS, client_location=GeoPoint(lat, lon), tenant="eu-bank" if eu else "chat",
            allowed_jurisdictions=frozenset({"EU"}) if eu else None)))
    return out


async def run_live(grid, requests: list[tuple[float, RequestInfo]]) -> tuple[dict[str, dict], float]:  # type: ignore[no-untyped-def]
    """Replay `requests` at their times through a live gateway (emulated network) on emulators; kill the
    emulators of KILLED at KILL_AT. Per request id: status, first site tried, serving site, gateway TTFT;
    and the event loop's median lateness in ms (how busy the machine was: every live step pays it)."""
    servers, urls = [], {}
    for endpoint, perf in zip(grid.endpoints, grid.perf, strict=True):
        server, emu = await serve(EmulatorConfig.from_perf(perf, endpoint.model))
        servers.append((endpoint.site_id, server, emu))
        urls[endpoint.id] = f"http://127.0.0.1:{bound_port(server)}"
    up = upstream()
    loop = asyncio.get_running_loop()
    sent: dict[str, tuple[int, str | None]] = {}
    try:
        spec = parse_spec(grid_spec(grid, urls, network="emulate", scrape_s=SCRAPE_S), "parity")
        gw = build_gateway(spec, build_engines(spec, {}, up), rng=random.Random(0))
        await gw.scraper.scrape_once()
        await gw.scraper.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     timeout=60) as c:
            t0 = loop.time() + 0.05

            async def one(t: float, req: RequestInfo) -> None:
                await asyncio.sleep(max(t0 + t - loop.time(), 0.0))
                assert req.client_location is not None
                r = await c.post("/v1/completions", json={
                    "model": req.model, "max_tokens": req.max_output_tokens, "ignore_eos": True, "stream": True,
                    "prompt": f"{req.id} " + "x" * (4 * req.prompt_tokens - len(req.id) - 1)},
                    headers={"x-aigrid-client-location": f"{req.client_location.lat},{req.client_location.lon}",
                             "x-aigrid-tenant": req.tenant})
                sent[req.id] = (r.status_code, r.headers.get("x-aigrid-decision"))

            async def kill() -> None:
                await asyncio.sleep(max(t0 + KILL_AT - loop.time(), 0.0))
                for site, server, emu in servers:
                    if site == KILLED:
                        server.close()
                        emu.kill()

            lateness: list[float] = []
            done = asyncio.Event()

            async def probe() -> None:
                while not done.is_set():
                    t = loop.time()
                    await asyncio.sleep(0.01)
                    lateness.append(loop.time() - t - 0.01)

            prober = asyncio.create_task(probe())
            await asyncio.gather(kill(), *(one(t, req) for t, req in requests))
            done.set()
            await prober
        await gw.scraper.stop()
        records = {r.decision.request_id: r for r in gw.decisions.recent(1000)}
    finally:
        await up.aclose()
        for _, server, _ in servers:
            server.close()
    site_of = {e.id: e.site_id for e in grid.endpoints}
    out = {}
    for rid, (status, decision_id) in sent.items():
        rec = records.get(decision_id) if decision_id else None
        first = rec.attempts[0]["endpoint"] if rec is not None and rec.attempts else None
        out[rid] = {"ok": status == 200 and rec is not None and rec.status == "ok",  # not cut off mid-stream
                    "first": site_of.get(first) if first else None,
                    "served": site_of.get(rec.served_by) if rec is not None and rec.served_by else None,
                    "ttft_ms": rec.ttft_ms if rec is not None else None}
    return out, statistics.median(lateness) * 1000.0


def quantiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[int(0.9 * (len(xs) - 1))], xs[-1]


async def test_under_a_burst_and_a_site_failure() -> None:
    scenario = load_scenario(ROOT / "examples" / "sim" / "small.yaml")
    # the live gateway's settings: one gateway, metrics scraped every SCRAPE_S (fresh: no lag beyond it),
    # its breaker (3 consecutive failures, 10 s), 3 attempts; the outage never ends within the trace
    scenario = scenario.model_copy(update={
        "gateway": scenario.gateway.model_copy(update={
            "count": 1, "telemetry_interval_s": SCRAPE_S, "telemetry_lag_s": 0.0, "breaker_failures": 3,
            "circuit_cooldown_s": 10.0, "max_attempts": 3}),
        "faults": [Fault(kind="outage", at_s=KILL_AT, sites=[KILLED])]})
    grid = build_grid(scenario, load_cities())
    requests = burst_trace()
    sim = replay_run(scenario, requests, "balanced")
    assert sim.decisions is not None
    order = [req.id for _, req in sorted(requests, key=lambda tr: tr[0])]
    sim_first: dict[str, str] = {}
    for d in sim.decisions:
        if d.chosen is not None:
            sim_first.setdefault(d.request_id, d.chosen.site_id)
    sim_ok = {rid for i, rid in enumerate(order) if sim.status[i] == OK}
    sim_ttft = {rid: float(sim.ttft_s[i]) * 1000 for i, rid in enumerate(order) if sim.status[i] == OK}

    live, lag_ms = await run_live(grid, requests)
    live_ok = {rid for rid, r in live.items() if r["ok"]}
    same_first = sum(1 for rid in order if live[rid]["first"] is not None and live[rid]["first"] == sim_first.get(rid))
    both = sorted(sim_ok & live_ok)
    s50, s90, smax = quantiles([sim_ttft[r] for r in both])
    l50, l90, lmax = quantiles([live[r]["ttft_ms"] for r in both])
    per_request = statistics.median(abs(live[r]["ttft_ms"] - sim_ttft[r]) / sim_ttft[r] for r in both)
    after = [rid for t, req in requests if t > KILL_AT + 0.5 for rid in [req.id]]
    print(f"\nPARITY under load: first site identical {same_first}/{len(order)}; served sim {len(sim_ok)} live "
          f"{len(live_ok)}; TTFT p50/p90/max ms sim {s50:.0f}/{s90:.0f}/{smax:.0f} live {l50:.0f}/{l90:.0f}/"
          f"{lmax:.0f}; per-request median |live - sim| / sim {per_request:.1%}; event-loop lateness {lag_ms:.1f} ms")
    if lag_ms > MAX_LATENESS_MS:
        pytest.skip(f"the machine is too busy for a wall-clock comparison: the event loop ran {lag_ms:.0f} ms "
                    f"late on median (over {MAX_LATENESS_MS:g} ms)")
    # Tolerances. Measured on the shared 2-core machine (docs/simulator.md): 49-52 of 56 first choices
    # identical, TTFT p50 192-198 (sim) vs 190-257 ms (live), p90 396-447 vs 390-741 ms. Live steps carry
    # the machine's scheduling delay (the event loop's lateness, 2-6 ms in those runs; every request pays it
    # at each of its ~10 wake-ups) and every difference in an early choice cascades through the queues, so
    # the bounds grow with the measured lateness while still catching a different timing law or routing.
    assert same_first >= 0.75 * len(order)
    # served in one world and not the other: not counted for a request sent to the dead site before it died (the
    # EU-only ones can go nowhere else), whose fate is whether its 32 tokens ended before the kill. That turns on
    # which of eu-west's two identical replicas the long prompts sent at 2.0-2.7 s (b39, b43: 6k, 4k tokens) join,
    # a near-tie each world breaks with its own random draw (balanced's tie_tolerance 0.02; the simulator scored
    # b43 0.9407 and 0.9315; with the tolerance 0 the sets still swapped, 3 of 3 runs): the replica that takes one
    # steps at ~180 ms (a 2k-token prefill chunk in each step) instead of 26 ms until the kill, and its decoding
    # requests end after it. The engine model itself agrees in both worlds (scripts/parity_one_engine.py,
    # docs/simulator.md). 7 Dec 2026, 3 runs: 0, 4 and 5 requests served in one world only, every one of them
    # here (b7, b11 against b15, b23: the two replicas' sets swapped)
    caught = {rid for t, req in requests for rid in [req.id]
              if t < KILL_AT and KILLED in (sim_first.get(rid), live[rid]["first"])}
    assert len((sim_ok ^ live_ok) - caught) <= 2, sorted(sim_ok ^ live_ok)
    assert l50 <= 1.5 * s50 + 30 + 10 * lag_ms and s50 <= 1.5 * l50 + 30
    # the tail moves most: a request still queued at eu-west when it dies starts over elsewhere. Its p90 (the
    # 4th slowest of ~42) is the noisiest figure: on 2026-12-03, same code, the simulator 1,018 ms every run
    # and live 408-854 ms over seven runs (a fresh clone failed at 1.75x with live 518 ms): the simulator's
    # tail after the failure is the pessimistic one, by up to 2.5x
    assert l90 <= 1.75 * s90 + 100 + 20 * lag_ms and s90 <= 2.5 * l90 + 100
    # the failure: nothing is served from the dead site once its breaker is open, in either world, and
    # EU-only requests (eu-west is the only EU site) are refused in both
    assert all(live[rid]["served"] != KILLED for rid in after)
    for rid in after:
        i = order.index(rid)
        assert int(sim.endpoint[i]) < 0 or grid.endpoints[int(sim.endpoint[i])].site_id != KILLED
