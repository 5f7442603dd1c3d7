"""A request without a key (keys enforced) is told how to send one, in each door's envelope: its 401 names both
ways every route reads a key (the Authorization header, or `x-api-key`: front_door.with_api_key), and each way it
names, sent as written with a real key, is served. Until the twenty-eighth session the message named Authorization
alone, on the Anthropic Messages door too, whose clients send `x-api-key`."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.gateway.app import build_app, build_gateway
from aigrid.security.keys import KeyRing
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

SECRET = "test-secret-0123456789abcdef"
MESSAGES = ("/v1/messages", {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
CHAT = ("/v1/chat/completions", {"model": "smollm2-135m", "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "hi"}]})
_HEADER_LINE = re.compile(r"'([A-Za-z-]+): ([^']*)'")
"""A header line the message quotes ('Name: value'), `<key>` standing for the key."""


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               fakes: dict[str, FakeEngine]) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    key = ring.issue("default").api_key
    ring.save(tmp_path / "keys.json")
    gw = build_gateway(spec_in(tmp_path, enforce=True), fakes, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        yield c, key
    await gw.guard.stop()


def _message(door: str, r: httpx.Response) -> str:
    assert r.status_code == 401, r.text
    body: dict[str, Any] = r.json()
    if door == "/v1/messages":  # Anthropic's envelope
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error", body
    else:
        assert body["error"]["code"] == "missing_api_key", body
    message = body["error"]["message"]
    assert isinstance(message, str)
    return message


@pytest.mark.parametrize(("path", "body"), [MESSAGES, CHAT], ids=["messages", "chat"])
async def test_a_request_without_a_key_is_told_both_ways_to_send_one_and_each_works(
        grid: tuple[httpx.AsyncClient, str], path: str, body: dict[str, Any]) -> None:
    c, key = grid
    message = _message(path, await c.post(path, json=body))
    told = {name.lower(): value for name, value in _HEADER_LINE.findall(message)}
    assert set(told) == {"authorization", "x-api-key"}, message
    for name, value in told.items():
        r = await c.post(path, json=body, headers={name: value.replace("<key>", key)})
        assert r.status_code == 200, (name, r.text)

