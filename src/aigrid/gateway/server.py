"""Run a whole grid in the foreground: every embedded engine as its own llama-server process, then the
gateway (uvicorn) in front of them. Ctrl-C (or SIGTERM) stops the gateway, then every engine."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.markup import escape
from starlette.routing import BaseRoute

from aigrid.core.types import GeoPoint
from aigrid.engines.llama_server import LlamaServerProcess, embedded_config, embedded_kv_cache
from aigrid.engines.netns import SITE_PORT, SiteNetwork, cleanup_stale, in_namespace
from aigrid.engines.netns_plan import plan_links
from aigrid.errors import ConfigError, SpecError
from aigrid.gateway.app import Gateway, build_app, build_gateway, startup_problem
from aigrid.gateway.heap import settle_when_started
from aigrid.gateway.responses_socket import server_options
from aigrid.gateway.stopping import gateway_server
from aigrid.gateway.wiring import KEY_TEXT, build_engines, engine_keys, https_origins, own_secrets, upstream
from aigrid.gateway.workers import run_workers
from aigrid.listen_errors import cannot_listen
from aigrid.logs import configure as configure_logs
from aigrid.memory import Memory, available_memory
from aigrid.security.keys_cli import SECRET_ENV
from aigrid.spec import load
from aigrid.spec.models import GridSpec, SecuritySpec

LOG_DIR = Path(".aigrid") / "logs"


def check_kv_cache_fits(spec: GridSpec, source: str,
                        available: Callable[[], Memory | None] = available_memory) -> None:
    """Before `aigrid up` starts any engine: the KV cache its embedded engines allocate at start (each slot holds its
    model's context, llama_server.embedded_kv_cache, the figure `aigrid spec check` prints) must fit in the memory
    new allocations can take (aigrid.memory.available_memory: the machine's, or a cgroup limit where smaller), else a
    SpecError naming each embedded model's `context` and the figures. The spec's bound (models.MAX_CONTEXT,
    10,485,760) catches a context typed with three zeros too many, not two: 1,310,720 passed, and each 2-slot engine
    asked for 56 GiB of KV cache at start (an engine's RSS grows with it: KV_BYTES_PER_TOKEN). What that does was
    not measured: under the kernel's default heuristic overcommit (vm.overcommit_memory=0) one allocation larger than
    RAM and swap together is likely refused and the engine fails to start; swap, or the OOM killer, is the case where
    each engine's cache fits alone but not their sum. Refused, not warned: no grid serves from a cache that does not
    fit. The engines' models and buffers (about 130 MiB each) are not counted: only a cache over all there is is
    refused. Not checked where the available memory is not said (`available` answers None)."""
    cache = embedded_kv_cache(spec)
    over = kv_cache_over(sum(cache.values()), available) if cache else None
    if over is None:
        return
    per_model: dict[str, int] = {}
    for ep in spec.endpoints:
        if ep.id in cache:
            per_model[ep.model] = per_model.get(ep.model, 0) + ep.slots
    parts = [f"models.{m}.context {spec.models[m].context:,} tokens x {slots} slots" for m, slots in per_model.items()]
    raise SpecError(source, [f"{' and '.join(parts)} of its embedded engines: {over}. Lower the context (or the "
                             "endpoints' slots): `aigrid spec check` prints the cache a spec allocates"])


def kv_cache_over(total: int, available: Callable[[], Memory | None] = available_memory) -> str | None:
    """The one check of a KV cache allocated at start (`total` bytes) against the memory new allocations can take,
    for `aigrid up` (check_kv_cache_fits) and `aigrid node` (cli.py): None when it fits or the memory is not said,
    else the figures and the limit that refused it, for the caller's error naming what sets the cache."""
    have = available()
    if have is None or total <= have.bytes:
        return None
    return (f"{total / 2**30:,.1f} GiB of KV cache allocated at start, more than the {have.bytes / 2**30:,.1f} GiB "
            f"{have.limit}")


async def site_network(spec: GridSpec, stack: AsyncExitStack, console: Console) -> SiteNetwork | None:
    """In netns mode: one network namespace per site, the kernel delaying packets by the modelled RTT from
    the gateway's location. Closed last (pushed first), after the engines and the gateway."""
    if spec.gateway.network != "netns":
        return None
    origin = load.gateway_location(spec)
    assert origin is not None  # parse_spec requires it in netns mode
    sites = {sid: GeoPoint(s.lat, s.lon) for sid, s in spec.sites.items()
             if any(e.site == sid and e.engine == "embedded" for e in spec.endpoints)}
    net = SiteNetwork(plan_links(origin, sites, route_factor=spec.gateway.route_factor))
    with console.status("creating a network namespace per site..."):
        stale = await cleanup_stale()  # namespaces left by a run that was killed with -9
        if stale:
            console.print(f"  removed leftovers of earlier runs: {', '.join(stale)}", soft_wrap=True)
        await net.start()
    stack.push_async_callback(net.stop)
    for link in net.links.values():
        console.print(f"  site {link.site_id}: namespace {net.namespace(link.site_id)} at "
                      f"{net.address(link.site_id)}, RTT {link.rtt_ms:.0f} ms from {spec.gateway.location} "
                      f"(held by the kernel)", soft_wrap=True)
    return net


def secret_variables(spec: GridSpec) -> frozenset[str]:
    """The variables that hold the gateway's secrets, the external engines' keys and their proxies' credentials:
    an embedded engine's process does not inherit them."""
    return frozenset({*own_secrets(spec), *(ep.api_key_env for ep in spec.endpoints if ep.api_key_env),
                      *(ep.proxy_auth_env for ep in spec.endpoints if ep.proxy_auth_env)})


async def start_embedded(spec: GridSpec, stack: AsyncExitStack, console: Console,
                         net: SiteNetwork | None = None, api_key: str | None = None,
                         stopped: dict[str, bool] | None = None) -> dict[str, str]:
    """Start every embedded endpoint's engine concurrently; each is stopped when `stack` closes, and noted in
    `stopped` (when given) as it stops: True when it stopped within its grace of SIGTERM, False when it was killed
    (stopped_line). `api_key`: the key they require of every request but /health (the gateway's, so that nothing
    else on the machine reaches a model past the firewall, quotas and audit)."""
    stopped = {} if stopped is None else stopped
    procs: dict[str, LlamaServerProcess] = {}
    per_site: dict[str, int] = {}
    for ep in spec.endpoints:
        if ep.engine == "embedded":
            # each slot holds the spec's model context, what the gateway and the agent loop count against
            cfg = embedded_config(LOG_DIR / f"{ep.id}.log", context=spec.models[ep.model].context, slots=ep.slots,
                                  threads=ep.threads, alias=ep.served_model or ep.model)
            cfg = replace(cfg, api_key=api_key, hidden_env=secret_variables(spec))
            if net is not None:
                per_site[ep.site] = per_site.get(ep.site, -1) + 1
                cfg = in_namespace(cfg, net, ep.site, port=SITE_PORT + per_site[ep.site])
            procs[ep.id] = LlamaServerProcess(cfg)
            stack.push_async_callback(_stop_engine, ep.id, procs[ep.id], stopped)
    if procs:
        with console.status(f"starting {len(procs)} embedded llama.cpp engines (SmolLM2-135M-Instruct)..."):
            await asyncio.gather(*(p.start() for p in procs.values()))
    for ep_id, p in procs.items():
        site = next(e.site for e in spec.endpoints if e.id == ep_id)
        console.print(f"  engine [bold]{ep_id}[/] (site {site}) at {p.base_url}  pid {p.pid}  "
                      f"log {p.config.log_path}", soft_wrap=True)
        # an engine that dies is started again on its port (logged on aigrid.engines); stopped before stop()
        stack.push_async_callback(_cancelled, asyncio.create_task(p.supervise(ep_id), name=f"supervise {ep_id}"))
    return {ep_id: p.base_url for ep_id, p in procs.items()}


async def _stop_engine(ep_id: str, process: LlamaServerProcess, stopped: dict[str, bool]) -> None:
    stopped[ep_id] = await process.stop()


def stopped_line(stopped: Mapping[str, bool], workers: int = 1) -> str:
    """What `aigrid up` says once Ctrl-C (or SIGTERM) has stopped it: the gateway and how many engines stopped,
    and which engines did not stop in time (killed). Until the thirty-seventh session it said `stopping
    engines...` and nothing after."""
    gateway = "the gateway" if workers <= 1 else f"the gateway ({workers} worker processes)"
    engines = f" and {len(stopped)} engine{'s' if len(stopped) != 1 else ''}" if stopped else ""
    late = [ep_id for ep_id, in_time in stopped.items() if not in_time]
    killed = (f" ({', '.join(late)} did not stop in time after SIGTERM: killed; "
              f"{'their logs' if len(late) > 1 else 'its log'} under {LOG_DIR})") if late else ""
    return f"stopped {gateway}{engines}{killed}"


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it; an error it ended with is logged, not raised into the shutdown."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        logging.getLogger("aigrid.engines").exception("%s ended with an error", task.get_name())


def _aigrid() -> str:
    """How to call the aigrid command from here (.venv/bin/aigrid after `make run`)."""
    exe = Path(sys.argv[0])
    try:
        return str(exe.resolve().relative_to(Path.cwd())) if exe.name == "aigrid" else "aigrid"
    except ValueError:
        return "aigrid"


DEFAULT_GATEWAY = "http://127.0.0.1:8080"
"""Where `aigrid explain` asks unless given --gateway (cli.py's default)."""


def _a_city(spec: GridSpec) -> str:
    """A client location the grid knows (x-aigrid-client-location names a site's city or one of the spec's
    cities): Tokyo where it is one (the demo's), else the first site's city. Tokyo alone was a 400 on every grid
    without it."""
    known = {s.name.lower() for s in spec.sites.values()} | {c.lower() for c in spec.cities}
    return "Tokyo" if "tokyo" in known else next(iter(spec.sites.values())).name


def banner(spec: GridSpec, host: str, port: int) -> str:
    """What `console.print` shows at the start (rich markup: the URL is escaped, an IPv6 host in brackets)."""
    base = escape(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")  # not http://::1:8000
    model = next(iter(spec.models))
    # max_tokens: without it the answer may run to gateway.max_output_tokens (4,096); the demo's 135M model
    # looped there, and the first command a user ran took 5 minutes on 2 busy cores (7 Dec 2026)
    body = json.dumps({"model": model, "stream": True, "max_tokens": min(64, spec.gateway.max_output_tokens),
                       "messages": [{"role": "user", "content": "Name three rivers in Japan."}]})
    enforce = spec.security.enforce
    # with keys enforced the lines below, as printed, were a 401; explain reads AIGRID_API_KEY itself
    key = ' -H "authorization: Bearer $AIGRID_API_KEY"' if enforce else ""
    curl = (f"curl -sN {base}/v1/chat/completions -H 'content-type: application/json'{key} "
            f"-H {shlex.quote('x-aigrid-client-location: ' + _a_city(spec))} -d {shlex.quote(body)}")
    # explain asks http://127.0.0.1:8080 unless told: another grid's gateway answered "no decision"
    gateway = "" if base == DEFAULT_GATEWAY else f" --gateway {base}"
    keys = (f"  keys:  enforced: {escape(_keys_create(spec))}, then export AIGRID_API_KEY=<the key> for the lines "
            "below\n") if enforce else ""
    # the engines this process started: the embedded ones (`aigrid gateway` refuses a spec with any; `aigrid up`
    # starts them all); it said "and every engine" where it had started none, and the engines ran on; and where
    # `up` mixes embedded and external endpoints, it stops the ones it started only
    embedded = [e.engine == "embedded" for e in spec.endpoints]
    stops = (" and the engines it started" + ("" if all(embedded) else " (the others run elsewhere, and run on)")
             if any(embedded) else " (its engines run elsewhere, and run on)")
    return (f"\n[bold green]aigrid gateway[/] on {base}  (OpenAI base URL: {base}/v1)\n"
            f"  sites: {', '.join(f'{k} ({v.jurisdiction})' for k, v in spec.sites.items())}\n"
            f"{keys}"
            f"  try:   {curl}\n"
            f"  then:  {_aigrid()} explain <x-aigrid-decision header>{gateway}   |   {base}/metrics   |   "
            f"{base}/v1/grid\n"
            f"  map:   {base}/dashboard\n"
            f"  Ctrl-C stops the gateway{stops}."
            "\n")


def _keys_create(spec: GridSpec) -> str:
    """The command that makes a key this gateway takes: `keys create` writes the default key file and reads the
    secret from AIGRID_KEY_SECRET, so a spec's own security.keys_file is given as --keys-file (the key went to a
    file the gateway never reads: 401) and its own security.secret_env as --secret-env (a name ENV_NAME holds to a
    shell word, so it needs no quoting)."""
    defaults = SecuritySpec()
    sec = spec.security
    command = f"{_aigrid()} keys create TENANT"
    if sec.keys_file != defaults.keys_file:
        command += f" --keys-file {shlex.quote(sec.keys_file)}"
    if sec.secret_env == SECRET_ENV:
        return f"{command} (with {SECRET_ENV})"
    return f"{command} --secret-env {sec.secret_env}"


def _loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def _bind(host: str, port: int) -> None:
    """Bind (and let go of) host:port as the gateway will (workers.listen); OSError when it cannot."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def _free_port_after(host: str, port: int, tries: int = 20) -> int | None:
    """The first of the next `tries` ports that host can listen on now, to name in the error."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        try:
            _bind(host, candidate)
        except OSError:
            continue
        return candidate
    return None


def _this_command_on(port: int | str) -> str:
    """The command the user ran (sys.argv) with `--port` set to `port`, its own --port replaced: `aigrid gateway
    grid.yaml` on a taken port was told `aigrid up examples/demo.yaml --port N`, another command on another spec."""
    args: list[str] = []
    given = iter(sys.argv[1:])
    for a in given:
        if a == "--port":
            next(given, None)
        elif not a.startswith("--port="):
            args.append(a)
    return shlex.join([_aigrid(), *args, "--port", str(port)])


def _cannot_listen(e: OSError, host: str, port: int, *, port_name: str, host_name: str, in_use: str,
                   in_use_advice: Callable[[int | str, str], str], root_advice: str) -> ConfigError:
    """The error for a port this process cannot listen on (listen_errors.cannot_listen, as the emulator's): a port in
    use (in_use names the option first, if any; in_use_advice(n, " (free now)" or "") what to do, with a free port n
    to name), one below 1024 without root (port_name, then root_advice), else an address not of this machine
    (host_name)."""
    def free_port() -> str:
        free = _free_port_after(host, port)
        return in_use_advice(free, " (free now)") if free else in_use_advice("N", "")

    return cannot_listen(e, f"{host}:{port}", in_use=free_port, root=root_advice,
                         other_host=" (an address of this machine, e.g. 127.0.0.1 or 0.0.0.0)", in_use_option=in_use,
                         port_option=f"{port_name}: ", host_option=f"{host_name}: ")


def _check_port_free(host: str, port: int) -> None:
    """Fail before starting any engine when the gateway's port is taken (another grid still running?), naming
    how to find what holds it and a free port to start on instead: as `make run PORT=N` when `make run` started this
    (its recipe sets AIGRID_MAKE_RUN; not MAKELEVEL, which any make sets, a user's own Makefile too), else as
    the command the user ran with --port N (_this_command_on)."""
    def advice(n: int | str, free_now: str) -> str:
        if os.environ.get("AIGRID_MAKE_RUN"):
            other = (f"start on port {n}{free_now} instead: `make run PORT={n}` (add PORT={n} to the make "
                     f"command you ran; `{_aigrid()} up SPEC --port {n}` without make)")
        else:
            other = f"add --port {n}{free_now} to this command: `{_this_command_on(n)}`"
        return (f"is another gateway running (`make run` or `aigrid up` in another terminal)? `ss -ltnp 'sport = "
                f":{port}'` names what holds the port. Stop it (Ctrl-C where it runs), or {other}")
    try:
        _bind(host, port)
    except OSError as e:
        raise _cannot_listen(e, host, port, port_name="gateway.port", host_name="gateway.host", in_use="",
                             in_use_advice=advice, root_advice="a port below 1024 needs root "
                             "(net.ipv4.ip_unprivileged_port_start): give --port or gateway.port 1024 or above") from e


def _check_node_port_free(host: str, port: int) -> None:
    """`aigrid node`'s port, before its engine starts: on a port something held, llama-server failed to bind and the
    node printed its exit and twenty lines of its log, the cause among them; one line names the option now."""
    def advice(n: int | str, free_now: str) -> str:
        return f"`ss -ltnp 'sport = :{port}'` names what holds the port. Stop it, or give --port {n}{free_now}"
    try:
        _bind(host, port)
    except OSError as e:
        raise _cannot_listen(e, host, port, port_name="--port", host_name="--host", in_use="--port: ",
                             in_use_advice=advice,
                             root_advice="a port below 1024 needs root: give --port 1024 or above") from e


ExtraRoutes = Callable[[Gateway, Callable[[], bool]], Sequence[BaseRoute]]
"""Routes mounted beside the API (the dashboard), given the gateway and a `stopping()` flag."""


async def run_grid(spec: GridSpec, console: Console, *, port: int | None = None,
                   start_engines: bool = True, extra_routes: ExtraRoutes | None = None, workers: int = 1,
                   worker_options: Mapping[str, Any] | None = None, source: str | None = None,
                   memory: Callable[[], Memory | None] = available_memory) -> None:
    """Start the spec's embedded engines (unless start_engines is False) and serve the gateway until stopped:
    in this process (workers=1), or in `workers` processes on one socket (workers.py; `worker_options` tell
    each worker what `extra_routes` would have mounted, since a function cannot cross processes). `source`: the
    spec's file, which a problem found here names (as the loader's do). `memory`: the machine's available memory
    (check_kv_cache_fits)."""
    host, port = spec.gateway.host, port or spec.gateway.port
    logs = configure_logs(spec.gateway.log_level)
    try:
        await _serve_grid(spec, console, host, port, start_engines, extra_routes, workers, worker_options or {},
                          source or repr(spec.name), memory)
    finally:
        logs.stop()


async def _serve_grid(spec: GridSpec, console: Console, host: str, port: int, start_engines: bool,
                      extra_routes: ExtraRoutes | None, workers: int, worker_options: Mapping[str, Any],
                      source: str, memory: Callable[[], Memory | None]) -> None:
    embedded = [e.id for e in spec.endpoints if e.engine == "embedded"]
    if not start_engines and embedded:  # before the port: `aigrid gateway` of the demo beside `make run` said "in use"
        # named by its file, as `spec check` names it: it said "invalid grid spec 'demo'" (the spec's name:)
        raise SpecError(source, [f"endpoints {', '.join(embedded)} are embedded: use `aigrid up` to start them, or "
                                 "give them engine: llamacpp and the url of a running llama-server"])
    if start_engines:
        check_kv_cache_fits(spec, source, memory)
    _check_port_free(host, port)
    engine_keys(spec)  # an external engine's key missing from the environment: said before anything starts
    https_origins(spec)  # and a CA file that cannot be read, a proxy's credentials missing
    # one random key per run for the embedded engines: only this gateway (and its workers) can reach them
    key = secrets.token_urlsafe(32) if embedded else None
    stopped: dict[str, bool] = {}  # each engine as it stops: in time, or killed
    served = False  # the gateway served and stopped (a start that failed says its error instead)

    def say_stopped() -> None:
        if served:
            console.print(stopped_line(stopped, workers), highlight=False, soft_wrap=True)

    async with AsyncExitStack() as stack:
        stack.callback(say_stopped)  # pushed first, run last: once every engine (and netns's namespaces) stopped
        net = await site_network(spec, stack, console) if start_engines else None
        urls = await start_embedded(spec, stack, console, net, key, stopped)
        if workers > 1:
            def started() -> None:
                console.print(banner(spec, host, port) + f"  {workers} worker processes on one socket.\n",
                              highlight=False, soft_wrap=True)

            await run_workers(spec, host, port, urls, workers, worker_options=worker_options, started=started,
                              embedded_key=key)
            if embedded:
                console.print("stopping engines...")
            served = True
            return
        up = upstream(spec)
        stack.push_async_callback(up.aclose)
        gateway = build_gateway(spec, build_engines(spec, urls, up, embedded_key=key))
        server: uvicorn.Server | None = None

        def stopping() -> bool:
            return server is not None and server.should_exit

        routes = extra_routes(gateway, stopping) if extra_routes is not None else ()
        app = build_app(gateway, extra_routes=routes)
        app.quiet_startup = True  # a failed start is raised below, in one line
        server = gateway_server(app, gateway, host=host, port=port, loop="uvloop", **server_options(spec))

        async def announce() -> None:  # only once the gateway really listens
            if await settle_when_started(server, 0.02):
                console.print(banner(spec, host, port), highlight=False, soft_wrap=True)

        announcer = asyncio.create_task(announce())
        try:
            await server.serve()
        except SystemExit:  # uvicorn's exit when the lifespan's start failed
            if gateway.startup_error is None:
                raise
            raise ConfigError(startup_problem(gateway.startup_error)) from None
        finally:
            announcer.cancel()
        if embedded:
            console.print("stopping engines...")
        served = True


async def run_node(console: Console, *, host: str, port: int, slots: int, threads: int, alias: str, context: int,
                   api_key_env: str | None = None, environ: Mapping[str, str] | None = None) -> None:
    """One embedded engine in the foreground, for a site on another machine; stops on Ctrl-C or SIGTERM.
    `context`: the tokens each slot holds (the gateway's spec declares the same as its model's `context`).
    `api_key_env`: the environment variable whose value the engine requires of every request but /health
    (the gateway's endpoint names the same variable in its `api_key_env`)."""
    env = os.environ if environ is None else environ
    if api_key_env is None and env.get("LLAMA_API_KEY", "").strip():  # llama.cpp's own way: honoured, said
        api_key_env = "LLAMA_API_KEY"
        console.print("the engine requires the key in LLAMA_API_KEY (as if --api-key-env LLAMA_API_KEY)",
                      highlight=False, soft_wrap=True)
    if api_key_env is None and env.get("LLAMA_ARG_API_KEY_FILE"):
        raise ConfigError("LLAMA_ARG_API_KEY_FILE is set, but aigrid node keys its engine from a variable: give "
                          "--api-key-env NAME")
    key = None
    if api_key_env is not None:
        key = env.get(api_key_env, "").strip()
        if not key:
            raise ConfigError(f"--api-key-env: environment variable {api_key_env} is not set or empty")
        if not KEY_TEXT.fullmatch(key) or "," in key:  # llama-server reads a comma as a list of keys
            raise ConfigError(f"--api-key-env: the value of {api_key_env} is not a key: printable ASCII without "
                              "spaces or commas")
    elif not _loopback(host):
        console.print(f"[yellow]warning[/]: the engine listens on {escape(host)} without a key: whoever reaches "
                      f"port {port} uses the model past the gateway's firewall, quotas and audit log "
                      "(give --api-key-env NAME, and the endpoint api_key_env: NAME)", soft_wrap=True)
    _check_node_port_free(host, port)
    cfg = replace(embedded_config(LOG_DIR / f"node-{port}.log", context=context, slots=slots, threads=threads,
                                  port=port, alias=alias), host=host, api_key=key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with LlamaServerProcess(cfg) as proc:
        console.print(f"engine {alias} at {proc.base_url}  pid {proc.pid}  context {context} tokens a slot "
                      f"x {slots} slots  log {cfg.log_path}", soft_wrap=True)
        supervisor = asyncio.create_task(proc.supervise(alias), name=f"supervise {alias}")
        try:
            await stop.wait()
        finally:
            await _cancelled(supervisor)
