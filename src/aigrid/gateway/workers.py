"""`aigrid up|gateway --workers N`: N gateway processes on one listening socket, one hub in the parent.

One Python process serves from one core; a platform engineer's machine has many. The parent binds the
gateway's address once and starts:
- the hub (hub.py): the audit log's only writer (one verifiable chain), the quota counters, the shared
  telemetry (each worker's in-flight ledger, open circuits, cache affinity, and the outcomes its TTFT
  calibration learned from, relayed so every worker's calibration learns from all of them), the decision records,
  the stored Responses-API answers, background placeholders and event logs, the Conversations API's
  conversations and the abuse signals' per-key windows over all workers' requests;
- N workers (`python -m aigrid.cli worker CONFIG`), each a whole gateway (uvicorn on the inherited
  socket: the kernel hands each new connection to a worker that is accepting) wired to the hub:
  HubSharedState for telemetry (unless the spec shares it in Redis), HubQuotaBackend for quotas (unless
  in Redis), HubAuditLog for the audit log (what needs no answer, settlements, audit records and decisions,
  posted in one frame per event-loop turn: hub_client.py), and AbuseSync (abuse_sync.py) for the abuse signals: each
  worker answers at once from its own monitor merged with the hub's verdicts over all workers, which are
  at most two `security.abuse.share_interval_s` behind. Each worker scrapes the engines itself.
- /metrics on any worker reports all of them (PROMETHEUS_MULTIPROC_DIR, metrics.py).
A worker that dies is started again. SIGINT/SIGTERM: the workers stop (each drains its streams), then the
hub (the audit log's final checkpoint), then whatever the caller started (engines).
What stays per worker: the limits that bound what one process holds (WebSocket caps, background runs, the
dashboard's live feeds, the admission queue, batches run at once; docs/reliability.md, "Several
workers"); a tenant's readers of event logs are split among the workers (each its share: worker.json's `workers`,
Gateway.share); the dashboard's live feed shows every worker's decisions (from the hub). With Redis
(`--redis` / `gateway.shared_state_url`) the hub also relays the abuse digests to the other gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson
import uvicorn
from starlette.routing import BaseRoute

from aigrid.errors import ConfigError
from aigrid.gateway.app import Gateway, build_app, build_gateway, startup_problem
from aigrid.gateway.guard import Guard, abuse_relay, abuse_rules, audit_log
from aigrid.gateway.heap import settle_when_started
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import (
    CALL_TIMEOUT_S,
    STOP_WAIT_S,
    HubAuditLog,
    HubClient,
    HubQuotaBackend,
    HubSharedState,
)
from aigrid.gateway.metrics import retire_worker
from aigrid.gateway.responses_socket import server_options
from aigrid.gateway.stopping import CUT_WAIT_S, gateway_server
from aigrid.gateway.wiring import Upstream, build_engines, upstream
from aigrid.spec.load import parse_spec
from aigrid.spec.models import GridSpec

log = logging.getLogger("aigrid.workers")
RESTART_DELAY_S = 1.0
MCP_STOP_S = 6.5
"""The longest one MCP server's stop takes (AgentRuntime.stop stops them one after another): the MCP SDK's stdio client
(mcp.client.stdio) lets its writer flush (_WRITER_FLUSH_TIMEOUT, 0.5 s), waits for the server to exit once its stdin is
closed (PROCESS_TERMINATION_TIMEOUT, 2 s), SIGTERMs its group and waits (FORCE_KILL_TIMEOUT, 2 s; agents/mcp_relay.py's
own 1 s falls within), then waits for the kill to be seen (_KILL_REAP_TIMEOUT, 2 s)."""
REAP_MARGIN_S = 3.0
"""The rest of a worker's stop, bounded by nothing named (its stores' and engines' clients closed, the interpreter's
exit), on a loaded machine."""


def reap_wait_s(spec: GridSpec) -> float:
    """How long the parent waits for its workers after passing a stop on, before it kills what is left: a worker's
    stop at its longest, each wait by the constant that bounds it, one after another (a sum: a bound, not how long a
    stop takes): the requests' grace (gateway.shutdown_grace_s; before, stopping.GRACE_S, a constant) and the wait for
    those it cut (stopping.CUT_WAIT_S); the background runs cut, one of them waiting out a charge under way on the
    hub (guard._uncut, hub_client.CALL_TIMEOUT_S); the batch lines' drain (gateway.batch.drain_s), then those cut the
    same way (CALL_TIMEOUT_S again); each MCP server's stop (MCP_STOP_S); the hub's acknowledgement of the last audit
    records (HubAuditLog.stop, hub_client.STOP_WAIT_S) and the hub connection's close (HubClient.aclose, STOP_WAIT_S
    again); REAP_MARGIN_S. Before, 10 s past the grace and drain, a guess, below what
    the hub client alone may take after the drain."""
    return (spec.gateway.shutdown_grace_s + CUT_WAIT_S + 2 * CALL_TIMEOUT_S + spec.gateway.batch.drain_s
            + MCP_STOP_S * len(spec.agents.mcp_servers) + 2 * STOP_WAIT_S + REAP_MARGIN_S)
STARTUP_FAILED = 3
"""A worker's exit code when it could not start (uvicorn's own for a failed lifespan start); why is in the file
`worker-INDEX.failed` beside its configuration, one line."""


def worker_spec(spec: GridSpec) -> dict[str, Any]:
    """The spec as the workers read it back (worker.json): only what was set, so that a check of what a spec
    writer gave (a field given where it has no meaning, `model_fields_set`) reads the workers' copy as it read
    the spec (every field written out, `key_quotas` with the storage quota's defaults was refused by them)."""
    return spec.model_dump(mode="json", exclude_unset=True)


def worker_gateway_id(pid: int, index: int) -> str:
    """A worker's name in the shared view (its reports to the hub), known to the parent by the worker's pid."""
    return f"{socket.gethostname()}-{pid}-w{index}"


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    # not inheritable: each worker gets it through pass_fds; inheritable, uvloop (whose subprocesses keep every
    # inheritable fd, close_fds or not) handed it to every process started after it, an engine restarted included
    return sock


async def run_workers(spec: GridSpec, host: str, port: int, urls: Mapping[str, str], count: int, *,
                      worker_options: Mapping[str, Any], started: Callable[[], None],
                      embedded_key: str | None = None) -> None:
    """Serve with `count` workers until SIGINT/SIGTERM; `started()` once they all answer. `embedded_key`: the
    embedded engines' key, handed to the workers in worker.json (its folder is the owner's only, 0700)."""
    work = Path(tempfile.mkdtemp(prefix="aigrid-workers-"))
    sock: socket.socket | None = None
    try:  # whatever fails from here on (a signing key or an audit path that is a folder: the hub's audit log)
        # leaves no folder (worker.json in it holds the whole spec) and no listening socket behind
        metrics_dir = work / "metrics"
        metrics_dir.mkdir()
        sock = listen(host, port)
        fd = sock.fileno()
        hub = Hub(work / "hub.sock", audit_log(spec.security.audit) if spec.security.audit is not None else None,
                  abuse_rules=abuse_rules(spec.security.abuse), abuse_relay=abuse_relay(spec),
                  abuse_interval_s=spec.security.abuse.share_interval_s)
        config = work / "worker.json"
        config.write_bytes(orjson.dumps({"spec": worker_spec(spec), "urls": dict(urls),
                                         "embedded_key": embedded_key, "hub": str(hub.path), "fd": fd, "parent": os.getpid(),
                                         "workers": count,
                                         **worker_options}))
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        stop = asyncio.Event()
        procs: list[asyncio.subprocess.Process | None] = [None] * count

        def signalled() -> None:  # the first: each worker stops gracefully; the next ones: each cuts its grace short
            if stop.is_set():
                _signal_all(procs)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, signalled)
        ready = False
        failed: list[str] = []

        async def start(i: int) -> asyncio.subprocess.Process:
            # a session of its own: the terminal's Ctrl-C reaches the parent alone, which passes each signal on
            # (a worker that got the terminal's SIGINT and the parent's SIGTERM counted two: its grace cut short)
            token = token_pipe(hub.token)
            try:
                procs[i] = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "aigrid.cli", "worker", str(config), "--index", str(i),
                    pass_fds=(fd, token), env={**env, HUB_TOKEN_FD: str(token)}, start_new_session=True)
            finally:
                os.close(token)
            return procs[i]  # type: ignore[return-value]

        async def keep(i: int) -> None:
            while not stop.is_set():
                proc = await start(i)
                code = await proc.wait()
                if stop.is_set():
                    return
                try:  # its counters kept in the archive, its files gone (off the loop: it waits for a scrape's read)
                    await asyncio.to_thread(retire_worker, proc.pid, metrics_dir)
                except Exception:  # its files stay, read at every scrape: the worker is started again all the same
                    log.exception("gateway worker %d (pid %d): its metrics could not be archived", i, proc.pid)
                why = _failure(work, i)
                if not ready:  # before the grid ever answered: a worker that cannot start will not start again
                    failed.append(why or f"gateway worker {i} exited with {code} before it could serve (its output "
                                  "is above)")
                    stop.set()
                    return
                log.error("gateway worker %d (pid %d) exited with %s%s; starting it again", i, proc.pid, code,
                          f" ({why})" if why else "")
                await hub.worker_lost(worker_gateway_id(proc.pid, i), i, proc.pid, code)
                await asyncio.sleep(RESTART_DELAY_S)

        keepers: list[asyncio.Task[None]] = []
        try:
            await hub.start()  # in the try: hub.stop() takes a part-done start (an audit log that would not open)
            keepers = [asyncio.create_task(keep(i), name=f"aigrid-worker-{i}") for i in range(count)]
            if await _ready(host, port, stop):
                ready = True
                started()
            await stop.wait()
        finally:
            _signal_all(procs)
            await _reap(procs, reap_wait_s(spec))
            for task in keepers:
                task.cancel()
            for task in keepers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await hub.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        if sock is not None:
            sock.close()
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        raise ConfigError(failed[0])


def _signal_all(procs: Sequence[asyncio.subprocess.Process | None]) -> None:
    for proc in procs:
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)


def _failure(work: Path, index: int) -> str | None:
    """Why worker `index` could not start, as it wrote it (serve_worker); None if it did not say."""
    path = work / f"worker-{index}.failed"
    try:
        why = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    path.unlink(missing_ok=True)
    return why or None


async def _ready(host: str, port: int, stop: asyncio.Event, timeout_s: float | None = None) -> bool:
    """Wait until a worker answers /livez (the others start alongside), or `stop`. No deadline by default: a
    start that takes long (a site's documents embedded on a busy CPU) is still a start; with the 120 s deadline
    it had, such a grid never counted as started, so a worker that crashed later stopped the whole gateway
    instead of being started again (a review's finding). A worker that cannot start sets `stop` itself."""
    deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
    while not stop.is_set() and (deadline is None or asyncio.get_running_loop().time() < deadline):
        try:
            # bounded: the parent's socket accepts into its backlog even while no worker serves (every worker
            # failing to start), and a read with no bound then waited forever, past Ctrl-C
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(f"GET /livez HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
                    head = await reader.read(12)
                finally:
                    writer.close()
            if head.endswith(b"200"):
                return True
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    return False


async def _reap(procs: Sequence[asyncio.subprocess.Process | None], timeout_s: float) -> None:
    """Wait for the workers to stop, `timeout_s` at most (their whole stop: the grace, the batches' drain; 15 s
    before, less than that, so a worker still draining its batch lines was killed: their records lost), then kill
    what is left, said in the log."""
    live = [p for p in procs if p is not None and p.returncode is None]
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(p.wait() for p in live))
    except TimeoutError:
        for p in live:
            if p.returncode is None:
                log.error("gateway worker pid %d did not stop within %g s: killed (what it was doing has no record)",
                          p.pid, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        await asyncio.gather(*(p.wait() for p in live))


# --- in a worker ------------------------------------------------------------------------------------------
ExtraRoutes = Callable[[Gateway, Callable[[], bool]], Sequence[BaseRoute]]


def die_with_parent(parent: int) -> None:
    """A worker must not outlive its parent (kill -9 of the gateway kills its workers, as it would kill a
    one-process gateway): Linux's PR_SET_PDEATHSIG."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


HUB_TOKEN_FD = "AIGRID_HUB_TOKEN_FD"
"""The environment variable naming the inherited pipe a worker reads its hub's token from (token_pipe): the number of
a file descriptor, not the token, which no file (worker.json) and no environment (readable in /proc by any process of
the user) holds."""


def token_pipe(token: str) -> int:
    """A pipe's read end holding `token` (its write end closed), for one worker to inherit: read once, so another
    process of the user opening it later through /proc finds it empty."""
    read, write = os.pipe()
    try:
        os.write(write, token.encode())
    finally:
        os.close(write)
    return read


def hub_token() -> str:
    """This worker's hub token, read from the pipe HUB_TOKEN_FD names (closed after; the variable removed, so no
    child of the worker inherits either); ConfigError where the worker was started without one."""
    named = os.environ.pop(HUB_TOKEN_FD, "")
    if not named.isdigit():
        raise ConfigError(f"a gateway worker is started by `aigrid gateway --workers N`, which hands it its hub's "
                          f"token ({HUB_TOKEN_FD} not set)")
    fd = int(named)
    try:
        with os.fdopen(fd, "rb") as pipe:
            token = pipe.read(1024).decode("ascii", "replace").strip()
    except OSError as e:
        raise ConfigError(f"a gateway worker could not read its hub's token from file descriptor {fd}: {e}") from e
    if not token:
        raise ConfigError(f"a gateway worker found no hub token in file descriptor {fd}")
    return token


async def serve_worker(config_path: Path, index: int, extra_routes: ExtraRoutes | None) -> None:
    """One worker: a whole gateway on the inherited socket, its shared parts behind the hub."""
    config = orjson.loads(config_path.read_bytes())
    die_with_parent(int(config["parent"]))
    sock = socket.socket(fileno=int(config["fd"]))
    sock.set_inheritable(False)  # pass_fds made it inheritable here: none of this worker's own children gets it
    hub = HubClient(Path(config["hub"]), hub_token())
    up: Upstream | None = None
    try:
        try:
            spec = parse_spec(config["spec"], str(config_path))
            up = upstream(spec)
            gateway = _worker_gateway(spec, config, index, hub, up)
        except Exception as e:  # noqa: BLE001 (a key secret, a JWT key file, a database: said once, one line)
            _cannot_start(config_path, index, e)
        server: uvicorn.Server | None = None

        def stopping() -> bool:
            return server is not None and server.should_exit

        routes = extra_routes(gateway, stopping) if extra_routes is not None else ()
        app = build_app(gateway, extra_routes=routes)
        app.quiet_startup = True  # the parent says why, once, from this worker's file
        # the parent passes each signal on (stopping.py); uvicorn's own re-raised SIGTERM at its end, killing the
        # worker before its hub client closed
        server = gateway_server(app, gateway, **server_options(spec))
        settling = asyncio.create_task(settle_when_started(server))
        try:
            await server.serve(sockets=[sock])
        except SystemExit:  # uvicorn's exit when the lifespan's start failed
            if gateway.startup_error is None:
                raise
            _cannot_start(config_path, index, gateway.startup_error)
        finally:
            settling.cancel()
    finally:
        if up is not None:
            await up.aclose()
        await hub.aclose()


def _cannot_start(config_path: Path, index: int, e: BaseException) -> NoReturn:
    (config_path.parent / f"worker-{index}.failed").write_text(startup_problem(e), encoding="utf-8")
    raise SystemExit(STARTUP_FAILED)


def _worker_gateway(spec: GridSpec, config: Mapping[str, Any], index: int, hub: HubClient,
                    up: Upstream) -> Gateway:
    """A worker's gateway: its shared parts behind the hub."""
    quotas = None if spec.security.quotas_redis_url else HubQuotaBackend(hub)
    audit = HubAuditLog(hub)
    guard = Guard(spec, quota_backend=quotas, audit_sink=audit, abuse_exchange=hub.abuse_exchange)
    shared = None if spec.gateway.shared_state_url else HubSharedState(hub)
    gateway = build_gateway(spec, build_engines(spec, config["urls"], up, embedded_key=config.get("embedded_key")), shared=shared, guard=guard,
                            gateway_id=worker_gateway_id(os.getpid(), index))
    gateway.hub = hub
    gateway.workers = max(1, int(config.get("workers", 1)))
    # what the hub refuses or never acknowledges after the request ended (the records and settlements
    # are posted, not awaited) counts where a refusal at the time would have; through the proxy's guarded writes:
    # raised (a full disk) in the hub client's reader, it ended the reader and broke the connection for every call
    metrics, written = gateway.metrics, gateway.proxy.written
    audit.on_lost = lambda: written("the audit log", metrics.audit_lost.inc)
    if quotas is not None:
        quotas.on_unsettled = lambda: written("quota settlements", metrics.quota_unsettled.inc)
    return gateway
