"""The embedded engine for real: llama.cpp's llama-server with SmolLM2-135M, driven through the same
OpenAICompatEngine the gateway uses for every site. Needs `make engine`; skips, saying so, without it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from aigrid.engines.llama_server import LlamaServerConfig, LlamaServerProcess
from aigrid.engines.model_files import find_llama_server, find_model_file
from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.errors import EngineBuildError, EngineUnavailable
from aigrid.gateway.app import build_gateway
from aigrid.gateway.wiring import build_engines, upstream
from tests.gateway.conftest import spec_in

pytestmark = pytest.mark.engine


@pytest.fixture
def engine_config(tmp_path: Path) -> LlamaServerConfig:
    try:
        binary = find_llama_server()
    except EngineBuildError as exc:
        pytest.skip(f"llama-server is not built (run `make engine`): {exc}")
    model = find_model_file()  # installed with the package: missing is a failure, not a skip
    return LlamaServerConfig(binary=binary, model=model, log_path=tmp_path / "llama-server.log",
                             alias="smollm2-135m", slots=2, threads=1)


async def stream_chat(engine: OpenAICompatEngine, question: str) -> str:
    body = json.dumps({
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
    }).encode()
    raw = b""
    async with engine.open("/v1/chat/completions", body) as upstream:
        assert upstream.status == 200, upstream.status
        assert upstream.headers["content-type"].startswith("text/event-stream")
        async for chunk in upstream.body:
            raw += chunk
    events = [line[len(b"data: "):] for line in raw.splitlines() if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    deltas = (json.loads(e)["choices"][0]["delta"] for e in events[:-1] if json.loads(e)["choices"])
    return "".join(d.get("content") or "" for d in deltas)


async def test_real_llama_server_streams_and_reports_metrics(engine_config: LlamaServerConfig) -> None:
    async with LlamaServerProcess(engine_config) as server, httpx.AsyncClient(timeout=120) as client:
        engine = OpenAICompatEngine("llamacpp", server.base_url, client)
        assert await engine.health() is True
        before = await engine.stats()
        assert before.prompt_tokens_total == 0 and before.running == 0

        # Two requests at once: both -np slots decode in the same batches.
        answers = await asyncio.gather(
            stream_chat(engine, "What is the capital of France?"),
            stream_chat(engine, "Name a colour of the sky."),
        )
        assert all(len(a.strip()) > 0 for a in answers), answers

        stats = await engine.stats()
        assert stats.prompt_tokens_total is not None and stats.prompt_tokens_total > 0
        assert stats.generation_tokens_total is not None and stats.generation_tokens_total > 0
        assert stats.tpot_sum_s is not None and stats.tpot_sum_s > 0
        assert (stats.running, stats.waiting) == (0, 0)
    assert "--metrics" in engine_config.log_path.read_text()


async def test_a_keyed_engine_answers_only_the_holder_of_its_key(engine_config: LlamaServerConfig,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid up` starts its engines with a random key so that nothing else on the machine reaches a model past
    the gateway's firewall, quotas and audit. The key travels in the environment, not on the command line, and
    a LLAMA_API_KEY of the caller's own does not lock the gateway out."""
    key = "k-" + "x" * 40
    monkeypatch.setenv("LLAMA_API_KEY", "the-callers-own")
    monkeypatch.setenv("GATEWAY_SECRET", "not-for-engines")
    config = replace(engine_config, api_key=key, hidden_env=frozenset({"GATEWAY_SECRET"}))
    assert key not in repr(config)
    up = upstream()
    try:
        async with LlamaServerProcess(config) as server:
            body = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                assert (await client.post(server.base_url + "/v1/chat/completions", json=body)).status_code == 401
                assert (await client.get(server.base_url + "/metrics")).status_code == 401
            # the gateway's own path: the HTTP/1.1 transport for the POST, the pooled client for probes
            keyed = OpenAICompatEngine("llamacpp", server.base_url, up.client, transport=up.http1,
                                       headers={"authorization": f"Bearer {key}"})
            assert await keyed.health() is True
            assert len((await stream_chat(keyed, "Name a colour.")).strip()) > 0
            assert (await keyed.stats()).generation_tokens_total
            keyless = OpenAICompatEngine("llamacpp", server.base_url, up.client, transport=up.http1)
            with pytest.raises(EngineUnavailable, match="HTTP 401: the engine asks for a key"):
                async with keyless.open("/v1/chat/completions", json.dumps(body).encode()):
                    pass
            assert key.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
            assert f"LLAMA_API_KEY={key}".encode() in environ
            assert not any(v.startswith(b"GATEWAY_SECRET=") for v in environ)
    finally:
        await up.aclose()
    assert key not in config.log_path.read_text()


async def test_a_real_llama_server_says_its_context_a_slot_and_the_gateway_warns_of_less_than_the_spec_s(
        engine_config: LlamaServerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """GET /props' `default_generation_settings.n_ctx` is each slot's context (--ctx-size / --parallel), not the
    whole --ctx-size, and answers the gateway's key (llama-server keys every route but /health): an engine holding
    1024 tokens a slot under a spec that declares the demo's 8192 is one warning of the scraper's, naming both."""
    key = "k-" + "y" * 40
    monkeypatch.setenv("AIGRID_TEST_ENGINE_KEY", key)
    up = upstream()
    try:
        async with LlamaServerProcess(replace(engine_config, ctx_per_slot=1024, api_key=key)) as server:
            keyed = OpenAICompatEngine("llamacpp", server.base_url, up.client, headers={"authorization": f"Bearer {key}"})
            assert await keyed.slot_context() == (1024, 2)
            spec = spec_in(tmp_path)
            endpoints = [e.model_copy(update={"engine": "llamacpp", "url": server.base_url,
                                              "api_key_env": "AIGRID_TEST_ENGINE_KEY"}) for e in spec.endpoints[:1]]
            spec = spec.model_copy(update={"endpoints": endpoints})
            gw = build_gateway(spec, build_engines(spec, {}, up))
            with caplog.at_level("WARNING", logger="aigrid.scraper"):
                await gw.scraper.scrape_once()
                await gw.scraper.scrape_once()
            assert gw.store.snapshot().state(endpoints[0].id).healthy
    finally:
        await up.aclose()
    warned = [r.getMessage() for r in caplog.records if "GET /props" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert f"endpoint {endpoints[0].id}: its engine holds 1024 tokens a slot" in warned[0], warned[0]
    assert "total_slots 2" in warned[0] and "fewer than the 8192 the spec declares" in warned[0], warned[0]
