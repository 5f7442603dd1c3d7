"""uvicorn's own lines (`uvicorn.error`) are JSON lines of aigrid.logs like every other: uvicorn.Config applied
its logging config after aigrid's, took aigrid's handler off `uvicorn.error`, and its warnings and tracebacks
reached stderr as bare text (Python's last-resort handler: the message only, its newlines and escapes raw, no
level, time or worker) in the middle of the JSON lines an operator's collector parses."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import orjson
import pytest

from aigrid.bench.procs import Proc
from tests.gateway.test_workers import emulator, spec
from tests.ports import on_a_free_port


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_request_head_is_logged_as_a_json_line(tmp_path: Path, workers: int) -> None:
    """One process (server.py) and workers (workers.py) alike."""
    emu, emu_port = emulator(tmp_path, 1)
    try:
        def start(port: int) -> tuple[Proc, int]:
            (tmp_path / "spec.yaml").write_bytes(orjson.dumps(spec(tmp_path, emu_port, port)))
            gw = Proc("gateway", [sys.executable, "-m", "aigrid.cli", "gateway", str(tmp_path / "spec.yaml"),
                                  "--workers", str(workers)], tmp_path, cwd=tmp_path).start()
            try:
                gw.wait_ready(f"http://127.0.0.1:{port}/livez", timeout_s=120)
            except BaseException:
                gw.stop()
                raise
            return gw, port

        gw, port = on_a_free_port(start)
        try:
            for _ in range(2 * workers):  # whichever worker takes the connection
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(b"NOT\x1b[31m HTTP AT ALL\r\n\r\n")
                    s.recv(1024)
            deadline = time.monotonic() + 10
            text = ""
            while time.monotonic() < deadline and "Invalid HTTP request" not in text:
                time.sleep(0.2)
                text = gw.log_path.read_text(errors="replace")
        finally:
            gw.stop()
    finally:
        emu.stop()
    found = [line for line in text.splitlines() if "Invalid HTTP request" in line]
    assert found, text[-3000:]
    for line in found:
        record = json.loads(line)  # not the bare message
        assert record["logger"] == "uvicorn.error" and record["level"] == "warning", record

