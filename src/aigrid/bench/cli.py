"""`aigrid bench URL ...`: load-test any OpenAI-compatible endpoint; print a table, write JSON and PNGs.

The lead mounts it with `app.command("bench")(bench_command)`; `run_bench()` is the same without typer.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aigrid.bench import workload
from aigrid.bench.http import Target
from aigrid.bench.report import Slo, summary, summary_line, table, write_json, write_plots
from aigrid.bench.runner import Run, RunConfig, run
from aigrid.cli_error import print_error
from aigrid.errors import ConfigError
from aigrid.outdir import prepare_dir, write_failed
from aigrid.printable import printable
from aigrid.spec.models import url_without_password
from aigrid.traces import trace_dir

DEFAULT_TRACE = "azure_llm_2023_conv.csv"
"""--trace's default: the Azure 2023 conversation trace shipped in the repository's data/traces (CC-BY 4.0),
found wherever aigrid bench runs from (traces.trace_dir)."""


class Mode(StrEnum):
    poisson = "poisson"
    trace = "trace"
    closed = "closed"


MAX_SCHEDULE_S = 7 * 24 * 3600
"""The longest a run's arrivals may be spread over (the last request's send time, poisson or trace)."""


def discover_model(base_url: str, headers: Sequence[tuple[str, str]] = ()) -> str:
    """The first model the endpoint lists at GET {base_url}/models (with the run's headers: its key; a
    user:password@ as the run sends it, Target.with_auth)."""
    url = base_url.rstrip("/") + "/models"
    shown, base = url_without_password(url), url_without_password(base_url)  # a user:password@ is quoted user:***@
    sent = Target(base_url).with_auth(dict(headers))
    try:  # httpx sends a URL's userinfo as Basic over any Authorization given: without it, the run's choice holds
        r = httpx.get(httpx.URL(url).copy_with(userinfo=b""), headers=sent, timeout=5, trust_env=False)
    except httpx.TransportError as e:  # it said "[Errno 111] Connection refused", no URL
        raise ValueError(f"GET {shown}: {e or type(e).__name__} (is the server up at {base}?)") from None
    if r.status_code != 200:  # raise_for_status said "Client error '404 Not Found' ..." and sent the user to MDN
        hint = {404: "give the OpenAI base URL, the one that ends in /v1 (e.g. http://127.0.0.1:8080/v1), or "
                     "pass --model",
                401: "pass --api-key", 403: "pass a key that may list models, or --model"}.get(r.status_code,
                                                                                             "or pass --model")
        raise ValueError(f"GET {shown} answered HTTP {r.status_code}: {hint}")
    try:
        body = r.json()
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):  # another server at that URL: a traceback (a JSON array) or "Expecting value"
        raise ValueError(f"GET {shown} answered no OpenAI model list (is it an OpenAI-compatible base URL?); "
                         "give the one that ends in /v1, or pass --model")
    first = data[0] if data else None
    if not isinstance(first, dict) or not isinstance(first.get("id"), str) or not first["id"]:
        raise ValueError(f"{shown} lists no model" + (" with an id" if data else "") + "; pass --model")
    return first["id"]


def failure_hint(errors: dict[str, int], completed: int, urls: Sequence[str]) -> str | None:
    """What to do about the run's failures when their cause is plain from the errors alone: with --model (no
    GET /models to say so first) a base URL without its /v1 had every request answered `HTTP 404` by vLLM, SGLang
    or the emulator, and nothing listening had each one `connect failed`, the table all dashes and no word of why."""
    bare = [url_without_password(u) for u in urls if not u.rstrip("/").endswith("/v1")]
    if bare and any(e.startswith("HTTP 404") for e in errors):
        return (f"{', '.join(bare)} answered HTTP 404: give the OpenAI base URL, the one that ends in /v1 "
                f"(e.g. {bare[0].rstrip('/')}/v1)")
    if completed == 0 and errors and all(e.startswith("connect failed") for e in errors):
        return f"no request connected: is the server up at {', '.join(map(url_without_password, urls))}?"
    return None


def event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run
    return uvloop.run


def run_bench(urls: list[str], plans: list[workload.Plan], config: RunConfig, *, console: Console,
              quiet: bool = False) -> Run:
    with Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("bench", total=len(plans), info="")

        def report(done: int, in_flight: int, total: int) -> None:
            progress.update(task, completed=done, info=f"{in_flight} in flight")

        result: Run = event_loop_runner()(run(config, plans, report))
        return result


def bench_command(
    url: Annotated[list[str], typer.Argument(help="base URL(s), e.g. http://127.0.0.1:8080/v1; several are "
                                                   "used round-robin")],
    mode: Annotated[Mode | None, typer.Option(help="poisson: open loop at --rate; trace: open-loop replay of a "
                                                    "trace file; closed: --concurrency workers back to back "
                                                    "(default: trace with --trace, else poisson)")] = None,
    requests: Annotated[int, typer.Option("--requests", "-n", min=1, help="number of requests")] = 100,
    rate: Annotated[float, typer.Option(help="poisson: mean requests per second")] = 10.0,
    concurrency: Annotated[int, typer.Option(min=1, help="closed: concurrent streams")] = 16,
    trace_file: Annotated[Path | None, typer.Option("--trace", help="trace: a trace file (Azure LLM CSV, BurstGPT CSV, "
                                                            "Mooncake JSON Lines; docs/simulator.md, 'Trace files'); default: the "
                                                            "shipped Azure 2023 conversation trace")] = None,
    speedup: Annotated[float, typer.Option(help="trace: divide the trace's arrival gaps by this")] = 1.0,
    trace_start: Annotated[int, typer.Option(min=0, help="trace: first request index")] = 0,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="poisson/closed: prompt size in tokens")] = 128,
    output_tokens: Annotated[int, typer.Option(min=1, help="poisson/closed: output tokens (max_tokens)")] = 64,
    max_prompt_tokens: Annotated[int, typer.Option(min=1, help="trace: clip prompts to this")] = 4096,
    max_output_tokens: Annotated[int, typer.Option(min=1, help="trace: clip outputs to this")] = 1024,
    model: Annotated[str | None, typer.Option(help="model name (default: the first at /models)")] = None,
    completions: Annotated[bool, typer.Option("--completions", help="use /completions, not chat")] = False,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="stream the answers (TTFT and inter-token latency need it)")] = True,
    unique_prompts: Annotated[bool, typer.Option("--unique-prompts/--same-prompts", help="a different prompt per "
                                                  "request (defeats prefix caches) or one per size")] = True,
    slo_ttft_ms: Annotated[float, typer.Option(help="goodput SLO: TTFT at most")] = 1000.0,
    slo_tpot_ms: Annotated[float, typer.Option(help="goodput SLO: time per output token at most")] = 100.0,
    header: Annotated[list[str] | None, typer.Option(help="extra header 'name: value' (repeatable)")] = None,
    api_key: Annotated[str | None, typer.Option(help="sent as Authorization: Bearer")] = None,
    timeout: Annotated[float, typer.Option(help="per-request timeout, seconds")] = 300.0,
    seed: Annotated[int, typer.Option(help="seed for Poisson arrivals")] = 0,
    out: Annotated[Path | None, typer.Option(help="directory for bench.json and PNG plots")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="with --out, also the PNG plots (needs matplotlib)")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Load-test OpenAI-compatible endpoints: TTFT, inter-token latency, end-to-end latency, throughput,
    goodput under an SLO. The client reports its own CPU use and send lag, so you can tell it was not the
    bottleneck."""
    console = Console(stderr=True)
    # `127.0.0.1:8080/v1` (no scheme) was "Request URL is missing an 'http://' or 'https://' protocol" (is the server
    # up?), and with --model every request failed so: plain http is meant, as curl takes it
    url = [u if "://" in u else f"http://{u}" for u in url]
    try:
        for u in url:  # checked by the run, after GET /models: `http://[::1` was "Invalid IPv6 URL", no URL named
            try:
                Target(u)
            except ValueError as e:  # named as given but for a user:password@'s password (user:***@)
                shown = url_without_password(u)
                raise ValueError(str(e) if repr(shown) in str(e) else f"{shown!r}: {e}") from None
        if trace_file is not None and mode not in (None, Mode.trace):  # it was ignored without a word: a run of
            # --mode's made-up prompts
            raise ValueError(f"--trace {trace_file}: a trace is replayed only with --mode trace, not --mode "
                             f"{mode.value}; leave --mode out or give --mode trace")
        if mode is None:  # a trace file given is the run's workload: `--trace FILE` alone replays it
            mode = Mode.trace if trace_file is not None else Mode.poisson
        # the flag named, before the workload's own check ("rate must be a positive number" named none)
        for flag, value, used in (("--rate", rate, mode is Mode.poisson), ("--speedup", speedup, mode is Mode.trace)):
            if used and not 0 < value < math.inf:
                raise ValueError(f"{flag} must be a positive number, not {value}")
        if mode is Mode.poisson:
            plans = workload.poisson(rate, requests, prompt_tokens, output_tokens, random.Random(seed))
        elif mode is Mode.trace:
            plans = workload.trace(trace_file or trace_dir() / DEFAULT_TRACE, speedup=speedup, count=requests, start=trace_start,
                                   max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens)
        else:
            plans = workload.closed(requests, prompt_tokens, output_tokens)
        span = max((p.at for p in plans if p.at is not None), default=0.0)
        if span > MAX_SCHEDULE_S:  # --rate 1e-300 waited ~1e300 s for its first request
            flag = f"--rate {rate:g}" if mode is Mode.poisson else f"--speedup {speedup:g}"
            raise ValueError(f"{flag}: the {len(plans):,} requests would be sent over {span:.3g} s, past "
                             f"{MAX_SCHEDULE_S:,} s (a week); raise {flag.split()[0]} or send fewer (--requests)")
        for flag, value in (("--timeout", timeout), ("--slo-ttft-ms", slo_ttft_ms), ("--slo-tpot-ms", slo_tpot_ms)):
            if not 0 < value < math.inf:  # NaN too: every comparison with it is false
                raise ValueError(f"{flag} must be a positive number, not {value}")
        for h in header or []:
            name, colon, _ = h.partition(":")
            if not colon or not name.strip():
                raise ValueError(f"--header {h!r}: expected 'name: value'")
        headers = [(k.strip(), v.strip()) for k, v in (h.split(":", 1) for h in (header or []))]
        if out is not None:
            prepare_dir(out)  # before the load, not after it
        if api_key:
            headers.append(("authorization", f"Bearer {api_key}"))
        name = model or discover_model(url[0], headers)
    except (ValueError, OSError, httpx.HTTPError, ConfigError) as e:
        print_error(console, e)
        raise typer.Exit(2) from None
    config = RunConfig(tuple(url), name, chat=not completions, stream=stream,
                       concurrency=concurrency if mode is Mode.closed else 0, timeout_s=timeout, unique_prompts=unique_prompts,
                       headers=tuple((k, v) for k, v in headers))
    try:
        result = run_bench(url, plans, config, console=console, quiet=quiet)
    except ValueError as e:
        print_error(console, e)
        raise typer.Exit(2) from None
    s = summary(result, Slo(slo_ttft_ms, slo_tpot_ms))
    # the model name may be the target's (the first at /models), the errors its answers: text, never markup or
    # a terminal's escape sequence
    title = escape(printable(f"aigrid bench: {mode.value} against {', '.join(map(url_without_password, url))} ({name})"))
    Console().print(table(s, title=title))
    Console().print(summary_line(s), highlight=False, soft_wrap=True)
    for err, n in s["errors"].items():
        console.print(f"[red]{n} x[/] {escape(printable(str(err)))}", highlight=False, soft_wrap=True)  # one line
    hint = failure_hint(s["errors"], s["completed"], url)
    if hint:
        console.print(f"hint: {escape(hint)}", highlight=False, soft_wrap=True)
    if out is not None:
        try:
            write_json(out / "bench.json", result, s)
            written = [out / "bench.json"]
            if plots:
                written += write_plots(out, result)
        except OSError as e:
            print_error(console, write_failed("--out", out, e))
            raise typer.Exit(2) from None
        console.print("wrote " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)
    if s["completed"] == 0:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(bench_command)
