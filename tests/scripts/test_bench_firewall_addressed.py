"""scripts/bench_firewall.py --addressed, whose figures docs/security.md quotes for the addressed cues (tried and
not shipped), runs to its end: one line per document, the cues found in each (none in prose nor in a run of
"ignore all" or "gpt-"; every kind in the dense one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_addressed_cues_bench_prints_every_document() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_firewall.py"), "--addressed", "1.5",
                          "--mib", "0.02"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["prose", "ignore all all ...", "dense cues", "gpt-gpt-..."]
    assert [line.split(", ")[1].split(")")[0] for line in lines] == [
        "0 kinds of cue", "0 kinds of cue", "5 kinds of cue", "0 kinds of cue"], run.stdout
    assert all(" with weight 1.5 " in line and line.endswith(" s CPU") for line in lines), run.stdout
