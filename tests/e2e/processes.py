"""Real processes for end-to-end and chaos tests: engine nodes, gateways, Redis. Every one is stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from aigrid.spec.load import parse_spec, relative_to
from tests.ports import on_a_free_port

BIN = Path(sys.executable).parent
SITES = {  # a three-site grid: the demo's geography, engines started by the test
    "fra": {"name": "Frankfurt", "lat": 50.11, "lon": 8.68, "jurisdiction": "EU"},
    "iad": {"name": "Ashburn", "lat": 39.04, "lon": -77.49, "jurisdiction": "US"},
    "nrt": {"name": "Tokyo", "lat": 35.68, "lon": 139.69, "jurisdiction": "JP"},
}


class Proc:
    def __init__(self, argv: list[str], cwd: Path, log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.p = subprocess.Popen(argv, cwd=cwd, stdout=self._fh, stderr=subprocess.STDOUT,
                                  env={**os.environ, "COLUMNS": "200"})

    def kill9(self) -> None:
        self.p.kill()
        self.p.wait(timeout=10)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._fh.close()


def wait_http(url: str, timeout_s: float = 60, ok: int = 200, proc: Proc | None = None) -> None:
    """Until `url` answers `ok`; with `proc`, a RuntimeError with its log's end as soon as it has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.p.poll() is not None:
            tail = proc.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{url}: the process exited with {proc.p.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=1).status_code == ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {ok} within {timeout_s}s")


def _serving(argv: list[str], cwd: Path, log: Path, port: int, health: str) -> tuple[Proc, str]:
    """`argv` started, once it answers `health` on `port` (stopped if it does not)."""
    proc = Proc(argv, cwd, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + health, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, url


NODE_CONTEXT = 2048
"""Tokens a slot of start_node's engines holds, and write_spec's model context: the two agree (the gateway checks
against the spec), and 2048 a slot keeps a 2-slot node at about 216 MiB, 486 MiB at `aigrid node`'s default 8192 (scripts/engine_context_memory.py)."""


def start_node(cwd: Path, site: str, slots: int = 2, api_key_env: str | None = None) -> tuple[Proc, str]:
    """`aigrid node` on a free port, once its engine answers /health; on a new port when another process took the
    picked one before llama-server bound it (tests/ports.py)."""
    def start(port: int) -> tuple[Proc, str]:
        argv = [str(BIN / "aigrid"), "node", "--port", str(port), "--slots", str(slots), "--context", str(NODE_CONTEXT)]
        argv += ["--api-key-env", api_key_env] if api_key_env else []
        return _serving(argv, cwd, cwd / f"node-{site}.log", port, "/health")

    # the node wrapper prints the llama-server pid; the engine process is what a chaos test kills
    return on_a_free_port(start)


def engine_pid(proc: Proc) -> int:
    """The pid of the node's llama-server now running: the last one its log names that is alive as llama-server (the
    node restarts a killed engine and logs the new pid, and module-scoped nodes outlive the test that killed one:
    the first pid of the log may be dead, or reused by another process)."""
    for _ in range(50):
        text = proc.log.read_text(errors="replace")
        for pid in reversed([int(n) for n in re.findall(r" pid (\d+)", text)]):
            try:
                if b"llama-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
        time.sleep(0.1)
    raise RuntimeError(f"no running llama-server pid in {proc.log}")


def write_spec(cwd: Path, urls: dict[str, str], redis_url: str | None = None, api_key_env: str | None = None,
               **gateway: object) -> Path:
    spec = {
        "name": "chaos",
        "gateway": {"network": "none", "scrape_interval_s": 0.5, **gateway,
                    **({"shared_state_url": redis_url} if redis_url else {})},
        "models": {"smollm2-135m": {"family": "smollm2", "params_b": 0.135, "context": NODE_CONTEXT}},
        "sites": SITES,
        "endpoints": [{"id": f"{s}-smollm2", "site": s, "model": "smollm2-135m", "engine": "llamacpp", "url": u,
                       "slots": 2, "prefill_tps": 250, "decode_tps": 150,
                       **({"api_key_env": api_key_env} if api_key_env else {})} for s, u in urls.items()],
        "tenants": {"default": {"policy": "balanced"}},
    }
    path = cwd / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_gateway(cwd: Path, spec: Path, name: str, redis_url: str | None = None) -> tuple[Proc, str]:
    """`aigrid gateway` on a free port, once it answers /healthz; on a new port when another process took the
    picked one before the gateway bound it (tests/ports.py)."""
    def start(port: int) -> tuple[Proc, str]:
        argv = [str(BIN / "aigrid"), "gateway", str(spec), "--port", str(port)]
        argv += ["--redis", redis_url] if redis_url else []
        return _serving(argv, cwd, cwd / f"gateway-{name}.log", port, "/healthz")

    return on_a_free_port(start)


@dataclass
class Grid:
    base: str
    proc: subprocess.Popen[str]
    banner: str


def with_context(spec: Path, cwd: Path, context: int) -> Path:
    """A copy of `spec` in `cwd` whose every model declares `context` tokens. Each slot of an embedded engine holds
    its model's context (about 22.5 KiB of KV cache a token, allocated at start): the demo's four 2-slot engines at
    its 8192 made tests/e2e/test_demo_grid.py's process tree peak at 2,460 MiB (scripts/tree_rss.py), where tests
    that send short prompts need no more than NODE_CONTEXT. Written to `cwd` under the spec's name; a spec whose
    relative paths (documents, SQL databases, a tls_ca_file: spec.load.relative_to) would then read other files
    from `cwd`, or a `cwd` that is the spec's own folder (the original overwritten), is a ValueError."""
    raw = yaml.safe_load(spec.read_text(encoding="utf-8"))
    copy = cwd / spec.name
    parsed = parse_spec(raw, str(spec))
    if copy.resolve() == spec.resolve() or relative_to(parsed, spec.parent) != relative_to(parsed, cwd):
        raise ValueError(f"{spec}: not copied to {cwd} (it names relative paths, or is there already)")
    for model in raw["models"].values():
        model["context"] = context
    copy.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return copy


@contextmanager
def running_grid(spec: Path, cwd: Path, *, stop: signal.Signals = signal.SIGINT,
                 healthy: int = 4, context: int | None = None) -> Iterator[Grid]:
    """`aigrid up SPEC` as a real process (the CLI users run, dashboard mounted): returns once its banner is
    printed and `healthy` endpoints pass their checks; always stopped (with `stop`) afterwards. Started again on a
    new port when another process took the picked one before `aigrid up` could listen there (tests/ports.py).
    `context`: every model of a copy of the spec declares it (with_context), for tests whose prompts are short."""
    if context is not None:
        spec = with_context(spec, cwd, context)

    def start(port: int) -> Grid:
        # warnings only: stdout is read up to the banner, so an access line per request would fill the pipe
        proc = subprocess.Popen([str(BIN / "aigrid"), "up", str(spec), "--port", str(port), "--log-level", "warning"],
                                cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "COLUMNS": "200"})
        try:
            assert proc.stdout is not None
            lines: list[str] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if "Ctrl-C stops" in line:
                    break
            banner = "".join(lines)
            if "Ctrl-C stops" not in banner:
                raise RuntimeError(f"aigrid up printed no banner:\n{banner}")
            return Grid(f"http://127.0.0.1:{port}", proc, banner)
        except BaseException:
            _stop(proc, stop)
            raise

    grid = on_a_free_port(start)
    try:
        wait_until_healthy(grid.base, healthy)
        yield grid
    finally:
        _stop(grid.proc, stop)


def _stop(proc: subprocess.Popen[str], stop: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(stop)
        proc.wait(timeout=30)


def wait_until_healthy(base: str, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(httpx.get(base + "/healthz", timeout=2).json()["healthy"]) >= count:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}: fewer than {count} healthy endpoints after {timeout_s}s")
