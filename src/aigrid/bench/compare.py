"""`python -m aigrid.bench.compare`: the same emulated engines reached (a) directly, (b) through aigrid,
(c) through LiteLLM proxy, (d) through vllm-router, one target at a time, on this machine.

The peers are installed into a separate virtualenv (.bench-venv) from PyPI by this command itself. CPU is
split so that every gateway gets the same budget: the gateway under test is pinned to one core, the
emulator and this load generator to the other (taskset), and the CPU seconds each process used are
measured from /proc. Measures, per target:
- closed loop at several concurrencies: request rate, TTFT p50/p99 and TTFT added over direct;
- open loop (Poisson) rate sweep: the highest rate whose p99 added TTFT stays under 10 ms, with no errors
  and the offered rate achieved.
Writes compare.json and compare.md into --out.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from aigrid.bench import workload
from aigrid.bench.procs import Proc, cpu_seconds, rss_mb
from aigrid.bench.report import Slo, percentile, summary
from aigrid.bench.runner import Run, RunConfig, run
from aigrid.printable import markdown_cell

PEERS = ("litellm[proxy]", "vllm-router")
EMU_PORT, AIGRID_PORT, LITELLM_PORT, ROUTER_PORT = 9400, 9410, 9420, 9430
MODEL = "emulated"
ADDED_P99_LIMIT_MS = 10.0
DRAIN_S = 10.0
"""A run waits at most this long after its last send; what is still running then counts as failed."""
LITELLM_KEY = "sk-aigrid-bench"
"""LiteLLM's proxy refuses to start without a master key; clients then send it as a bearer token."""


def ensure_peers(venv: Path, log: Path) -> dict[str, str]:
    """Create `venv` and pip install the peers unless they are there; return their versions."""
    py = venv / "bin" / "python"
    if not (venv / "bin" / "litellm").exists() or not (venv / "bin" / "vllm-router").exists():
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        with log.open("ab") as f:
            subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS], check=True, stdout=f, stderr=f)
    out = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, check=True).stdout
    return {p["name"]: p["version"] for p in orjson.loads(out) if p["name"] in ("litellm", "vllm-router")}


LEAN_SECURITY = "security: {firewall: {injection: 'off', pii_input: 'off', pii_output: 'off'}, audit: null}\n"
"""Routing only, like the peers: no input firewall, no audit log (authentication is off by default)."""


def aigrid_spec(path: Path, ports: list[int], extra: str = "") -> None:
    sites = "\n".join(f"  s{i}: {{name: Site{i}, lat: 50.0, lon: {8 + i}.0, jurisdiction: EU}}" for i in range(len(ports)))
    eps = "\n".join(f"  - {{id: emu{i}, site: s{i}, model: {MODEL}, engine: vllm, url: 'http://127.0.0.1:{p}', "
                    f"slots: 512, prefill_tps: 50000, decode_tps: 60}}" for i, p in enumerate(ports))
    path.write_text(f"name: bench\ngateway: {{host: 127.0.0.1, port: {AIGRID_PORT}, network: none}}\n"
                    f"models:\n  {MODEL}: {{family: emulated, params_b: 1.0}}\nsites:\n{sites}\nendpoints:\n{eps}\n"
                    + extra)


def litellm_config(path: Path, ports: list[int]) -> None:
    entries = "".join(f"  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
                      f"      api_base: http://127.0.0.1:{p}/v1\n      api_key: unused\n" for p in ports)
    path.write_text(f"model_list:\n{entries}litellm_settings:\n  drop_params: true\n  telemetry: false\n"
                    f"general_settings:\n  master_key: {LITELLM_KEY}\n")


def targets(venv: Path, work: Path, ports: list[int], cpu: str | None,
            baselines: dict[str, Path] | None = None) -> dict[str, Any]:
    """name -> (process to start or None, base URLs, readiness URL, request headers)."""
    spec, lean, cfg = work / "aigrid.yaml", work / "aigrid-lean.yaml", work / "litellm.yaml"
    aigrid_spec(spec, ports)
    aigrid_spec(lean, ports, LEAN_SECURITY)
    litellm_config(cfg, ports)
    quiet = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "true"}
    py = sys.executable
    gw_url, gw_ready = [f"http://127.0.0.1:{AIGRID_PORT}/v1"], f"http://127.0.0.1:{AIGRID_PORT}/healthz"
    # the `aigrid` entry point of whichever source tree is on PYTHONPATH (an older tree included)
    up = [py, "-c", "from aigrid.cli import main; main()", "up", str(spec), "--port", str(AIGRID_PORT)]
    table = {
        "direct": (None, [f"http://127.0.0.1:{p}/v1" for p in ports], None, ()),
        # `aigrid up` exactly as shipped (pinned to one core, it runs one worker: the cores it may use)
        "aigrid": (Proc("aigrid", up, work, cpus=cpu, cwd=work), gw_url, gw_ready, ()),
        # the same, with every request routed round robin as vllm-router routes here (x-aigrid-policy): the
        # bench repeats one prompt, which aigrid's prefix affinity sends to one engine, doubling its batch
        # (slower steps, later first tokens); this target shows the gateway's own cost at the peers' engine load
        "aigrid-rr": (Proc("aigrid-rr", up, work, cpus=cpu, cwd=work), gw_url, gw_ready,
                      (("x-aigrid-policy", "round-robin"),)),
        # the same gateway on uvloop with the Http1Transport upstream, routing only (see docs/benchmarks.md)
        "aigrid-fast": (Proc("aigrid-fast", [py, "-m", "aigrid.bench.gateway_launch", str(lean), "--port",
                                             str(AIGRID_PORT)], work, cpus=cpu, cwd=work), gw_url, gw_ready, ()),
        "litellm": (Proc("litellm", [str(venv / "bin/litellm"), "--config", str(cfg), "--port", str(LITELLM_PORT),
                                     "--num_workers", "1"], work, cpus=cpu, env=quiet, cwd=work),
                    [f"http://127.0.0.1:{LITELLM_PORT}/v1"], f"http://127.0.0.1:{LITELLM_PORT}/health/liveliness",
                    (("authorization", f"Bearer {LITELLM_KEY}"),)),
        "vllm-router": (Proc("vllm-router", [str(venv / "bin/vllm-router"), "--worker-urls",
                                             *[f"http://127.0.0.1:{p}" for p in ports], "--port", str(ROUTER_PORT),
                                             "--policy", "round_robin", "--log-level", "warning"],
                             work, cpus=cpu, cwd=work),
                        [f"http://127.0.0.1:{ROUTER_PORT}/v1"], f"http://127.0.0.1:{ROUTER_PORT}/health", ()),
    }
    for name, src in (baselines or {}).items():  # the same `aigrid up` from another source tree, same run
        table[name] = (Proc(name, up, work, cpus=cpu, cwd=work, env={"PYTHONPATH": str(src)}), gw_url, gw_ready, ())
    return table


def loop_run(coro: Any) -> Run:
    import uvloop

    result: Run = uvloop.run(coro)
    return result


def measure(urls: list[str], plans: list[workload.Plan], concurrency: int, pids: list[int],
            headers: tuple[tuple[str, str], ...] = (), max_s: float | None = None) -> dict[str, Any]:
    before = {p: cpu_seconds(p) for p in pids}
    config = RunConfig(tuple(urls), MODEL, concurrency=concurrency, timeout_s=60.0, headers=headers,
                       max_duration_s=max_s, drain_s=DRAIN_S, unique_prompts=False)
    result = loop_run(run(config, plans))
    cpu = {str(p): round(cpu_seconds(p) - before[p], 2) for p in pids}
    s = summary(result, Slo())
    ttft = sorted(r.ttft * 1000 for r in result.results if r.ok and r.ttft is not None)
    s["ttft_raw_ms"] = {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99)}
    s["proc_cpu_s"] = cpu
    return s


def closed_plans(concurrency: int, n: int, out_tokens: tuple[int, int], rng: random.Random) -> list[workload.Plan]:
    # output lengths vary so that the workers do not stay in lock-step (bursts of arrivals)
    return [workload.Plan(None, 32, rng.randint(*out_tokens)) for _ in range(n)]


def sweep_plans(rate: float, step_s: float) -> list[workload.Plan]:
    """One step of the open-loop sweep: Poisson arrivals at `rate` for `step_s`, 32-token prompts, 16-32
    output tokens."""
    plans = workload.poisson(rate, max(20, int(rate * step_s)), 32, 24, random.Random(int(rate)))
    return [workload.Plan(p.at, 32, 16 + i % 17) for i, p in enumerate(plans)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".aigrid/bench-compare"))
    ap.add_argument("--venv", type=Path, default=Path(".bench-venv"))
    ap.add_argument("--targets", default="direct,aigrid,aigrid-fast,litellm,vllm-router")
    ap.add_argument("--concurrency", default="1,50,200")
    ap.add_argument("--rates", default="50,100,200,400,800")
    ap.add_argument("--step-s", type=float, default=4.0, help="seconds of load per sweep step")
    ap.add_argument("--closed-s", type=float, default=6.0, help="about how long each closed-loop run lasts")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--soak-s", type=float, default=0.0, help="then run `aigrid up` this long under load, "
                    "sampling its RSS (0: no soak)")
    ap.add_argument("--soak-rate", type=float, default=30.0, help="Poisson rate of the soak")
    ap.add_argument("--soak-concurrency", type=int, default=0,
                    help="closed-loop streams of the soak instead of a Poisson rate (e.g. 200)")
    ap.add_argument("--baseline", action="append", default=[], metavar="NAME=SRC",
                    help="also measure `aigrid up` from the src/ folder SRC (e.g. `git archive` of an earlier "
                    "commit) as target NAME, in the same run; repeatable; list NAME in --targets")
    args = ap.parse_args(argv)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    gw_cpu, rest_cpu = ("1", "0") if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {0})
    versions = ensure_peers(args.venv.resolve(), out / "install.log")
    ports = [EMU_PORT, EMU_PORT + 1]
    # emulated engines: 10 ms + 0.05 ms x batch per decode step, 0.2 ms prefill base, 0.01 ms per prompt token
    emu = Proc("emulator", [sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", str(EMU_PORT),
                            "--engines", "2", "--model", MODEL, "--slots", "512", "--prefill-base-ms", "0.2",
                            "--prefill-ms-per-token", "0.01", "--decode-base-ms", "10", "--decode-ms-per-seq",
                            "0.05"], out, cpus=rest_cpu).start()
    report: dict[str, Any] = {"machine": machine(), "pinned": pin, "versions": versions, "targets": {},
                              "command": " ".join(["python -m aigrid.bench.compare", *(argv or sys.argv[1:])])}
    try:
        emu.wait_ready(f"http://127.0.0.1:{EMU_PORT}/health")
        baselines = {n: Path(p).resolve() for n, p in (b.split("=", 1) for b in args.baseline)}
        table = targets(args.venv.resolve(), out, ports, gw_cpu, baselines)
        levels = [int(c) for c in args.concurrency.split(",")]
        rates = [float(r) for r in args.rates.split(",")]
        names = [n for n in args.targets.split(",") if n]
        if set(names) - set(table):
            ap.error(f"unknown targets {sorted(set(names) - set(table))}; known: {', '.join(table)}")
        for name in names:
            proc, urls, ready, hdrs = table[name]
            entry: dict[str, Any] = {"closed": {}, "sweep": {}}
            report["targets"][name] = entry
            try:
                if proc is not None:
                    proc.start()
                    proc.wait_ready(ready, timeout_s=120)
                    time.sleep(1.0)
                pids = [emu.pid] + ([proc.pid] if proc is not None else [])
                measure(urls, closed_plans(10, 100, (8, 24), random.Random(1)), 10, pids, hdrs)  # warm-up
                if proc is not None:
                    entry["rss_mb_start"] = round(rss_mb(proc.pid), 1)
                for c in levels:
                    n = max(30, int(3 * args.closed_s * c / 0.25))  # more than enough; cut at closed_s
                    entry["closed"][c] = measure(urls, closed_plans(c, n, (16, 32), random.Random(c)), c, pids,
                                                 hdrs, max_s=args.closed_s)
                    print(f"{name} closed c={c}: {brief(entry['closed'][c])}", flush=True)
                for r in rates:
                    plans = sweep_plans(r, args.step_s)
                    s = entry["sweep"][r] = measure(urls, plans, 0, pids, hdrs)
                    print(f"{name} poisson {r:g}/s: {brief(s)}", flush=True)
                    base = report["targets"].get("direct", {}).get("sweep", {}).get(r)
                    if s["failed"] or (base is not None and s["ttft_raw_ms"]["p99"] is not None
                                       and s["ttft_raw_ms"]["p99"] - base["ttft_raw_ms"]["p99"] > 4 * ADDED_P99_LIMIT_MS):
                        break  # well past the limit: higher rates only take longer to say the same
                if proc is not None:
                    entry["rss_mb_end"] = round(rss_mb(proc.pid), 1)
            except (RuntimeError, OSError) as e:
                entry["error"] = str(e)
                print(f"{name}: FAILED: {e}", flush=True)
            finally:
                if proc is not None:
                    entry["proc_pid"] = proc.pid
                    proc.stop()
        analyse(report, ADDED_P99_LIMIT_MS)
        if args.soak_s > 0:
            proc, urls, ready, hdrs = table["aigrid"]
            proc.start()
            try:
                proc.wait_ready(ready, timeout_s=120)
                report["soak"] = soak(proc, urls, args.soak_rate, args.soak_s,
                                      concurrency=args.soak_concurrency)
            finally:
                proc.stop()
    finally:
        emu.stop()
    (out / "compare.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    md = markdown(report)
    (out / "compare.md").write_text(md)
    print(md)


def soak(proc: Proc, urls: list[str], rate: float, seconds: float, step_s: float = 30.0,
         concurrency: int = 0) -> dict[str, Any]:
    """Load for `seconds`, in steps (Poisson at `rate`, or `concurrency` closed-loop streams); the gateway's
    RSS (MB) after each step."""
    samples = [(0.0, round(rss_mb(proc.pid), 1))]
    failed = completed = 0
    t = 0.0
    while t < seconds:
        if concurrency:
            n = max(30, int(3 * step_s * concurrency / 0.25))  # more than enough; cut at step_s
            s = measure(urls, closed_plans(concurrency, n, (16, 32), random.Random(int(t))), concurrency,
                        [proc.pid], max_s=step_s)
        else:
            plans = workload.poisson(rate, max(1, int(rate * step_s)), 32, 24, random.Random(int(t)))
            s = measure(urls, plans, 0, [proc.pid])
        completed, failed = completed + s["completed"], failed + s["failed"]
        t += step_s
        samples.append((t, round(rss_mb(proc.pid), 1)))
        print(f"soak {t:.0f}s: RSS {samples[-1][1]} MB, TTFT p99 {s['ttft_raw_ms']['p99']} ms", flush=True)
    return {"rate": None if concurrency else rate, "concurrency": concurrency or None, "seconds": seconds,
            "completed": completed, "failed": failed, "rss_mb": samples}


def brief(s: dict[str, Any]) -> str:
    return (f"{s['completed']}/{s['requests']} ok, {s['request_rate']:.1f} req/s, TTFT p50 "
            f"{s['ttft_raw_ms']['p50'] or 0:.2f} p99 {s['ttft_raw_ms']['p99'] or 0:.2f} ms, "
            f"client CPU {100 * s['client']['cpu_share_of_one_core']:.0f}%, procs {s['proc_cpu_s']}")


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": sys.version.split()[0],
            "load_avg_at_start": os.getloadavg()}


def analyse(report: dict[str, Any], limit_ms: float) -> None:
    """Added TTFT over direct for every run, and each target's highest rate within the limit."""
    direct = report["targets"].get("direct")
    if not direct:
        return
    for entry in report["targets"].values():
        for kind in ("closed", "sweep"):
            for key, s in entry.get(kind, {}).items():
                base = direct.get(kind, {}).get(key)
                if base is None or not s["completed"]:
                    continue
                s["added_ttft_ms"] = {q: round(s["ttft_raw_ms"][q] - base["ttft_raw_ms"][q], 3)
                                      for q in ("p50", "p99")}
        best = 0.0
        for rate, s in sorted(entry.get("sweep", {}).items(), key=lambda kv: float(kv[0])):
            added = s.get("added_ttft_ms")
            if (added is None or s["failed"] or added["p99"] > limit_ms
                    or s["completed"] < s["requests"]):
                break
            best = float(rate)
        entry["max_rate_within_limit"] = best


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}; gateways pinned to one core: "
             f"{report['pinned']}. Peers: {report['versions']}.", "",
             "| target | concurrency | req/s | TTFT p50 ms | TTFT p99 ms | added p50 ms | added p99 ms | "
             "TPOT p50 ms | gateway CPU s/1k req |", "|---|---|---|---|---|---|---|---|---|"]
    for name, e in report["targets"].items():
        if "error" in e:
            # a peer's own message (its launch's or its answer's): one cell of text, never a row, a tag or a link
            lines.append(f"| {name} | failed: {markdown_cell((e['error'].splitlines() or [''])[0][:150])} | | | | | | | |")
        for c, s in e.get("closed", {}).items():
            add = s.get("added_ttft_ms", {"p50": 0.0, "p99": 0.0})
            gw = [v for k, v in s["proc_cpu_s"].items() if k == str(e.get("proc_pid"))]
            per_k = f"{1000 * gw[0] / s['completed']:.2f}" if gw and s["completed"] else "-"
            raw = {q: "-" if s["ttft_raw_ms"][q] is None else f"{s['ttft_raw_ms'][q]:.2f}" for q in ("p50", "p99")}
            tpot = s.get("tpot_ms", {}).get("p50")
            lines.append(f"| {name} | {c} | {s['request_rate']:.1f} | {raw['p50']} | {raw['p99']} | "
                         f"{add['p50']:+.2f} | {add['p99']:+.2f} | {'-' if tpot is None else f'{tpot:.2f}'} | "
                         f"{per_k} |")
    lines += ["", f"Open loop (Poisson) sweep: highest offered rate with p99 added TTFT < {ADDED_P99_LIMIT_MS:g} ms, "
              "no errors and the rate achieved:", "", "| target | max rate (req/s) | p99 added TTFT per rate (ms) "
              "| RSS start/end MB |", "|---|---|---|---|"]
    for name, e in report["targets"].items():
        per_rate = ", ".join(f"{float(r):g}: {s.get('added_ttft_ms', {}).get('p99', 0):+.1f}"
                             + (f" ({s['failed']} failed)" if s["failed"] else "") for r, s in e.get("sweep", {}).items())
        lines.append(f"| {name} | {e.get('max_rate_within_limit', 0):g} | {per_rate} | "
                     f"{e.get('rss_mb_start', '-')}/{e.get('rss_mb_end', '-')} |")
    if "soak" in report:
        k = report["soak"]
        load = (f"{k['concurrency']} streams (closed loop)" if k.get("concurrency")
                else f"{k['rate']:g} req/s (Poisson)")
        lines += ["", f"Soak of `aigrid up`: {k['seconds']:g} s at {load}, {k['completed']} ok, "
                  f"{k['failed']} failed; RSS MB over time: " + ", ".join(f"{t:g}s {m}" for t, m in k["rss_mb"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
