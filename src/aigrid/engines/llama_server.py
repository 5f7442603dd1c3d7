"""Run the embedded engine: a native llama.cpp llama-server child process on 127.0.0.1.

llama-server gives the grid a real engine on a CPU box: an OpenAI-compatible API, continuous batching
over -np slots and Prometheus /metrics, so OpenAICompatEngine("llamacpp", ...) drives it like any other
site. This module builds the command line, starts the child, waits until it is ready, restarts it when it
dies (`supervise`: on the same port, so the gateway's URL for it stays valid) and stops it.

No work happens in the constructor: start() and stop() are explicit (or use `async with`). The child runs
in a session (and process group) of its own, so that a terminal's Ctrl-C (SIGINT to the foreground group)
reaches the gateway only, which stops its engines with stop(); before, each engine died of the SIGINT at once
and `supervise` logged it as a crash to restart. On Linux the child is tied to its parent with
PR_SET_PDEATHSIG, so a killed gateway never leaves an orphaned engine behind (the signal fires when the
thread that started the child exits: start it from the thread that runs the event loop, as asyncio does).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import httpx

from aigrid.engines.model_files import find_llama_server, find_model_file
from aigrid.errors import EngineBuildError

if TYPE_CHECKING:
    from aigrid.spec.models import GridSpec

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
BIND_ATTEMPTS = 3
RESTART_BACKOFF_S = (5.0, 10.0, 30.0, 60.0)
"""Waits before each restart of a child that keeps dying (the first long enough for the gateway to see the
endpoint down and route around it); back to the first after STABLE_S of running."""
STABLE_S = 60.0
log = logging.getLogger("aigrid.engines")
KV_BYTES_PER_TOKEN = 2 * 30 * 192 * 2
"""The KV cache an embedded engine allocates at start for each token of its --ctx-size (the context a slot x the
slots): SmolLM2-135M's K and V, over its 30 layers, of 192 values each (3 KV heads of 64), in f16 (2 bytes): 23,040
bytes (22.5 KiB). Its llama-server says "CPU KV buffer size = 90.00 MiB" at --ctx-size 4096 (-lv 4), and one 2-slot
engine's RSS grew 270 MiB from 2048 to 8192 tokens a slot (scripts/engine_context_memory.py)."""


def kv_cache_bytes(context: int, slots: int) -> int:
    """The bytes of KV cache an embedded engine allocates at start holding `context` tokens in each of its `slots`:
    the one estimate (embedded_kv_cache's for a spec; `aigrid node --context --slots`'s)."""
    return context * slots * KV_BYTES_PER_TOKEN


def embedded_kv_cache(spec: GridSpec) -> dict[str, int]:
    """Endpoint id -> the bytes of KV cache its embedded engine allocates at start (kv_cache_bytes of its model's
    context and its slots), for each embedded endpoint of `spec`: the one estimate `aigrid spec check` prints the sum
    of and `aigrid up` holds against the machine's available memory (gateway/server.check_kv_cache_fits)."""
    return {e.id: kv_cache_bytes(spec.models[e.model].context, e.slots)
            for e in spec.endpoints if e.engine == "embedded"}
OPTIONAL_ARGS: tuple[tuple[str, ...], ...] = (("--no-webui",), ("--log-colors", "off"))
"""Arguments passed only when this build's --help lists their flag (builds add and drop them)."""


@dataclass(frozen=True, slots=True)
class LlamaServerConfig:
    """How to run one llama-server. port=0 picks a free port at start()."""

    binary: Path
    model: Path
    log_path: Path
    alias: str = "smollm2-135m"
    host: str = "127.0.0.1"
    port: int = 0
    slots: int = 2
    ctx_per_slot: int = 2048
    """Tokens each slot holds (llama-server's --ctx-size is this times the slots); embedded_config sets the spec's
    model context."""
    threads: int = 1
    extra_args: tuple[str, ...] = ()
    hidden_env: frozenset[str] = frozenset()
    """Variables of the caller's environment the engine does not inherit (the gateway's own secrets, the keys of
    other engines): an engine has no use for them."""
    api_key: str | None = field(default=None, repr=False)
    """The key every request but /health must carry (`Authorization: Bearer`), handed to llama-server in its
    environment (LLAMA_API_KEY), never on its command line, which every local user can read in ps."""
    wrapper: tuple[str, ...] = ()
    """argv prefix, e.g. ("ip", "netns", "exec", NAME) to run inside a site's network namespace (then set
    host to the namespace's address and a fixed port: free_port() can only probe this namespace)."""


def embedded_config(log_path: Path, *, context: int, slots: int = 2, threads: int = 1, port: int = 0,
                    alias: str = "smollm2-135m") -> LlamaServerConfig:
    """The embedded engine's config: the cached (or $AIGRID_LLAMA_SERVER) binary and the SmolLM2 model, each of
    its `slots` holding `context` tokens (the spec's model `context`: what the gateway's context check, an
    agent loop's context_limit and Responses' compaction count against; before, every engine ran 2048 a slot
    whatever the spec declared, and llama.cpp refused what the gateway had let through).
    Raises EngineBuildError, saying how to fix it, when either file is missing."""
    return LlamaServerConfig(binary=find_llama_server(), model=find_model_file(), log_path=log_path,
                             alias=alias, port=port, slots=slots, ctx_per_slot=context, threads=threads)


def has_flag(help_text: str, flag: str) -> bool:
    """Whether `llama-server --help` lists `flag` (builds add and drop flags such as --no-webui)."""
    return re.search(rf"(?:^|[\s,]){re.escape(flag)}(?:[\s,]|$)", help_text, re.MULTILINE) is not None


def build_command(config: LlamaServerConfig, port: int, help_text: str = "") -> list[str]:
    """The argv for llama-server. -c is the total context, split evenly over the -np slots."""
    cmd = [
        *config.wrapper,
        str(config.binary),
        "--model", str(config.model),
        "--host", config.host,
        "--port", str(port),
        "--parallel", str(config.slots),
        "--ctx-size", str(config.ctx_per_slot * config.slots),
        "--threads", str(config.threads),
        "--alias", config.alias,
        "--metrics",
    ]
    for optional in OPTIONAL_ARGS:
        if has_flag(help_text, optional[0]):
            cmd += optional
    return cmd + list(config.extra_args)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it; a small race is accepted)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """The first of `count` consecutive ports that were all free a moment ago: an emulator started with
    `--engines N` listens on N ports from the one it is given (the same small race as free_port)."""
    for _ in range(tries):
        base = free_port(host)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return base
        except (OSError, OverflowError):  # one of them is taken, or past 65535: another base
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host} after {tries} tries")


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when its parent dies; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: nothing to load in the child

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0 or os.getppid() != parent_pid:
            os._exit(1)  # cannot be tied to the parent, or the parent is already gone

    return preexec


def _send(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the child's process group (the child leads it: its own session), so that what the engine started
    stops with it, unless the child has already exited (then there is nothing to stop). Until the child is
    reaped its pid, the group's id, cannot be another process's."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass  # exited between the check and the signal


class LlamaServerProcess:
    """One llama-server child process. Use `async with` or call start() and stop()."""

    def __init__(self, config: LlamaServerConfig, *, ready_timeout_s: float = 60.0,
                 stop_grace_s: float = 5.0) -> None:
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.port: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._help: str = ""
        self._stopping = False
        self.restarts = 0
        """How many times `supervise` brought the child back."""

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("llama-server is not started")
        return f"http://{self.config.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the child and return once /health answers 200. Raises EngineBuildError, quoting the
        log tail, if it exits early or is not ready within ready_timeout_s. With port=0 a lost race for
        the picked port (another process bound it first) is retried on a new port."""
        if self._proc is not None:
            raise RuntimeError("llama-server already started")
        help_text = self._help = await self._help_text()
        if self.config.api_key and "LLAMA_API_KEY" not in help_text:  # a build that would ignore it: open to all
            raise EngineBuildError(f"{self.config.binary} does not read LLAMA_API_KEY (its --help does not list "
                                   "it): it would serve without the key; use a newer llama-server (make engine)")
        for attempt in range(1, BIND_ATTEMPTS + 1):
            self.port = self.config.port or free_port(self.config.host)
            proc = await self._spawn(build_command(self.config, self.port, help_text))
            try:
                await self._wait_ready(proc)
                self._stopping = False
                return
            except EngineBuildError as exc:
                await self.stop()
                if self.config.port or attempt == BIND_ATTEMPTS or "couldn't bind" not in str(exc):
                    raise
            except BaseException:
                await self.stop()
                raise

    async def _spawn(self, cmd: list[str]) -> asyncio.subprocess.Process:
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.config.log_path.open("ab")
        self._log.write(f"\n$ {' '.join(cmd)}\n".encode())
        self._log.flush()
        # a key from the caller's own environment would lock out the gateway, which sends only `api_key`
        hidden = self.config.hidden_env | {"LLAMA_API_KEY", "LLAMA_ARG_API_KEY_FILE"}
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        if self.config.api_key:
            env["LLAMA_API_KEY"] = self.config.api_key
        self._proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent(os.getpid()), env=env,
            start_new_session=True,  # out of the terminal's process group: a Ctrl-C is the gateway's to handle
        )
        return self._proc

    async def _help_text(self) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.config.binary), "--help", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise EngineBuildError(f"cannot run {self.config.binary}: {exc}") from exc
        out, _ = await proc.communicate()
        return out.decode(errors="replace")

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if proc.returncode is not None:
                    raise EngineBuildError(
                        f"llama-server exited with code {proc.returncode} while starting; "
                        f"log {self.config.log_path}:\n{self.log_tail()}"
                    )
                try:
                    if (await client.get(self.base_url + "/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet: that is what we are waiting for
                if time.monotonic() > deadline:
                    raise EngineBuildError(
                        f"llama-server not ready after {self.ready_timeout_s:.0f}s; "
                        f"log {self.config.log_path}:\n{self.log_tail()}"
                    )
                try:
                    await asyncio.wait_for(proc.wait(), timeout=0.1)
                except TimeoutError:
                    pass  # still running: poll /health again

    async def supervise(self, name: str, *, backoff_s: tuple[float, ...] = RESTART_BACKOFF_S,
                        stable_s: float = STABLE_S) -> None:
        """Run until cancelled: whenever the started child exits (a crash, the OOM killer, a stray kill -9),
        log it with its exit code or signal and the log's last lines, wait, and start it again on the same
        port (the gateway keeps its URL; the endpoint's health comes back at the next scrape). Waits grow
        along `backoff_s` while it keeps dying, and start from the first once it has run `stable_s`. A
        restart that fails is logged and tried again; once stop() has been called nothing is started again."""
        failures = 0
        while True:
            proc = self._proc
            if proc is None:
                return  # stopped
            started = time.monotonic()
            code = await proc.wait()
            if self._proc is not proc:
                return  # stop() took it down
            failures = 0 if time.monotonic() - started >= stable_s else failures
            wait = backoff_s[min(failures, len(backoff_s) - 1)]
            failures += 1
            how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
                else f"code {code}"
            log.warning("engine %s (llama-server pid %s, port %s) exited with %s; restarting it in %.0f s. "
                        "Log %s:\n%s", name, proc.pid, self.port, how, wait, self.config.log_path,
                        self.log_tail(8))
            while True:
                await asyncio.sleep(wait)
                if self._stopping:
                    return  # stop() came during the wait: nothing to bring back
                if self._log is not None:
                    self._log.close()
                    self._log = None
                assert self.port is not None
                try:
                    new = await self._spawn(build_command(self.config, self.port, self._help))
                except OSError as exc:  # the binary or model gone, the log not writable, no file descriptors
                    wait = backoff_s[min(failures, len(backoff_s) - 1)]
                    failures += 1
                    log.warning("engine %s could not be started again: %s; trying again in %.0f s", name, exc, wait)
                    continue
                if self._stopping:  # stop() ran while the child was being made: it is not stop()'s to see
                    _send(new, signal.SIGKILL)
                    await new.wait()
                    return
                try:
                    await self._wait_ready(new)
                except EngineBuildError as exc:
                    _send(new, signal.SIGKILL)
                    await new.wait()
                    if self._stopping:
                        return
                    wait = backoff_s[min(failures, len(backoff_s) - 1)]
                    failures += 1
                    log.warning("engine %s did not come back: %s; trying again in %.0f s", name,
                                str(exc).splitlines()[0], wait)
                    continue
                self.restarts += 1
                log.warning("engine %s is back (llama-server pid %s, port %s, restart %d)", name, new.pid,
                            self.port, self.restarts)
                break

    async def stop(self) -> bool:
        """SIGTERM, then SIGKILL after stop_grace_s. Safe to call twice or after a failed start. False when it had to
        be killed (it did not stop within stop_grace_s of SIGTERM: what `aigrid up` says as it stops), else True."""
        self._stopping = True
        proc, self._proc = self._proc, None
        in_time = True
        if proc is not None:
            _send(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=self.stop_grace_s)
            except TimeoutError:
                in_time = False
                _send(proc, signal.SIGKILL)
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return in_time

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log file, for error messages (its last 16 KB only: the log grows for as long
        as the engine runs)."""
        try:
            with self.config.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    async def __aenter__(self) -> LlamaServerProcess:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
