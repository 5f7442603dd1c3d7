"""`aigrid bench` against a real embedded engine: llama.cpp's llama-server with SmolLM2-135M on CPU.
A handful of short requests; needs `make engine` and skips, saying so, without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrid.bench import workload
from aigrid.bench.report import Slo, summary
from aigrid.bench.runner import RunConfig, run
from aigrid.engines.llama_server import LlamaServerConfig, LlamaServerProcess
from tests.engine_support import engine_config as real_engine_config

pytestmark = pytest.mark.engine


@pytest.fixture
def engine_config(tmp_path: Path) -> LlamaServerConfig:
    return real_engine_config(tmp_path / "llama-server.log", slots=2)


async def test_bench_streams_from_llama_server(engine_config: LlamaServerConfig) -> None:
    async with LlamaServerProcess(engine_config) as server:
        url = server.base_url + "/v1"
        chat = await run(RunConfig((url,), "smollm2-135m", concurrency=2, timeout_s=60),
                         workload.closed(4, 24, 8))
        plain = await run(RunConfig((url,), "smollm2-135m", chat=False, stream=False, concurrency=1, timeout_s=60),
                          workload.closed(1, 16, 4))
    s = summary(chat, Slo(ttft_ms=30_000, tpot_ms=10_000))
    assert s["completed"] == 4, s["errors"]
    for r in chat.results:
        assert r.ttft is not None and r.e2e is not None and 0 < r.ttft < r.e2e
        assert r.output_tokens == 8  # llama-server reports usage; ignore_eos makes it generate all 8
        assert r.tpot is not None and r.tpot > 0 and len(r.itl) >= 1
    assert s["output_tokens_per_s"] > 0 and s["goodput"]["fraction"] == 1.0
    p = summary(plain, Slo())
    assert p["completed"] == 1 and plain.results[0].ttft is None and plain.results[0].output_tokens == 4
