"""Parity: one small trace through the simulator and through the live gateway (in front of ENGINE EMULATORS
timed like the simulator's engines) — the same routing core must make the same decisions in both worlds.

Both sides see an idle grid (requests are seconds apart), unique prompts (no cache warmth) and a policy
without random tie-breaks. The gateway's telemetry comes from scraping the emulators' vLLM metrics, the
simulator's from its engine model, so tiny differences in predicted TTFT remain: a decision may differ
only where the simulator itself saw the two sites as a near-tie (totals within 0.02).
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from aigrid.core import policies
from aigrid.core.types import GeoPoint, RequestInfo
from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.wiring import build_engines, upstream_client
from aigrid.sim.experiment import replay
from aigrid.sim.geography import load_cities
from aigrid.sim.grid import build_grid
from aigrid.sim.scenario import load_scenario
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


def grid_spec(grid, urls: dict[str, str]) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": "parity",
        "gateway": {"network": "none", "scrape_interval_s": 60, "default_policy": "balanced"},
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
        config = EmulatorConfig(model=endpoint.model, slots=endpoint.max_concurrency,
                                prefill_base_ms=perf.pf_step_ms, prefill_ms_per_token=perf.pf_tok_ms,
                                decode_base_ms=perf.w_ms, decode_ms_per_seq=perf.h_seq_ms)
        server, _ = await serve(config)
        servers.append(server)
        urls[endpoint.id] = f"http://127.0.0.1:{bound_port(server)}"
    client = upstream_client()
    try:
        spec = parse_spec(grid_spec(grid, urls), "parity")
        gw = build_gateway(spec, build_engines(spec, {}, client), rng=random.Random(0))
        live: dict[str, tuple[str, str]] = {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     timeout=30) as c:
            for _, req in requests:
                await gw.scraper.scrape_once()
                assert req.client_location is not None
                r = await c.post("/v1/completions", json={
                    "model": req.model, "max_tokens": OUTPUT_TOKENS,
                    "prompt": f"{req.id} " + "x" * (4 * PROMPT_TOKENS - len(req.id) - 1)},
                    headers={"x-aigrid-client-location": f"{req.client_location.lat},{req.client_location.lon}",
                             "x-aigrid-tenant": req.tenant})
                assert r.status_code == 200, r.text
                live[req.id] = (r.headers["x-aigrid-site"], r.headers["x-aigrid-decision"])
    finally:
        await client.aclose()
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
