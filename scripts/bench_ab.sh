#!/usr/bin/env bash
# A/B of the gateway's CPU per streamed request: a fixed closed-loop workload (N requests, C streams, 24 output
# tokens) against each variant in turn, ROUNDS times, the gateway pinned to core 1, the emulator and the client
# to core 0; gateway CPU from /proc (utime + stime), the event loop's thread's beside it (the rest is the audit
# store's and other threads'). CPU seconds per request are far less sensitive to other
# load on the machine than latencies are (see docs/benchmarks.md).
#   scripts/bench_ab.sh OUT NAME=SRC:SPEC[:ARGS] [NAME=SRC:SPEC[:ARGS] ...]
#   e.g. scripts/bench_ab.sh /tmp/ab new=$PWD/src:aigrid.yaml old=/tmp/old/src:aigrid.yaml
#        scripts/bench_ab.sh /tmp/ab uvicorn=$PWD/src:lean.yaml granian=$PWD/src:lean.yaml:--server,granian
# ARGS: extra gateway_launch options, comma-separated (e.g. --server,granian; granian: pip install granian).
# WORKERS=N: run `aigrid gateway SPEC --workers N` instead (workers and hub together pinned to core 1; CPU of
# the whole process tree).
# TOKENS=N: output tokens per request (default 24): the change of CPU per request with N is the cost per relayed
# chunk, what is left at N=1 the cost per request.
# UNIQUE=1: a unique prompt per request (default: one prompt for all; keep N + 100 under the abuse monitor's
# 1,500 requests per 5 minutes, or a single client is throttled).
# Prints, and appends to OUT/ab.txt, one line per variant and round: "NAME round R: gateway CPU X ms/request
# (event loop's thread Y), Z write calls/request, Q req/s, load L" (L: the 1-minute load average after the
# run; with WORKERS, no thread or write figures). /proc counts CPU in clock ticks (getconf CLK_TCK, 100 a
# second here): a CPU figure is good to 1000 / (CLK_TCK x N) ms a request (0.007 ms at N=1500).
# SRC: a src/ folder (e.g. `git archive COMMIT src | tar -x -C /tmp/old`); SPEC: a spec whose two endpoints are
# the emulator's ports 9900-9901 (the gateway is started with --port 9910 whatever the spec says), e.g. the
# harness's: .venv/bin/python -c 'from pathlib import Path; from aigrid.bench.compare import aigrid_spec;
#   aigrid_spec(Path("/tmp/ab.yaml"), [9900, 9901])'
set -u
out=$1; shift
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$here/.venv/bin/python}
N=${N:-1500}; C=${C:-50}; ROUNDS=${ROUNDS:-2}
same=--same-prompts; [ "${UNIQUE:-0}" = 1 ] && same=
taskset -c 0 env PYTHONPATH="$here/src" "$PY" -m aigrid.engines.emulator_cli --port 9900 --engines 2 --slots 512 \
  --prefill-base-ms 0.2 --prefill-ms-per-token 0.01 > "$out/emu.log" 2>&1 &
emu=$!
trap 'kill $emu 2>/dev/null' EXIT
sleep 3
cpu() { env PYTHONPATH="$here/src" "$PY" -c "from aigrid.bench.procs import cpu_seconds; print(cpu_seconds($1))"; }
# the gateway process's write(2)-family system calls (/proc/PID/io syscw: its socket writes, the audit log's; with
# WORKERS, the parent's only, so not printed there)
writes() { awk '/^syscw:/ {print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }
# the CPU seconds of the gateway's main thread alone (the event loop's; /proc/PID/task/PID/stat utime + stime): the
# rest of the process's is its threads' (the audit store's, the firewall's screen); with WORKERS, not printed
tck=$(getconf CLK_TCK)
loop_cpu() { awk -v tck="$tck" '{ sub(/^.*\) /, ""); split($0, f, " "); print (f[12] + f[13]) / tck }' \
  "/proc/$1/task/$1/stat" 2>/dev/null || echo 0; }
bench() { taskset -c 0 env PYTHONPATH="$here/src" "$PY" -m aigrid.cli bench http://127.0.0.1:9910/v1 --mode closed \
  --output-tokens "${TOKENS:-24}" $same --model emulated "$@"; }
for r in $(seq 1 "$ROUNDS"); do
  for v in "$@"; do
    name=${v%%=*}; rest=${v#*=}; src=${rest%%:*}; rest=${rest#*:}; spec=${rest%%:*}
    args=""; [ "$rest" != "$spec" ] && args=${rest#*:}
    if [ "${WORKERS:-0}" -gt 0 ]; then
      taskset -c 1 env PYTHONPATH="$src" "$PY" -m aigrid.cli gateway "$spec" --port 9910 --workers "$WORKERS" \
        ${args//,/ } > "$out/gw-$name.log" 2>&1 &
    else
      taskset -c 1 env PYTHONPATH="$src" "$PY" -m aigrid.bench.gateway_launch "$spec" --port 9910 ${args//,/ } \
        > "$out/gw-$name.log" 2>&1 &
    fi
    gw=$!
    for _ in $(seq 1 150); do kill -0 "$gw" 2>/dev/null && ! curl -sf localhost:9910/healthz > /dev/null || break; sleep 0.2; done
    if ! kill -0 "$gw" 2>/dev/null; then  # refused its spec, or died: no figure (it printed 0 ms/request before)
      echo "$name round $r: the gateway did not start, see $out/gw-$name.log" | tee -a "$out/ab.txt"; continue
    fi
    bench --concurrency 10 -n 100 > /dev/null 2>&1  # warm-up
    t0=$(cpu "$gw"); w0=$(writes "$gw"); l0=$(loop_cpu "$gw")
    bench --concurrency "$C" -n "$N" --out "$out/$name-$r" > "$out/bench-$name-$r.log" 2>&1
    t1=$(cpu "$gw"); w1=$(writes "$gw"); l1=$(loop_cpu "$gw")
    syscalls=""; [ "${WORKERS:-0}" -gt 0 ] || syscalls=" (event loop's thread $(echo "scale=3; 1000 * ($l1 - $l0) / $N" | bc)),\
 $(echo "scale=2; ($w1 - $w0) / $N" | bc) write calls/request"
    echo "$name round $r: gateway CPU $(echo "scale=3; 1000 * ($t1 - $t0) / $N" | bc) ms/request$syscalls," \
         "$(grep -o '[0-9.]* req/s' "$out/bench-$name-$r.log" | head -1), load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out/ab.txt"
    kill -INT $gw; wait $gw 2>/dev/null
  done
done
