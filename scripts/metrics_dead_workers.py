"""What dead gateway workers cost each /metrics scrape (prometheus-client multiprocess mode).

    PYTHONPATH=src .venv/bin/python scripts/metrics_dead_workers.py [N ...]

A worker's usual series (10 endpoints, 3 models) written once, then copied as the files of N dead workers, as
prometheus-client's mark_process_dead leaves them (each keeps its counter and histogram file), and folded by
metrics.retire_worker; prints the time of one scrape and the files the folder holds."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

FOLDER = tempfile.mkdtemp()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = FOLDER  # before prometheus-client is imported: its values go to files

from aigrid.gateway.metrics import GatewayMetrics, retire_worker  # noqa: E402


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [0, 100, 1000]
    m = GatewayMetrics()
    for i in range(10):
        site, ep = f"s{i % 3}", f"ep-{i}"
        for outcome in ("ok", "failed_before_first_byte", "http_500"):
            m.requests.labels(site, ep, outcome).inc()
        m.ttft.labels(site).observe(0.1)
        m.ttft_ratio.labels(ep).observe(1)
        m.tpot.labels(site).observe(0.02)
        m.retries.labels(ep).inc()
        m.tokens.labels(site, "prompt").inc(3)
    for model in ("a", "b", "c"):
        m.genai("chat", model, 0.5, 0.1, {"prompt_tokens": 3, "completion_tokens": 5}, site="s0")
    own = [f for f in os.listdir(FOLDER) if f.startswith(("counter_", "histogram_"))]
    try:
        for n in counts:
            for how in ("left", "retired"):
                for f in os.listdir(FOLDER):
                    if f not in own:
                        os.unlink(os.path.join(FOLDER, f))
                for j in range(n):
                    for f in own:
                        shutil.copy(os.path.join(FOLDER, f), os.path.join(FOLDER, f"{f.split('_')[0]}_{10**7 + j}.db"))
                    if how == "retired":
                        retire_worker(10**7 + j, FOLDER)
                t = time.perf_counter()
                m.exposition()
                ms = (time.perf_counter() - t) * 1000
                files = [f for f in os.listdir(FOLDER) if f.endswith(".db")]
                size = sum(os.path.getsize(os.path.join(FOLDER, f)) for f in files)
                print(f"{n} dead workers, {how}: one scrape {ms:.0f} ms, {len(files)} files, {size / 1e6:.1f} MB")
    finally:
        shutil.rmtree(FOLDER)


if __name__ == "__main__":
    main()
