"""security.isolate_prefix_cache: every request to a vLLM engine carries its tenant's `cache_salt` (a keyed hash of
the tenant, gateway/cache_salt.py), so a tenant's prompt never hits the prefix blocks another tenant's left in the
engine's cache (a timing side channel of what others send); engines without the field get nothing added."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from aigrid.gateway.app import build_app, build_gateway
from aigrid.security.keys import KeyRing
from aigrid.spec.models import BatchSpec, GridSpec, TenantSpec
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

SECRET = "test-secret-0123456789abcdef"
MODEL = "smollm2-135m"
CHAT = [{"role": "system", "content": "You are the claims assistant. " * 20}, {"role": "user", "content": "hello"}]

PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": MODEL, "max_tokens": 4, "messages": CHAT}),
    "chat streamed": ("/v1/chat/completions", {"model": MODEL, "max_tokens": 4, "messages": CHAT, "stream": True}),
    "fan-out (n=2)": ("/v1/chat/completions", {"model": MODEL, "max_tokens": 4, "messages": CHAT, "n": 2}),
    "completions": ("/v1/completions", {"model": MODEL, "max_tokens": 4, "prompt": "hello"}),
    "responses": ("/v1/responses", {"model": MODEL, "max_output_tokens": 16, "input": CHAT}),
    "messages": ("/v1/messages", {"model": MODEL, "max_tokens": 4, "system": CHAT[0]["content"],
                                  "messages": CHAT[1:]}),
}


def _spec(tmp: Path, kind: str, on: bool, n: int) -> GridSpec:
    (tmp / str(n)).mkdir()  # each gateway's own audit log and batch files; one key file
    spec = spec_in(tmp / str(n), enforce=True, isolate_prefix_cache=on, keys_file=str(tmp / "keys.json"))
    batch = BatchSpec(dir=str(tmp / str(n) / "batches"), poll_s=0.05, stale_s=1.0, retry_s=0.0)
    return spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"batch": batch}),
        "endpoints": [e.model_copy(update={"engine": kind}) for e in spec.endpoints],
        "tenants": {**spec.tenants, "alpha": TenantSpec(), "beta": TenantSpec()}})


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    issued = {"alpha": ring.issue("alpha").api_key, "alpha-2": ring.issue("alpha").api_key,
              "beta": ring.issue("beta").api_key}
    ring.save(tmp_path / "keys.json")
    return issued


@pytest.fixture
async def grid(tmp_path: Path, keys: dict[str, str]) -> AsyncIterator[Callable[..., Any]]:
    """grid(kind, on, engines) -> an async client of a gateway whose endpoints are all of engine `kind`."""
    opened: list[Any] = []

    async def make(kind: str, on: bool, engines: dict[str, Any]) -> httpx.AsyncClient:
        gw = build_gateway(_spec(tmp_path, kind, on, len(opened)), engines, rng=random.Random(3), sleep=_no_sleep)
        await gw.scraper.scrape_once()
        await gw.guard.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw")
        opened.append((gw, client))
        return client

    yield make
    for gw, client in opened:
        await client.aclose()
        if gw.batches is not None:
            await gw.batches.stop()
        await gw.guard.stop()


def _fakes(tmp_path: Path) -> dict[str, FakeEngine]:
    return {e.id: FakeEngine(e.id) for e in spec_in(tmp_path).endpoints}


async def _salts(c: httpx.AsyncClient, engines: dict[str, Any], key: str, path: str, body: dict[str, Any]) -> list:
    """The `cache_salt` of every engine request one client request made (absent: None)."""
    for e in engines.values():
        e.received.clear()
    r = await c.post(path, headers={"authorization": f"Bearer {key}"}, json=body)
    assert r.status_code == 200, r.text
    got = [req.get("cache_salt") for e in {id(e): e for e in engines.values()}.values() for req in e.received]
    assert got, "no engine request"
    return got


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
async def test_each_tenant_has_one_salt_on_every_path_and_two_tenants_differ(grid, keys, tmp_path: Path,
                                                                             kind: str) -> None:
    engines = _fakes(tmp_path)
    c = await grid(kind, True, engines)
    seen: dict[str, set] = {"alpha": set(), "beta": set()}
    for name, (path, body) in PATHS.items():
        for key in ("alpha", "alpha-2", "beta"):
            salts = await _salts(c, engines, keys[key], path, body)
            assert None not in salts, (name, salts)  # before: no salt was sent on any path
            seen[key.split("-")[0]].update(salts)
    assert len(seen["alpha"]) == 1 and len(seen["beta"]) == 1, seen  # one salt a tenant, whichever key or path
    assert seen["alpha"] != seen["beta"]
    assert all("alpha" not in s and "beta" not in s for s in seen["alpha"] | seen["beta"])  # never the name


async def test_a_batchs_lines_carry_their_tenants_salt(grid, keys, tmp_path: Path) -> None:
    engines = _fakes(tmp_path)
    c = await grid("vllm", True, engines)
    path, body = PATHS["chat"]
    direct = await _salts(c, engines, keys["alpha"], path, body)
    assert None not in direct
    for e in engines.values():
        e.received.clear()
    auth = {"authorization": f"Bearer {keys['alpha']}"}
    data = b"".join(orjson.dumps({"custom_id": f"l{i}", "method": "POST", "url": path, "body": body}) + b"\n"
                    for i in range(2))
    f = await c.post("/v1/files", headers=auth, files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    assert f.status_code == 200, f.text
    b = await c.post("/v1/batches", headers=auth, json={"input_file_id": f.json()["id"], "endpoint": path,
                                                         "completion_window": "24h"})
    assert b.status_code == 200, b.text
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        got = (await c.get(f"/v1/batches/{b.json()['id']}", headers=auth)).json()
        if got["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.01)
    assert got["status"] == "completed", got
    assert [req.get("cache_salt") for e in engines.values() for req in e.received] == direct * 2


async def test_the_tool_loops_every_turn_carries_the_tenants_salt(grid, keys, tmp_path: Path) -> None:
    engine = ScriptedEngine([{"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
                             {"content": "4"}] * 2)
    engines = {e.id: engine for e in spec_in(tmp_path).endpoints}
    c = await grid("vllm", True, engines)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "2+2?"}],
            "tools": [{"type": "function", "function": {"name": "calculator"}}]}
    alpha = await _salts(c, engines, keys["alpha"], "/v1/chat/completions", body)
    assert len(alpha) == 2 and len(set(alpha)) == 1 and None not in alpha, alpha  # both model turns
    plain = await _salts(c, engines, keys["alpha"], *PATHS["chat"])
    assert plain == alpha[:1]  # the same tenant's salt as on a plain chat


async def test_a_clients_own_salt_isolates_further_but_never_joins_another_tenant(grid, keys, tmp_path: Path) -> None:
    engines = _fakes(tmp_path)
    c = await grid("vllm", True, engines)
    path, body = PATHS["chat"]
    own = await _salts(c, engines, keys["alpha"], path, body)
    other = await _salts(c, engines, keys["beta"], path, body)
    mine = await _salts(c, engines, keys["alpha"], path, {**body, "cache_salt": "project-x"})
    again = await _salts(c, engines, keys["alpha-2"], path, {**body, "cache_salt": "project-x"})
    theirs = await _salts(c, engines, keys["beta"], path, {**body, "cache_salt": "project-x"})
    assert mine == again and mine != own  # the tenant's own group, apart from its other requests
    assert theirs != mine and theirs != other  # the same client salt in another tenant is another salt
    assert "project-x" not in {*mine, *theirs}
    copied = await _salts(c, engines, keys["beta"], path, {**body, "cache_salt": own[0]})
    assert copied != own  # naming another tenant's salt does not share its cache


@pytest.mark.parametrize(("kind", "on"), [("llamacpp", True), ("embedded", True), ("vllm", False)])
async def test_no_salt_where_the_engine_does_not_read_it_or_the_setting_is_off(grid, keys, tmp_path: Path,
                                                                               kind: str, on: bool) -> None:
    salted = _fakes(tmp_path)
    contrast = await grid("vllm", True, salted)
    engines = _fakes(tmp_path)
    c = await grid(kind, on, engines)
    for path, body in PATHS.values():
        assert None not in await _salts(contrast, salted, keys["alpha"], path, body)  # vLLM, the setting on
        assert set(await _salts(c, engines, keys["alpha"], path, body)) == {None}
    path, body = PATHS["chat"]  # a client's own is passed on as it was
    assert await _salts(c, engines, keys["alpha"], path, {**body, "cache_salt": "mine"}) == ["mine"]
