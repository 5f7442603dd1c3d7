"""`aigrid gateway --workers 2` in front of the ENGINE EMULATOR, as real processes: two workers on one socket
keep one quota, one audit chain (`aigrid audit verify` passes), one /metrics and one set of decisions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from aigrid.bench.procs import Proc, tree
from aigrid.engines.llama_server import free_port

REQUESTS = 24
LIMIT = 15


def spec(tmp: Path, emu_port: int, gw_port: int) -> dict:
    return {"name": "workers", "gateway": {"host": "127.0.0.1", "port": gw_port, "network": "none",
                                           "scrape_interval_s": 0.5},
            "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
            "sites": {f"s{i}": {"name": f"S{i}", "lat": 50.0, "lon": 8.0 + i, "jurisdiction": "EU"} for i in range(2)},
            "endpoints": [{"id": f"emu{i}", "site": f"s{i}", "model": "emulated", "engine": "vllm",
                           "url": f"http://127.0.0.1:{emu_port + i}", "slots": 64} for i in range(2)],
            "security": {"audit": {"path": str(tmp / "audit.db"), "signing_key": str(tmp / "audit.pem")},
                         "default_quotas": {"requests_per_min": LIMIT}}}


def test_two_workers_share_quota_audit_metrics_and_decisions(tmp_path: Path) -> None:
    emu_port = free_port()
    emu = Proc("emulator", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(emu_port),
                            "--engines", "2", "--decode-base-ms", "20", "--prefill-base-ms", "1"], tmp_path).start()
    gw: Proc | None = None
    try:
        emu.wait_ready(f"http://127.0.0.1:{emu_port + 1}/health")
        gw_port = free_port()  # only now: the emulator's second port is taken
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_bytes(orjson.dumps(spec(tmp_path, emu_port, gw_port)))
        gw = Proc("gateway", [sys.executable, "-m", "aigrid.cli", "gateway", str(spec_path), "--workers", "2"],
                  tmp_path, cwd=tmp_path).start()
        base = f"http://127.0.0.1:{gw_port}"
        gw.wait_ready(f"{base}/livez", timeout_s=120)
        workers = [p for p in tree(gw.pid) if p != gw.pid]
        assert len(workers) == 2, workers

        def one(i: int) -> httpx.Response:  # a new connection each: the kernel spreads them over the workers
            return httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
                "model": "emulated", "stream": True, "max_tokens": 8,
                "messages": [{"role": "user", "content": f"question {i}"}]})

        while time.time() % 60 > 40:  # quotas count in fixed one-minute windows: all requests in one window
            time.sleep(0.5)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(REQUESTS)))
        served = [a for a in answers if a.status_code == 200]
        # one quota for the gateway, not one per worker
        assert len(served) == LIMIT, [a.status_code for a in answers]
        assert all(a.status_code == 429 for a in answers if a.status_code != 200)
        # every decision is found whichever worker answers the lookup
        for a in served:
            for _ in range(2):
                assert httpx.get(f"{base}/v1/decisions/{a.headers['x-aigrid-decision']}").status_code == 200
        # /metrics sums the workers
        metrics = httpx.get(f"{base}/metrics").text
        ok = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("aigrid_requests_total{") and 'outcome="ok"' in line)
        assert ok == LIMIT
    finally:
        if gw is not None:
            gw.stop()
        emu.stop()
    # one writer: one chain, every request audited (the served and the refused)
    verify = subprocess.run([sys.executable, "-m", "aigrid.cli", "audit", "verify", str(tmp_path / "audit.db"),
                             "--public-key", str(tmp_path / "audit.pub.pem")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{REQUESTS} records" in " ".join(verify.stdout.split())


def test_default_workers_follow_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    from aigrid.cores import available_cores

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == len(os.sched_getaffinity(0))
    cpu_max.write_text("150000 100000\n")  # a container limited to 1.5 CPUs: two workers at most
    assert available_cores(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    assert available_cores(tmp_path / "missing") == len(os.sched_getaffinity(0))
