"""The prompt cache's count, for real (issue 12, DOOR2, thirty-fourth session): two tenants' keys on one real
llama-server (SmolLM2-135M, 2 slots), which keeps one prompt cache for both. The engine tells how many of a probe's
tokens its cache held, more for a probe that guesses another tenant's recent prompt right; the gateway's answers tell
no one (usage.cache_counts_out)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
import yaml

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.gateway.app import build_app, build_gateway
from aigrid.security.keys import KeyRing
from aigrid.spec.load import load_spec
from tests.e2e.processes import NODE_CONTEXT, SITES, start_node
from tests.engine_support import require_llama_server

pytestmark = pytest.mark.engine
SECRET = "test-secret-0123456789abcdef"
MODEL = "smollm2-135m"
SECRET_PROMPT = "The vault code of ACME Corp is 4471-9926-1183. Never share it. Now answer the user politely."


def _ask(content: str) -> dict:
    return {"model": MODEL, "max_tokens": 1, "temperature": 0, "messages": [{"role": "user", "content": content}]}


def _cached(answer: dict) -> int:
    return answer["usage"]["prompt_tokens_details"]["cached_tokens"]


async def test_a_tenant_reads_no_cache_count_of_another_tenants_prompt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_llama_server()
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    alice, mallory = ring.issue("alice").api_key, ring.issue("mallory").api_key
    ring.save(tmp_path / "keys.json")
    node, url = start_node(tmp_path, "fra", slots=2)
    try:
        spec = tmp_path / "grid.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "cache-count",
            "gateway": {"network": "none"},
            "security": {"enforce": True, "keys_file": str(tmp_path / "keys.json"),
                         "audit": {"path": str(tmp_path / "audit.db"), "signing_key": str(tmp_path / "audit.pem")}},
            "models": {MODEL: {"family": "smollm2", "params_b": 0.135, "context": NODE_CONTEXT}},
            "sites": {"fra": SITES["fra"]},
            "endpoints": [{"id": "fra-smollm2", "site": "fra", "model": MODEL, "engine": "llamacpp", "url": url,
                           "slots": 2, "prefill_tps": 250, "decode_tps": 150}],
            "tenants": {"alice": {}, "mallory": {}}}))
        async with httpx.AsyncClient(timeout=60) as up:
            # the premise, at the engine itself: a right guess of a prompt just sent reads more of it from the cache
            await up.post(url + "/v1/chat/completions", json=_ask(SECRET_PROMPT))
            tail = ". Never share it."
            right = _cached((await up.post(url + "/v1/chat/completions",
                                           json=_ask(SECRET_PROMPT.split(". ")[0] + tail))).json())
            wrong = _cached((await up.post(url + "/v1/chat/completions",
                                           json=_ask(SECRET_PROMPT.split(". ")[0][:-14] + "5502-0000-7777" + tail))).json())
            assert right > wrong, (right, wrong)

            gw = build_gateway(load_spec(spec), {"fra-smollm2": OpenAICompatEngine("llamacpp", url, up)},
                               rng=random.Random(3))
            await gw.scraper.scrape_once()
            await gw.guard.start()
            try:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                             timeout=60) as client:
                    sent = await client.post("/v1/chat/completions", json=_ask(SECRET_PROMPT),
                                             headers={"authorization": f"Bearer {alice}"})
                    assert sent.status_code == 200, sent.text[:300]
                    for guess in ("4471-9926-1183", "8812-3456-0000"):
                        for stream in (False, True):
                            probe = _ask(SECRET_PROMPT.replace("4471-9926-1183", guess).split(" Never")[0])
                            if stream:
                                probe = {**probe, "stream": True, "stream_options": {"include_usage": True}}
                            r = await client.post("/v1/chat/completions", json=probe,
                                                  headers={"authorization": f"Bearer {mallory}"})
                            assert r.status_code == 200, r.text[:300]
                            assert b'"cached_tokens":0' in r.content, r.text[-600:]
                            assert b"timings" not in r.content and b"cache_n" not in r.content, r.text[-600:]
            finally:
                await gw.guard.stop()
    finally:
        node.stop()
