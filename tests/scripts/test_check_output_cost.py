"""scripts/check_output_cost.py, whose figures docs/security.md cites (Firewall.check_output's one reading), runs to
its end (a few calls each) and prints every figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_check_output_cost_script_prints_every_figure() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_output_cost.py"), "--n", "8", "--runs", "1"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert sum(line.startswith("check_output, ") for line in lines) == 4, run.stdout
    assert lines[-1].startswith("redact_json_answer, ") and lines[-1].endswith(" us"), run.stdout
