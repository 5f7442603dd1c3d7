"""scripts/bench_json_depth.py, whose figures json_depth.deeper_than's docstring quotes, runs to its end: the depth
check's four bodies, then usage.whole_answer's two (scripts/bench_whole_answer.py's, folded in by the twenty-eighth
session's area Z, which copied its timing and its answer with log-probabilities)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_json_depth_bench_prints_every_figure() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_json_depth.py"), "--runs", "1"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "agent request with 12 tools, 60 turns", "answer with log-probabilities", "4 MiB flat array",
        "4 MiB of empty arrays", "answer with log-probabilities, charged usage",
        "answer with log-probabilities, usage taken out"], run.stdout
    assert all(" ms, too_deep_raw " in line for line in lines[:4]), run.stdout
    assert all(" ms, usage.whole_answer " in line and line.endswith(" ms") for line in lines[4:]), run.stdout
