"""uvicorn's own lines (`uvicorn.error`) are JSON lines of aigrid.logs like every other: uvicorn.Config applied
its logging config after aigrid's, took aigrid's handler off `uvicorn.error`, and its warnings and tracebacks
reached stderr as bare text (Python's last-resort handler: the message only, its newlines and escapes raw, no
level, time or worker) in the middle of the JSON lines an operator's collector parses."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.gateway.workers_helpers import emulator, gateway_with_workers, spec


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_request_head_is_logged_as_a_json_line(tmp_path: Path, workers: int) -> None:
    """One process (server.py) and workers (workers.py) alike."""
    emu, emu_port = emulator(tmp_path, 1)
    try:
        gw, port = gateway_with_workers(tmp_path, lambda port: spec(tmp_path, emu_port, port), workers)
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

