"""`aigrid emulator --port P`: run one or more emulated engines in the foreground (one process, uvloop).

The lead mounts it with `app.command("emulator")(emulator_command)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from aigrid.engines.emulator import SSE_LINE_ENDS, bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.engines.step_cost import DEFAULT_CHUNK_TOKENS
from aigrid.errors import ConfigError
from aigrid.listen_errors import cannot_listen


async def run_emulators(config: EmulatorConfig, host: str, port: int, count: int, sse_line_end: bytes = b"\n") -> None:
    """Serve `count` independent emulated engines on port, port+1, ... until SIGINT/SIGTERM. A port that cannot be
    bound at start-up is a ConfigError naming the option to change (listen_errors.cannot_listen); an OSError later
    is not blamed on --port or --host."""
    servers = []
    for i in range(count):
        at = port + i if port else 0
        try:
            servers.append((await serve(config, host, at, sse_line_end=sse_line_end))[0])
        except OSError as e:
            for s in servers:
                s.close()
            raise cannot_listen(e, f"{host} port {at}",
                                in_use=lambda: "give another --port (--port 0: any free one)",
                                root="a port below 1024 needs root: give --port 1024 or above",
                                other_host="; give --host an address of this machine, e.g. 127.0.0.1") from e
    ports = ", ".join(str(bound_port(s)) for s in servers)
    print(f"aigrid engine emulator: {count} engine(s) '{config.model}' on {host} port(s) {ports}; "
          f"slots {config.slots}, prefill {config.prefill_base_ms} + {config.prefill_ms_per_token} ms/token, "
          f"step {config.decode_base_ms} + {config.decode_ms_per_seq} ms x batch + {config.kv_ms_per_token} ms x "
          f"context tokens, chunks of {config.chunk_tokens}; max_model_len {config.max_model_len}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def emulator_command(
    port: Annotated[int, typer.Option(min=0, max=65535, help="first port (0: any free port)")] = 9100,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    engines: Annotated[int, typer.Option(min=1, help="independent engines on consecutive ports")] = 1,
    model: Annotated[str, typer.Option(help="model name the emulator reports")] = "emulated",
    slots: Annotated[int, typer.Option(min=1, help="batch slots (max running requests); more wait in a queue")] = 256,
    prefill_base_ms: Annotated[float, typer.Option(help="fixed time a prefill chunk adds to its step, ms")] = 1.0,
    prefill_ms_per_token: Annotated[float, typer.Option(help="prefill time per prompt token, ms")] = 0.02,
    decode_base_ms: Annotated[float, typer.Option(help="W: decode step time with an empty batch, ms")] = 10.0,
    decode_ms_per_seq: Annotated[float, typer.Option(help="H: added step time per running request, ms")] = 0.05,
    kv_ms_per_token: Annotated[float, typer.Option(help="added step time per context token in the batch, ms")] = 0.0,
    chunk_tokens: Annotated[int, typer.Option(min=1, help="most prompt tokens prefilled in one step")] = DEFAULT_CHUNK_TOKENS,
    default_max_tokens: Annotated[int, typer.Option(min=1, help="natural answer length: the emulated model ends an answer (finish_reason stop) after this many tokens unless the request sets ignore_eos; a smaller max_tokens cuts it (finish_reason length)")] = 128,
    kv_tokens: Annotated[int, typer.Option(min=1, help="KV-cache capacity in tokens (admission, kv_cache_usage_perc)")] = 1_000_000,
    max_model_len: Annotated[int, typer.Option(min=1, help="the context it says it holds (GET /v1/models' max_model_len, as vLLM's --max-model-len; not enforced): give the spec's context of its model")] = 8192,
    sse_line_end: Annotated[str, typer.Option(help="line ends of the SSE stream: lf, crlf or cr")] = "lf",
) -> None:
    """Run an ENGINE EMULATOR: OpenAI-compatible, the simulator's engine timing (continuous batching with
    chunked prefill, step = W + H*n + k*K [+ prefill chunk], batch slots, KV cache), vLLM-named /metrics. It generates no text; it exists to measure gateways and load balancers."""
    try:
        config = EmulatorConfig(model=model, slots=slots, prefill_base_ms=prefill_base_ms,
                                prefill_ms_per_token=prefill_ms_per_token, decode_base_ms=decode_base_ms,
                                decode_ms_per_seq=decode_ms_per_seq, kv_ms_per_token=kv_ms_per_token,
                                chunk_tokens=chunk_tokens, default_max_tokens=default_max_tokens,
                                kv_tokens=kv_tokens, max_model_len=max_model_len)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if sse_line_end not in SSE_LINE_ENDS:
        raise typer.BadParameter(f"--sse-line-end must be one of {', '.join(SSE_LINE_ENDS)}")
    if port and port + engines - 1 > 65535:
        raise typer.BadParameter(f"{engines} engines from port {port} run past 65535", param_hint="--port")
    eol = SSE_LINE_ENDS[sse_line_end]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(run_emulators(config, host, port, engines, eol))
    except ConfigError as e:  # the start-up bind only (run_emulators): the option to change named
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    typer.run(emulator_command)
