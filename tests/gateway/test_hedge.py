"""Hedging (`x-aigrid-hedge: on`): a second attempt starts when the first byte is late. A streamed answer's first
byte is its first token, so "late" is against the predicted TTFT; a whole answer's first byte comes once it is
whole, so "late" is against the TTFT and the time to decode its output limit."""

from __future__ import annotations

import httpx

from tests.gateway.fake_engine import FakeEngine

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}]}
HEDGE = {"x-aigrid-hedge": "on"}


async def test_a_whole_answer_is_not_hedged_for_the_time_it_takes_to_decode(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    """The delay was the streamed one (2 x predicted TTFT + 150 ms) for whole answers too: every whole answer
    longer than that was generated twice at once (here: 1 s for up to 400 tokens)."""
    for f in fakes.values():
        f.first_byte_delay_s = 1.0
    r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 400}, headers=HEDGE)
    assert r.status_code == 200, r.text
    assert sum(len(f.received) for f in fakes.values()) == 1


async def test_a_stream_late_against_its_ttft_is_hedged(client: httpx.AsyncClient,
                                                       fakes: dict[str, FakeEngine]) -> None:
    for f in fakes.values():
        f.first_byte_delay_s = 1.0
    r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 400, "stream": True}, headers=HEDGE)
    assert r.status_code == 200, r.text
    assert sum(len(f.received) for f in fakes.values()) == 2
