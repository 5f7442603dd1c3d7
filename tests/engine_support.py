"""The real embedded engine in tests: its config, or a clear skip when llama-server has not been built."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigrid.engines.llama_server import LlamaServerConfig, embedded_config
from aigrid.engines.model_files import find_llama_server
from aigrid.errors import EngineBuildError

NOT_BUILT = "llama-server is not built (run `make engine`)"


def require_llama_server() -> None:
    try:
        find_llama_server()
    except EngineBuildError as exc:
        pytest.skip(f"{NOT_BUILT}: {exc}")


TEST_CONTEXT = 2048
"""Tokens a slot of a test's engine holds (what every embedded engine held before the spec's context was honoured):
the tests' prompts are short, and each 2048 more tokens a slot is about 45 MB more memory a slot (measured)."""


def engine_config(log_path: Path, *, slots: int = 1, threads: int = 1) -> LlamaServerConfig:
    require_llama_server()
    return embedded_config(log_path, context=TEST_CONTEXT, slots=slots, threads=threads)
