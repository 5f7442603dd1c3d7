"""Start a real redis-server for the tests, on a free 127.0.0.1 port in a temporary folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import TRIES, on_a_free_port

SKIP_REASON = "redis-server binary not found (apt-get install -y redis-server)"


Ready = Callable[[int], bool]
"""Whether the redis-server on 127.0.0.1:port answers (an OSError: not yet listening)."""


def answers_ping(port: int) -> bool:
    """PING over plain TCP gets PONG (or NOAUTH: it runs with a password)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))


@contextmanager
def redis_server(workdir: Path, port: int | None = None, password: str | None = None, *,
                 args: Callable[[int], list[str]] | None = None, ready: Ready = answers_ping) -> Iterator[int]:
    """redis-server in `workdir` on `port`, or on a free port: on a new one when another process took the picked
    one before redis-server bound it (tests/ports.py). A given port (Redis back at the same address) is not
    changed. `password`: it runs with --requirepass. `args(port)`: its listening arguments (plain TCP on `port`
    by default; e.g. --port 0 --tls-port for TLS only), with `ready` the check that it serves (PING over plain
    TCP by default)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(SKIP_REASON)
    listen = args or (lambda p: ["--port", str(p)])
    proc = on_a_free_port(lambda p: _start(binary, workdir, p, [*listen(p), *(["--requirepass", password]
                                                                              if password else [])], ready),
                          pick=(lambda: port) if port else None, tries=1 if port else TRIES)
    try:
        yield proc.port
    finally:
        proc.popen.terminate()
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()


@dataclass
class _Redis:
    popen: subprocess.Popen[bytes]
    port: int


def _start(binary: str, workdir: Path, port: int, args: list[str], ready: Ready) -> _Redis:
    """redis-server `args` on 127.0.0.1 (serving on `port`) once `ready(port)`; stopped, and its output raised, if
    it did not start."""
    log = workdir / f"redis-server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, *args, "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
                                 "--appendonly", "no", "--protected-mode", "yes"],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            if ready(port):
                return _Redis(proc, port)
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"redis-server did not start on port {port}:\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
