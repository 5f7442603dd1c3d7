"""An endpoint's circuit breaker in /metrics (gateway/metrics.py): aigrid_endpoint_circuit (0 closed, 1 half-open,
2 open) and aigrid_endpoint_circuit_opens_total, by site and endpoint. Before, no metric showed a circuit at all: a
site failing every request at low traffic, its health checks passing and each request answered elsewhere, was seen
by no alert (docs/observability.md, AigridCircuitReopening)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.telemetry.circuit import CircuitBreaker
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
JP_ONLY = {"x-aigrid-client-location": "Tokyo", "x-aigrid-residency": "JP"}
NRT = {"site": "nrt", "endpoint": "nrt-smollm2"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of `name{labels}` in the /metrics text (labels in any order), or None."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{") and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


async def test_an_endpoints_circuit_and_its_openings_are_in_the_metrics(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    clock = Clock()
    gw = build_gateway(spec_in(tmp_path), fakes, clock=clock, rng=random.Random(7), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as client:

        async def read() -> tuple[float | None, float | None]:
            text = (await client.get("/metrics")).text
            return sample(text, "aigrid_endpoint_circuit", NRT), sample(text, "aigrid_endpoint_circuit_opens_total", NRT)

        async def fail_three() -> None:
            for _ in range(3):  # the only endpoint the residency allows, failing: no other to answer
                assert (await client.post("/v1/chat/completions", json=CHAT, headers=JP_ONLY)).status_code == 502

        assert await read() == (0.0, 0.0)  # closed at the first health check; its count shown from 0
        fra = sample((await client.get("/metrics")).text, "aigrid_endpoint_circuit", {"endpoint": "fra-smollm2"})
        assert fra == 0.0
        fakes["nrt-smollm2"].down = True  # its health not checked yet: only the failures open the circuit
        await fail_three()
        assert await read() == (2.0, 1.0)  # open as it opened, before any health check
        fakes["nrt-smollm2"].down = False
        await gw.scraper.scrape_once()
        assert await read() == (2.0, 1.0)  # healthy, still cooling down
        fakes["nrt-smollm2"].down = True
        clock.t += CircuitBreaker().cooldown_s + 1
        await gw.scraper.scrape_once()
        assert await read() == (1.0, 1.0)  # cooled down, its health check failing: half-open
        fakes["nrt-smollm2"].down = False
        await gw.scraper.scrape_once()
        assert await read() == (0.0, 1.0)  # a passing health check closes it
        fakes["nrt-smollm2"].down = True
        await fail_three()  # failing again: opened again, counted again
        assert await read() == (2.0, 2.0)
