"""Through the gateway, a tenant's `retrieve` reads the site's public documents and its own, never another
tenant's, on the chat and Responses doors alike (helper 132, 5 Dec 2026: checked, sound)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from aigrid.gateway.app import build_app, build_gateway
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, spec_in

MODEL = "smollm2-135m"


class _Fixed:
    model, dimensions = "fixed", 2

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        return np.tile(np.array([1.0, 0.0], np.float32), (len(texts), 1)), len(texts)


async def test_a_tenant_retrieves_public_documents_and_its_own_never_another_s(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    engine = ScriptedEngine([])
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(2), sleep=_no_sleep)
    gw.agents.stores.embedder = _Fixed()
    for site in spec.sites:
        await gw.agents.stores.load(site, [("hours.md", "The store opens at 9.")])
        await gw.agents.stores.load(site, [("bank.md", "eu-bank's vault code is 4711.")], tenant="eu-bank")
    await gw.scraper.scrape_once()
    await gw.guard.start()
    retrieve = {"type": "function", "function": {"name": "retrieve"}}
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "What is the vault code?"}], "tools": [retrieve]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            results = {}
            for tenant in ("default", "eu-bank"):
                engine.replies = [call("retrieve", query="vault code", k=5), answer("ok")]
                r = await c.post("/v1/chat/completions", headers={"x-aigrid-tenant": tenant}, json=ask)
                assert r.status_code == 200, r.text
                results[tenant] = r.json()["aigrid_steps"][0]["result"]
            assert "hours.md" in results["default"] and "4711" not in results["default"]
            assert "hours.md" in results["eu-bank"] and "4711" in results["eu-bank"]
            engine.replies = [call("retrieve", query="vault code", k=5), answer("ok")]
            r = await c.post("/v1/responses", headers={"x-aigrid-tenant": "default"}, json={
                "model": MODEL, "input": "What is the vault code?", "tools": [{"type": "function", "name": "retrieve"}]})
            assert r.status_code == 200, r.text
            turns = [m for m in engine.received[-1]["messages"] if "retrieve result" in str(m.get("content"))]
            assert turns and "hours.md" in turns[0]["content"] and "4711" not in turns[0]["content"]
    finally:
        await gw.guard.stop()
