"""Every route reads its caller's credentials the same way (front_door.with_api_key): the Authorization header,
else `x-api-key` as the bearer key (what the Anthropic SDK and LiteLLM send). Before, chat, completions and
embeddings read Authorization alone: with enforcement on, a client sending its key as x-api-key was a 401
missing_api_key there, while models, files, decisions and Messages served it."""

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
from aigrid.security.principal import Scopes
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

SECRET = "test-secret-0123456789abcdef"
CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}
ROUTES = [("POST", "/v1/chat/completions", CHAT),
          ("POST", "/v1/completions", {"model": "smollm2-135m", "prompt": "Say hello", "max_tokens": 8}),
          ("POST", "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "hi"}),
          ("POST", "/v1/messages", {"model": "smollm2-135m", "max_tokens": 4,
                                    "messages": [{"role": "user", "content": "hi"}]}),
          ("POST", "/v1/responses", {"model": "smollm2-135m", "input": "hi", "max_output_tokens": 8}),
          ("GET", "/v1/models", None), ("GET", "/v1/decisions", None), ("GET", "/v1/grid", None),
          ("GET", "/v1/files", None), ("GET", "/v1/batches", None)]


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 fakes: dict[str, FakeEngine]) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    keys = {"whole": ring.issue("default").api_key,
            "other-model": ring.issue("default", Scopes(models=frozenset({"llama-*"}))).api_key}
    ring.save(tmp_path / "keys.json")
    gw = build_gateway(spec_in(tmp_path, enforce=True), fakes, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        yield c, keys
    await gw.guard.stop()


async def test_a_key_sent_as_x_api_key_is_read_on_every_route(client) -> None:
    c, keys = client
    for method, path, body in ROUTES:
        r = await c.request(method, path, json=body, headers={"x-api-key": keys["whole"]})
        assert r.status_code == 200, (path, r.text)


async def test_a_key_sent_as_x_api_key_keeps_its_scopes_and_a_wrong_one_is_refused(client) -> None:
    """The key read from x-api-key is that key, its scopes included (not the anonymous caller), and a key that is
    not one is a 401 on every route, as in Authorization."""
    c, keys = client
    r = await c.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": keys["other-model"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed", r.text
    for method, path, body in ROUTES:
        r = await c.request(method, path, json=body, headers={"x-api-key": "aig_nope_nope"})
        assert r.status_code == 401 and "invalid API key" in r.json()["error"]["message"], (path, r.text)


TOLD = [(path, body) for _, path, body in ROUTES if path in ("/v1/messages", "/v1/chat/completions")]
"""The two doors whose 401 says how to send a key, each in its own envelope."""
_HEADER_LINE = re.compile(r"'([A-Za-z-]+): ([^']*)'")
"""A header line the message quotes ('Name: value'), `<key>` standing for the key."""


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


@pytest.mark.parametrize(("path", "body"), TOLD, ids=["chat", "messages"])
async def test_a_request_without_a_key_is_told_both_ways_to_send_one_and_each_works(
        client: tuple[httpx.AsyncClient, dict[str, str]], path: str, body: dict[str, Any]) -> None:
    """A request without a key (keys enforced) is told how to send one, in each door's envelope: its 401 names both
    ways every route reads a key (the Authorization header, or `x-api-key`: front_door.with_api_key), and each way it
    names, sent as written with a real key, is served. Until the twenty-eighth session the message named Authorization
    alone, on the Anthropic Messages door too, whose clients send `x-api-key`."""
    c, keys = client
    message = _message(path, await c.post(path, json=body))
    told = {name.lower(): value for name, value in _HEADER_LINE.findall(message)}
    assert set(told) == {"authorization", "x-api-key"}, message
    for name, value in told.items():
        r = await c.post(path, json=body, headers={name: value.replace("<key>", keys["whole"])})
        assert r.status_code == 200, (name, r.text)

