"""scripts/std_regex_depth.sh, whose figures docs/engines.md and docs/security.md quote for grammar_triggers,
builds its C++ program and prints one line per argument; a malformed argument is refused before any build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "std_regex_depth.sh"


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ here")
def test_a_shallow_pattern_of_each_kind_compiles() -> None:
    run = subprocess.run([str(SCRIPT), "groups:10", "literal:30"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["groups:10 compiled (21 characters)", "literal:30 compiled (30 characters)"]


def test_an_argument_that_is_not_kind_and_count_is_refused() -> None:
    run = subprocess.run([str(SCRIPT), "groups:10", "50000"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 2 and "50000: expected groups:N or literal:N" in run.stderr
    assert run.stdout == ""
