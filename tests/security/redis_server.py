"""Start a real redis-server for the tests, on a free 127.0.0.1 port in a temporary folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import TRIES, on_a_free_port

SKIP_REASON = "redis-server binary not found (apt-get install -y redis-server)"


@contextmanager
def redis_server(workdir: Path, port: int | None = None, password: str | None = None) -> Iterator[int]:
    """redis-server in `workdir` on `port`, or on a free port: on a new one when another process took the picked
    one before redis-server bound it (tests/ports.py). A given port (Redis back at the same address) is not
    changed. `password`: it runs with --requirepass."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(SKIP_REASON)
    proc = on_a_free_port(lambda p: _start(binary, workdir, p, password), pick=(lambda: port) if port else None,
                          tries=1 if port else TRIES)
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


def _start(binary: str, workdir: Path, port: int, password: str | None = None) -> _Redis:
    """redis-server on `port` once it answers PING; stopped, and its output raised, if it did not start."""
    log = workdir / "redis-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                                 "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                                 *(["--requirepass", password] if password else [])],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up (NOAUTH: with a password)
                    return _Redis(proc, port)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"redis-server did not start on port {port}:\n"
                                   f"{log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.05)
