"""scripts/bench_compare.sh runs `make install` only where .venv is missing or with INSTALL=1: every run began with
it, so a checkout already installed (a helper sharing it may not reinstall) could not be measured as documented.
`make` is replaced by a stub on PATH that notes its arguments; `--help` ends the benchmark at once (its options are
aigrid.bench.compare's)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "make-calls"
    stub = bin_dir / "make"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "bench_compare.sh"), "--help"], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env})
    return done, calls.read_text() if calls.exists() else ""


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs the installed .venv")
def test_an_installed_checkout_is_run_without_make_install_unless_asked(tmp_path: Path) -> None:
    done, calls = run(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--soak-s" in done.stdout and calls == ""  # the benchmark's own help, and no make install
    done, calls = run(tmp_path, INSTALL="1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert calls.split() == ["install"]
