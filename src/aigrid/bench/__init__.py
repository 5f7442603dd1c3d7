"""bench/: load generation against any OpenAI-compatible endpoint, and the side-by-side gateway benchmark.

    workload.py        Poisson arrivals, Azure trace replay, closed-loop plans; request bodies
    http.py            a minimal streaming HTTP/1.1 client (asyncio.Protocol + httptools, keep-alive pool)
    runner.py          open and closed loop; per-request TTFT, inter-token gaps, TPOT, end-to-end; client CPU
    report.py          summary (percentiles, throughput, goodput under an SLO), rich table, JSON, PNG plots
    cli.py             `aigrid bench` (bench_command)
    compare.py         direct vs aigrid vs LiteLLM proxy vs vllm-router on emulated engines (scripts/bench_compare.sh)
    procs.py           child processes for compare: start, readiness, CPU and RSS from /proc, stop
    gateway_launch.py  the gateway for an external-engines spec with a chosen upstream transport and event loop
"""
