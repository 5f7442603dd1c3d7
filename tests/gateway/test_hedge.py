"""Hedging (`x-aigrid-hedge: on`): a second attempt starts when the first byte is late. A streamed answer's first
byte is its first token, so "late" is against the predicted TTFT; a whole answer's first byte comes once it is
whole, so "late" is against the TTFT and the time to decode its output limit."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from aigrid.gateway.app import Gateway
from aigrid.spec.models import HedgeSpec
from tests.gateway.conftest import audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}]}
HEDGE = {"x-aigrid-hedge": "on"}
FIRST = "iad-smollm2"
"""The endpoint a request of CHAT (no client location) is sent to first."""


def first_late(fakes: dict[str, FakeEngine]) -> None:
    """The first engine's first byte far later than the hedge (0.37 s for a stream here) and the others' at once: the
    hedge starts and wins, the first is cancelled, whatever the machine's load. (It was every engine at 1.0 s, so
    the hedge had 0.63 s to start before the first answered and no hedge was needed.)"""
    for f in fakes.values():
        f.first_byte_delay_s = 0.0
    fakes[FIRST].first_byte_delay_s = 60.0


def hedged(gw: Gateway) -> list[bool]:
    """Which of the last request's attempts were hedges: with its first engine 60 s late, the first-byte deadline
    (5 s at least) also moves a request on to a second engine, with no hedge; the engines' count alone cannot tell."""
    return [bool(a.get("hedge", False)) for a in gw.decisions.recent(1)[0].attempts]


async def test_a_whole_answer_is_not_hedged_for_the_time_it_takes_to_decode(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    """The delay was the streamed one (2 x predicted TTFT + 150 ms) for whole answers too: every whole answer
    longer than that was generated twice at once (here: 1 s for up to 400 tokens)."""
    for f in fakes.values():
        f.first_byte_delay_s = 1.0
    r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 400}, headers=HEDGE)
    assert r.status_code == 200, r.text
    assert sum(len(f.received) for f in fakes.values()) == 1


async def test_a_stream_late_against_its_ttft_is_hedged(client: httpx.AsyncClient, gateway: Gateway,
                                                       fakes: dict[str, FakeEngine]) -> None:
    first_late(fakes)
    r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 400, "stream": True}, headers=HEDGE)
    assert r.status_code == 200, r.text
    assert len(fakes[FIRST].received) == 1 and sum(len(f.received) for f in fakes.values()) == 2
    assert hedged(gateway) == [False, True]


@pytest.mark.parametrize(("hedge", "header", "status", "engine_requests"), [
    (HedgeSpec(), "on", 403, 0),  # the default grid: a client may not double its engine work
    (HedgeSpec(), "off", 200, 1),
    (HedgeSpec(enabled=True), "on", 200, 2),  # hedged anyway: asking changes nothing
    (HedgeSpec(clients_may_ask=True), "on", 200, 2),
])
async def test_a_client_asks_for_hedging_only_where_the_grid_lets_it(
        fakes: dict[str, FakeEngine], tmp_path: Path, hedge: HedgeSpec, header: str, status: int,
        engine_requests: int) -> None:
    """Any caller could send `x-aigrid-hedge: on` where the grid's `gateway.hedge.enabled` was false, and a hedged
    request is charged one answer: its second attempt's prefill is engine work no quota counts, so a tenant doubled
    the engine work it may use at the price of its own (found by helper 121). Now it is a 403 naming the header
    unless the grid says clients may ask; 'off' is always allowed."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"hedge": hedge})})
    for f in fakes.values():  # were the request hedged, the hedge would start at 0.37 s
        f.first_byte_delay_s = 1.0
    if engine_requests == 2:
        first_late(fakes)
    async with serving(spec, fakes) as (client, gw):
        r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 400, "stream": True},
                              headers={"x-aigrid-hedge": header})
        assert r.status_code == status, r.text
        if status == 403:
            error = r.json()["error"]
            assert (error["code"], error["param"]) == ("hedge_not_allowed", "x-aigrid-hedge")
        assert sum(len(f.received) for f in fakes.values()) == engine_requests
        assert len(fakes[FIRST].received) == (engine_requests > 0)
        if engine_requests:
            assert hedged(gw) == [False, True][:engine_requests]
        assert (await audit_rows(gw))[-1]["outcome"] == ("error:hedge_not_allowed" if status == 403 else "ok")
