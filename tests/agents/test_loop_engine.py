"""The real thing: a multi-step tool loop on the embedded engine (llama.cpp llama-server with SmolLM2-135M),
its turns constrained by JSON schema so that even a 135M model's tool calls are well-formed.
Needs `make engine`; skips, saying so, without it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.agents import Finished, ToolLoopEngine, builtin_tools, run_tool_loop
from aigrid.agents.graph import graph_from_edges
from aigrid.engines.llama_server import LlamaServerConfig, LlamaServerProcess
from aigrid.engines.openai_compat import OpenAICompatEngine
from tests.engine_support import engine_config as real_engine_config

pytestmark = pytest.mark.engine

RAIL = graph_from_edges([["Paris", "Lyon", 465], ["Paris", "Frankfurt", 570], ["Lyon", "Zurich", 410],
                         ["Zurich", "Frankfurt", 400], ["Lyon", "Milan", 440], ["Paris", "Brussels", 300]])
QUESTION = "What is 1234 * 5678? Then find the rail route from Lyon to Frankfurt."
TOOLS = [{"type": "function", "function": {"name": "calculator"}},
         {"type": "function", "function": {"name": "shortest_path"}}]


@pytest.fixture
def engine_config(tmp_path: Path) -> LlamaServerConfig:
    return real_engine_config(tmp_path / "llama-server.log", slots=1)


async def test_real_multi_step_loop_with_two_tools(engine_config: LlamaServerConfig) -> None:
    registry = builtin_tools(graphs={"rail": RAIL})
    body = {"model": "smollm2-135m", "temperature": 0, "messages": [{"role": "user", "content": QUESTION}],
            "tools": TOOLS}
    async with LlamaServerProcess(engine_config) as server, httpx.AsyncClient(timeout=120) as client:
        engine = OpenAICompatEngine("llamacpp", server.base_url, client)
        events = [ev async for ev in run_tool_loop(engine, body, registry)]
        fin = events[-1]
        assert isinstance(fin, Finished), fin
        tools = [s.tool for s in fin.steps]
        assert {"calculator", "shortest_path"} <= set(tools), fin.steps
        assert fin.model_calls == len(fin.steps) + 1 and fin.stop == "answer"
        for step in fin.steps:  # the grammar made every call well-formed: it ran, and ran cleanly
            assert step.ok, step
            assert isinstance(step.arguments, dict)
            assert set(step.arguments) <= set(registry[step.tool].parameters["properties"])
        calc = next(s for s in fin.steps if s.tool == "calculator")
        assert re.fullmatch(r"-?[0-9.e+]+", calc.result), calc
        if calc.arguments["expression"].replace(" ", "") == "1234*5678":
            assert calc.result == "7006652"
        path = next(s for s in fin.steps if s.tool == "shortest_path")
        assert path.arguments["source"] in RAIL and path.arguments["target"] in RAIL  # enum-constrained
        assert isinstance(fin.content, str) and fin.content.strip()
        assert fin.usage["completion_tokens"] > 0

        # The same loop as the gateway serves it: streamed, steps as SSE comments, the answer as deltas.
        loop_engine = ToolLoopEngine(engine, registry)
        async with loop_engine.open("/v1/chat/completions", orjson.dumps({**body, "stream": True})) as up:
            assert up.status == 200
            raw = b"".join([c async for c in up.body])
        assert raw.count(b": aigrid-step ") >= 2 and raw.endswith(b"data: [DONE]\n\n")
        chunks = [orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and len(chunks[-1]["aigrid_steps"]) >= 2
