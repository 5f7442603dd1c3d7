"""Engines: one adapter per engine kind behind the Engine protocol, pure Prometheus parsers, and the
embedded llama.cpp engine.

    protocol.py       Engine, EngineStats, UpstreamResponse: the contract the gateway codes against
    openai_compat.py  OpenAICompatEngine for vLLM, SGLang, llama-server, Ollama, TGI, generic OpenAI
    prometheus.py     parse_stats(kind, text) and one parser per engine kind (plus DCGM power)
    model_files.py    find_llama_server(), find_model_file(): the embedded engine's binary and model
    llama_server.py   LlamaServerProcess: start, health-wait and stop a llama-server child

The engine model (engine_model.py) may be compiled (scripts/build_core.py). This module guards that build as
aigrid/core/__init__.py guards the core's, before the engine model is imported: when a source it was
type-checked against (or any .py here) has changed since, it says so on stderr and imports the sources.
None of the modules imported here imports the engine model, so guarding after them is still before it.
"""

from pathlib import Path

from aigrid.core import guard
from aigrid.engines.llama_server import LlamaServerConfig, LlamaServerProcess, embedded_config
from aigrid.engines.model_files import find_llama_server, find_model_file
from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.prometheus import parse_stats
from aigrid.engines.protocol import Engine, EngineStats, UpstreamResponse

BUILD = guard(__name__, Path(__file__).parent, Path(__file__).parent.parent, "engine model")
"""Which engine model this process runs: 'compiled', 'pure' or 'stale' (compiled but out of date: the sources
run)."""

__all__ = [
    "BUILD",
    "Engine",
    "EngineStats",
    "LlamaServerConfig",
    "LlamaServerProcess",
    "OpenAICompatEngine",
    "UpstreamResponse",
    "embedded_config",
    "find_llama_server",
    "find_model_file",
    "parse_stats",
]
