"""scripts/bench_firewall.py --context, whose figures docs/security.md quotes for the context weight (tried and
not shipped), runs to its end: one line per document, two timings without the weight and two with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_context_weight_bench_prints_every_document() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_firewall.py"), "--context", "0.5",
                          "--mib", "0.02"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["prose", "dense cues"], run.stdout
    for line in lines:
        without, with_ = line.split("without the context weight ")[1].split(", with weight 0.5 ")
        assert len(without.split(" / ")) == 2 and len(with_.split(" / ")) == 2, line
        assert line.endswith(" s CPU"), line
