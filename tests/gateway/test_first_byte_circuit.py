"""One tenant's long but legal prompts open no endpoint's circuit for the others (review RV6 of brief TOKEST, item 3).
An attempt's first-byte deadline is factor x the predicted TTFT within [min_s, max_s] (proxy.FirstByteDeadline); the
prediction counts the request's own prefill, so a long prompt's is long and max_s can hold the deadline under it. A
miss there is the request's size, not the engine's failure: until review RV6 it counted toward the circuit (three
opened it), so a tenant's three long prompts to a slow site took that site from everyone for the cooldown."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.models import FirstByteSpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.short_deadline import ShortDeadline

SILENT = "nrt-smollm2"
LONG = "word " * 1600  # about 1,600 tokens by the estimate: over 6 s of prefill at the demo's 250 tokens a second
SHORT = "Say hello"


async def _ask_in_japan(tmp_path: Path, fakes: dict[str, FakeEngine], prompt: str, times: int) -> tuple[int, list]:
    """`times` streamed requests of `prompt` kept in Japan (nrt the one site), nrt silent with a first-byte ceiling of
    1 s: nrt's consecutive failures after them, and each decision's first attempt."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(
        update={"first_byte_timeout": FirstByteSpec(factor=10, min_s=0.2, max_s=1)})})
    gw = build_gateway(spec, fakes, rng=random.Random(0), sleep=_no_sleep)
    gw.proxy._deadline = ShortDeadline(**spec.gateway.first_byte_timeout.model_dump(), short=(SILENT,))
    await gw.scraper.scrape_once()
    fakes[SILENT].first_byte_delay_s = 30  # connected, silent until the deadline
    firsts = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://g") as c:
        for _ in range(times):
            r = await c.post("/v1/chat/completions", headers={"x-aigrid-residency": "JP"}, json={
                "model": "smollm2-135m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16,
                "stream": True})
            assert r.status_code == 502, r.text  # no other site may serve it
            d = gw.decisions.get(r.headers["x-aigrid-decision"])
            assert d is not None
            firsts.append(d.attempts[0])
    return gw.store._live[SILENT].breaker.failures, firsts


async def test_long_prompts_whose_deadline_is_under_their_predicted_wait_open_no_circuit(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    failures, firsts = await _ask_in_japan(tmp_path, fakes, LONG, 3)
    assert [a["endpoint"] for a in firsts] == [SILENT] * 3
    assert failures == 0  # 3 before review RV6: the circuit open
    assert all("under the" in a["error"] and "predicted for this request" in a["error"] for a in firsts), firsts


async def test_a_short_prompts_miss_of_a_generous_deadline_still_counts(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    failures, firsts = await _ask_in_japan(tmp_path, fakes, SHORT, 1)
    assert firsts[0]["endpoint"] == SILENT and "no first byte within 1.0 s" == firsts[0]["error"]
    assert failures == 1
