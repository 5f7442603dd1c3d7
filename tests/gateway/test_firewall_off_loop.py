"""The firewall never stalls the event loop: while a 4 MiB prompt is screened (about 2 s of scoring, on the
firewall's worker thread), 100 other streams keep flowing and the loop stays responsive. Worst case stated
in docs/security.md ("Cost")."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.security.firewall.pipeline import Screened
from aigrid.security.firewall.texts import ModelText
from aigrid.spec.models import GridSpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.serving import serving

STREAMS = 100


def _huge_context(spec: GridSpec) -> GridSpec:
    """A model whose context fits 4 MiB, so the context-length 400 does not refuse the body first, and endpoints of
    STREAMS slots each, so that every stream runs at once (none waits for a slot, to be shed while the others run)."""
    models = {k: m.model_copy(update={"context": 2_000_000}) for k, m in spec.models.items()}
    endpoints = [e.model_copy(update={"slots": STREAMS}) for e in spec.endpoints]
    return spec.model_copy(update={"models": models, "endpoints": endpoints})


async def test_a_4_mib_prompt_is_screened_off_the_event_loop(tmp_path: Path) -> None:
    """Structural, not timed: the big prompt's check (Firewall.check_texts) runs on a thread other than the event
    loop's, and while it is in flight the loop runs a ticker's ticks and delivers the other streams' chunks. A check
    on the loop is one synchronous call: no tick and no chunk can come between its start and its end (a scratch
    Screen.inline_chars past 4 MiB, which reads it in place, fails here: 0 ticks, 0 chunks, the loop's thread).
    Until the thirty-fifth session it asserted the loop's largest lag under half of the request's time, a ratio
    of two timings of a shared machine. The lag is still printed (-s), the figures docs/security.md cites."""
    spec = _huge_context(spec_in(tmp_path))
    # streams that outlast the big request whatever the machine's load (cancelled once it is answered)
    fakes = {e.id: FakeEngine(e.id, words=tuple(f" w{i}" for i in range(2_000))) for e in spec.endpoints}
    for f in fakes.values():
        f.word_delay_s = 0.05
    gw = build_gateway(spec, fakes, rng=random.Random(4), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    limit = spec.gateway.max_body_bytes
    sentence = "The committee reviewed the harbour budget and approved the new ferry timetable. "
    text = (sentence * (limit // len(sentence)))[: limit - 200]
    ticks, chunks = [0], [0]
    received = [0] * STREAMS
    lags: list[float] = []
    screening = asyncio.Event()
    checks: list[tuple[int, int, int]] = []
    """The big prompt's checks: (the thread each ran on, ticks and chunks the loop ran while it was in flight)."""
    firewall = gw.guard.screen.firewall
    check_texts = firewall.check_texts

    def watched(tenant: str, texts: Sequence[ModelText]) -> Screened:
        if sum(len(t.text) for t in texts) < limit // 2:
            return check_texts(tenant, texts)
        ticks_before, chunks_before = ticks[0], chunks[0]
        try:
            return check_texts(tenant, texts)
        finally:
            checks.append((threading.get_ident(), ticks[0] - ticks_before, chunks[0] - chunks_before))

    firewall.check_texts = watched  # type: ignore[method-assign]

    async def ticker() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            ticks[0] += 1
            if screening.is_set():
                lags.append(time.perf_counter() - t0 - 0.01)

    async def stream(c: httpx.AsyncClient, i: int) -> None:
        async with c.stream("POST", "/v1/chat/completions", json={
                "model": "smollm2-135m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            async for _ in r.aiter_raw():
                received[i] += 1
                chunks[0] += 1

    limits = httpx.Limits(max_connections=STREAMS + 10)
    async with serving(build_app(gw)) as s, httpx.AsyncClient(base_url=s.url, timeout=60, limits=limits) as c:
        tick = asyncio.create_task(ticker())
        streams = [asyncio.create_task(stream(c, i)) for i in range(STREAMS)]
        async with asyncio.timeout(60):  # every stream under way (a bound, should the streams never start)
            while not all(received):
                await asyncio.sleep(0.01)
        screening.set()
        started = time.perf_counter()
        big = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": text}]})
        took = time.perf_counter() - started
        screening.clear()
        ended = [(received[i], t.exception() or "ended") for i, t in enumerate(streams) if t.done()]
        for t in (*streams, tick):
            t.cancel()
        await asyncio.gather(*streams, tick, return_exceptions=True)
    assert big.status_code == 200, big.text[:300]
    assert not ended, f"{len(ended)} of {STREAMS} streams ended before the big request (chunks, why): {ended[:3]}"
    assert len(checks) == 1, checks  # the big prompt was read once
    thread, ticks_during, chunks_during = checks[0]
    assert thread != threading.get_ident(), "the 4 MiB prompt was read on the event loop's thread"
    assert ticks_during > 0, "the event loop ran no tick while the 4 MiB prompt was read"
    assert chunks_during > 0, "no chunk reached the other streams while the 4 MiB prompt was read"
    print(f"4 MiB request: {took:.2f} s; event-loop lag while it ran: max {max(lags) * 1000:.0f} ms; while it was "
          f"read: {ticks_during} ticks of the loop, {chunks_during} chunks delivered to {STREAMS} other streams")


async def test_a_request_screened_on_the_worker_shows_its_wait_in_the_metrics(tmp_path: Path) -> None:
    """The firewall worker's queue comes before routing and is in no TTFT figure: a request whose prompt is past
    screen.INLINE_CHARS goes to the worker, and /metrics shows its wait (aigrid_firewall_queue_wait_seconds) and the
    backlog it left (aigrid_firewall_queue_waiting 0); a short prompt, read in place, waits none and is not
    observed."""
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, sleep=_no_sleep)
    await gw.scraper.scrape_once()
    long = "The committee reviewed the harbour budget and approved the new ferry timetable. " * 40  # 3,200
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        for prompt in ("Say hello", long):
            r = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "max_tokens": 4,
                                                          "messages": [{"role": "user", "content": prompt}]})
            assert r.status_code == 200, r.text
        shown = (await c.get("/metrics")).text.splitlines()
    assert "aigrid_firewall_queue_wait_seconds_count 1.0" in shown
    assert "aigrid_firewall_queue_waiting 0.0" in shown
