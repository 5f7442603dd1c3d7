"""Every door's answer says in `model` the grid model that served it, as the `x-aigrid-model` header does: a
request for large-70b that a family fallback served with small-1b (the large model's one engine down) is answered
`model: small-1b` by chat (the engine's own name, passed through), by the Messages API (the Message and a stream's
message_start: Anthropic's `model` is the model that handled the request) and by the Responses API (the Response,
whole, streamed, stored). Until the thirty-fourth session the Messages and Responses doors wrote the model the
request named (issue 12, ATK2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from aigrid.gateway.app import Gateway
from aigrid.spec.load import load_spec
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import SPEC

FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}
TURN = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture
async def fallback() -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """The right-size grid with large-70b's one engine (iad-large) down: large-70b is served by small-1b."""
    spec = load_spec(SPEC)
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " says", " hi")) for e in spec.endpoints}
    fakes["iad-large"].down = True
    async with serving(spec, fakes) as (c, gw):
        yield c, gw


def _events(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_chat_says_the_model_that_served(fallback: Any) -> None:
    c, _ = fallback
    r = await c.post("/v1/chat/completions", json={"model": "large-70b", "messages": TURN, "max_tokens": 8},
                     headers=FRANKFURT)
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == "small-1b", r.text
    assert r.json()["model"] == "small-1b"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_message_says_the_model_that_served(fallback: Any, stream: bool) -> None:
    c, _ = fallback
    r = await c.post("/v1/messages", json={"model": "large-70b", "messages": TURN, "max_tokens": 8,
                                           "stream": stream}, headers=FRANKFURT)
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == "small-1b", r.text
    if stream:
        start = next(e for e in _events(r.text) if e["type"] == "message_start")
        assert start["message"]["model"] == "small-1b", start
    else:
        assert r.json()["model"] == "small-1b", r.text


@pytest.mark.parametrize("stream", [False, True])
async def test_a_response_says_the_model_that_served(fallback: Any, stream: bool) -> None:
    c, _ = fallback
    r = await c.post("/v1/responses", json={"model": "large-70b", "input": "What is 2 + 2?",
                                            "max_output_tokens": 8, "stream": stream}, headers=FRANKFURT)
    assert r.status_code == 200 and r.headers["x-aigrid-model"] == "small-1b", r.text
    if stream:
        done = next(e for e in _events(r.text) if e["type"] == "response.completed")["response"]
    else:
        done = r.json()
    assert done["model"] == "small-1b", done
    stored = await c.get(f"/v1/responses/{done['id']}")
    assert stored.status_code == 200 and stored.json()["model"] == "small-1b", stored.text


async def test_a_background_response_says_the_model_that_served_once_answered(fallback: Any) -> None:
    c, gw = fallback
    r = await c.post("/v1/responses", json={"model": "large-70b", "input": "What is 2 + 2?", "max_output_tokens": 8,
                                            "background": True}, headers=FRANKFURT)
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    try:
        for _ in range(3000):  # its run, in the gateway's background: polled up to 30 s (a loaded machine is late)
            done = (await c.get(f"/v1/responses/{r.json()['id']}")).json()
            if done["status"] not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.01)
    finally:
        await gw.background.stop()
    assert (done["status"], done["model"]) == ("completed", "small-1b"), done
