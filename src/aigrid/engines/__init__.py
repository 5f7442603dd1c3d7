"""Engines: one adapter per engine kind behind the Engine protocol, pure Prometheus parsers, and the
embedded llama.cpp engine.

    protocol.py       Engine, EngineStats, UpstreamResponse: the contract the gateway codes against
    openai_compat.py  OpenAICompatEngine for vLLM, SGLang, llama-server, Ollama, TGI, generic OpenAI
    prometheus.py     parse_stats(kind, text) and one parser per engine kind (plus DCGM power)
    model_files.py    find_llama_server(), find_model_file(): the embedded engine's binary and model
    llama_server.py   LlamaServerProcess: start, health-wait and stop a llama-server child
"""

from aigrid.engines.llama_server import LlamaServerConfig, LlamaServerProcess, embedded_config
from aigrid.engines.model_files import find_llama_server, find_model_file
from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.prometheus import parse_stats
from aigrid.engines.protocol import Engine, EngineStats, UpstreamResponse

__all__ = [
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
