"""`aigrid_responses_sockets`: the WebSocket /v1/responses connections open, summed over the live workers (a dead
worker's sockets closed with it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aigrid.gateway.metrics import GatewayMetrics, retire_worker

HOLDING = """
import os, sys
from aigrid.gateway.metrics import GatewayMetrics
m = GatewayMetrics()
for _ in range(int(sys.argv[1])):
    m.responses_sockets.inc()
m.responses_sockets.dec()
print(os.getpid(), flush=True)
sys.stdin.read()  # open until the test closes its stdin
"""


def sockets(text: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith("aigrid_responses_sockets ")]
    return float(line.split()[1])


def test_open_sockets_are_summed_over_the_live_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    env = {**os.environ, "PYTHONPATH": "src"}
    root = Path(__file__).parents[2]
    workers = [subprocess.Popen([sys.executable, "-c", HOLDING, str(n)], env=env, cwd=root, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE) for n in (3, 5)]
    try:
        pids = [int(w.stdout.readline()) for w in workers]  # type: ignore[union-attr]
        scrape = GatewayMetrics().exposition
        assert sockets(scrape().decode()) == 2 + 4
        workers[1].communicate("", timeout=30)  # its process ends, its sockets with it
        retire_worker(pids[1], tmp_path)
        assert sockets(scrape().decode()) == 2
    finally:
        for w in workers:
            if w.poll() is None:
                w.communicate("", timeout=30)
