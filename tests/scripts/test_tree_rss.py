"""scripts/tree_rss.py, whose figures docs/engines.md cites for tests/e2e/test_demo_grid.py: the RSS of a command's
whole process tree (its grandchildren too, as `aigrid up`'s engines are pytest's), not the largest process alone,
and the command's own exit status."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "tree_rss.py"
spec = importlib.util.spec_from_file_location("tree_rss", SCRIPT)
assert spec is not None and spec.loader is not None
tree_rss = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tree_rss)

GRANDCHILD = "import sys, time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); " \
             "sys.stdin.read()"
"""64 MiB written (resident), held until its stdin closes."""
CHILD = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}], stdout=sys.stdout); " \
        "p.wait()"


def test_a_grandchild_s_memory_is_counted_in_the_sum_and_as_the_largest() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        summed, largest = tree_rss.tree_rss_kib(child.pid)
    finally:
        assert child.stdin is not None
        child.stdin.close()  # the grandchild inherited it: its read ends, then the child's wait
        child.wait(timeout=30)
    assert largest >= 64 << 10, (summed, largest)  # the grandchild, two levels down
    assert summed > largest, (summed, largest)  # and the child's own RSS beside it


def test_the_command_s_exit_status_is_its_own() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(SCRIPT), "--every", "0.05", "--", sys.executable, "-c",
                          "import sys; sys.exit(3)"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert run.returncode == 3, run.stderr
    assert "MiB summed over the process tree" in run.stderr and "exit status 3" in run.stderr, run.stderr
