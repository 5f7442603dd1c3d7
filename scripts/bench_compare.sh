#!/usr/bin/env bash
# One command, one run on this machine: the same emulated engines reached directly, through aigrid,
# through LiteLLM proxy and through vllm-router. Installs the peers from PyPI into .bench-venv itself.
# Results: .aigrid/bench-compare/compare.{md,json} (plus each process's log). See docs/benchmarks.md.
#   scripts/bench_compare.sh                      # the default run (about 6 minutes on 2 cores)
#   scripts/bench_compare.sh --soak-s 600         # ... then a 10-minute RSS soak of `aigrid up`
set -euo pipefail
cd "$(dirname "$0")/.."
make install >/dev/null
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
exec .venv/bin/python -m aigrid.bench.compare "$@"
