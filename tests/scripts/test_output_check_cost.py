"""scripts/output_check_cost.py, whose figures docs/security.md cites, runs to its end (a few calls each): it called
OutputFilter._call_names with the arguments of an earlier signature and stopped with a TypeError before its last
two lines. The whole reads' figures (OutputReads, Firewall.check_output's until the twenty-ninth session: docs/security.md)
come first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_output_check_cost_script_prints_every_figure() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "output_check_cost.py"), "--n", "20", "--runs", "1"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()  # the whole reads' figures (scripts/check_output_cost.py's until review RV3) first
    assert [line.split(",")[0] for line in lines[:5]] == ["OutputReads"] * 4 + ["redact_json_answer"], run.stdout
    assert "the id and name check (OutputFilter._call_names)" in run.stdout
    assert "Responses event" in run.stdout
