"""scripts/bench_constraint_scan.py, whose figures docs/security.md quotes for the grammar, Lark and regex nesting
scans, runs to its end: one line per scanner and worst case, with the depth the scan found (an open bracket per
character nests that deep; escapes and classes not at all)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_constraint_scan_bench_prints_every_case() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_constraint_scan.py"), "--runs", "1",
                          "--kib", "4"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "grammar_nesting, '('", "grammar_nesting, escapes in a literal", "grammar_nesting, classes '[(]'",
        "lark_nesting, '['", "lark_nesting, '('", "lark_nesting, escapes in a literal",
        "regex_nesting, '('", "regex_nesting, escapes '\\('", "regex_nesting, classes '[(]'"], run.stdout
    depths = [line.split("depth ")[1].split(")")[0] for line in lines]
    assert depths == ["4,096", "0", "0", "4,096", "4,096", "0", "4,096", "0", "0"], run.stdout
    assert all(line.endswith(" ms") for line in lines), run.stdout
