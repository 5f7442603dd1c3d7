"""How `aigrid up --workers N` scales on this machine: the same closed loop against 1 worker and N.

    .venv/bin/python scripts/bench_workers.py [--workers 1,2] [--concurrency 100] [--seconds 15] [--tokens 1]
                                              [--rounds 2] [--quotas] [--out DIR]

One emulated 2-engine backend (aigrid.engines.emulator_cli, the side-by-side benchmark's settings) and one
`aigrid up` per worker count, with the side-by-side harness's spec (firewall and audit log on), nothing pinned:
the gateway's workers, the emulator and this load generator share every core, as they would on a small box.
Prints per worker count and round the requests per second, TTFT p50 / p99, and the CPU seconds per request of
the gateway's process tree (parent and workers), of its parent alone (with workers: the hub, where the audit
chain is written), and of everything else that ran (emulator + load generator).
Short outputs (`--tokens 1`) make the gateway's per-request work the bottleneck, which is what more workers
should spread. `--quotas` adds per-tenant and per-key limits too high to refuse anything, so that every
request also reserves and settles its quota (with workers: a call to the hub and a posted settlement).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from aigrid.bench import workload
from aigrid.bench.compare import AIGRID_PORT, EMU_PORT, MODEL, aigrid_spec, measure
from aigrid.bench.procs import Proc, cpu_seconds


def own_cpu_seconds(pid: int) -> float:
    """user + system CPU of this one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quotas", action="store_true", help="every request reserves and settles quota")
    ap.add_argument("--out", type=Path, default=Path("/tmp/aigrid-bench-workers"))
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "aigrid.yaml"
    limits = "{requests_per_min: 100000000, tokens_per_min: 100000000000}"
    aigrid_spec(spec, [EMU_PORT, EMU_PORT + 1],
                f"security: {{default_quotas: {limits}, key_quotas: {limits}}}\n" if args.quotas else "")
    emu = Proc("emulator", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(EMU_PORT), "--engines",
                            "2", "--model", MODEL, "--slots", "512", "--prefill-base-ms", "0.2",
                            "--prefill-ms-per-token", "0.01", "--decode-base-ms", "10", "--decode-ms-per-seq", "0.05"],
               out).start()
    url = f"http://127.0.0.1:{AIGRID_PORT}/v1"
    print(f"{os.cpu_count()} cores; closed loop of {args.concurrency} streams, {args.tokens} output token(s), "
          f"{args.seconds:g} s a round")
    print("| workers | round | req/s | TTFT p50 / p99 ms | gateway CPU ms/req | of which parent (hub) | "
          "emulator + load generator CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    try:
        emu.wait_ready(f"http://127.0.0.1:{EMU_PORT}/health")
        for n in (int(w) for w in args.workers.split(",")):
            gw = Proc(f"aigrid-w{n}", [sys.executable, "-c", "from aigrid.cli import main; main()", "up", str(spec),
                                       "--port", str(AIGRID_PORT), "--workers", str(n)], out, cwd=out).start()
            try:
                gw.wait_ready(f"http://127.0.0.1:{AIGRID_PORT}/healthz", timeout_s=120)
                time.sleep(1.0)
                measure([url], [workload.Plan(None, 32, 8) for _ in range(200)], 20, [])  # warm-up, every worker
                for r in range(args.rounds):
                    plans = [workload.Plan(None, 32, args.tokens)
                             for _ in range(int(args.seconds * args.concurrency * 200))]
                    rest, parent = cpu_seconds(emu.pid) + time.process_time(), own_cpu_seconds(gw.pid)
                    s = measure([url], plans, args.concurrency, [gw.pid], max_s=args.seconds)
                    rest = cpu_seconds(emu.pid) + time.process_time() - rest
                    parent = own_cpu_seconds(gw.pid) - parent
                    done = max(1, s["completed"])
                    ttft = s["ttft_raw_ms"]
                    print(f"| {n} | {r + 1} | {done / args.seconds:.0f} | {ttft['p50']:.1f} / {ttft['p99']:.1f} | "
                          f"{1000 * s['proc_cpu_s'][str(gw.pid)] / done:.3f} | {1000 * parent / done:.3f} | "
                          f"{1000 * rest / done:.3f} |", flush=True)
            finally:
                gw.stop()
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
