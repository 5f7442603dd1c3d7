#!/usr/bin/env bash
# One command, one run on this machine: the same emulated engines reached directly, through aigrid,
# through LiteLLM proxy and through vllm-router. Installs the peers from PyPI into .bench-venv itself.
# Runs `make install` first only where .venv is not there yet (a fresh checkout), or with INSTALL=1: a checkout
# already installed is run as it is (until the twenty-ninth session every run began with `make install`).
# Results: .aigrid/bench-compare/compare.{md,json} (plus each process's log). See docs/benchmarks.md.
#   scripts/bench_compare.sh                      # the default run (about 6 minutes on 2 cores)
#   scripts/bench_compare.sh --soak-s 600         # ... then a 10-minute RSS soak of `aigrid up`
#   INSTALL=1 scripts/bench_compare.sh            # `make install` first (the venv and compiled core brought up to date)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${INSTALL:-0}" == 1 || ! -x .venv/bin/python ]]; then
  make install >/dev/null
else
  echo "using the installed .venv as it is (INSTALL=1 runs make install first)"
fi
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
exec .venv/bin/python -m aigrid.bench.compare "$@"
