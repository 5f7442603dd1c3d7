"""Peak memory of a command and every process it starts: runs the command, sums the RSS of its process tree
(/proc, each process's VmRSS, children found by parent pid) every --every seconds, and prints the peak sum and
the peak of the largest single process when the command exits, with its exit status. `/usr/bin/time -v`'s
"Maximum resident set size" is the largest single process only (getrusage), not what the tree holds together.

    .venv/bin/python scripts/tree_rss.py -- .venv/bin/python -m pytest tests/e2e/test_demo_grid.py -q
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from aigrid.bench.procs import rss_kib, tree


def tree_rss_kib(root: int) -> tuple[int, int]:
    """(summed RSS, largest single RSS) of `root` and its descendants now (aigrid.bench.procs.tree, rss_kib), in KiB."""
    sizes = [size for pid in tree(root) if (size := rss_kib(pid)) is not None]
    return sum(sizes), max(sizes, default=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    proc = subprocess.Popen(args.command)
    peak_sum = peak_one = samples = 0
    while proc.poll() is None:
        total, largest = tree_rss_kib(proc.pid)
        peak_sum, peak_one, samples = max(peak_sum, total), max(peak_one, largest), samples + 1
        time.sleep(args.every)
    print(f"tree_rss: peak {peak_sum / 1024:.0f} MiB summed over the process tree, largest process {peak_one / 1024:.0f} "
          f"MiB ({samples} samples every {args.every} s); exit status {proc.returncode}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
