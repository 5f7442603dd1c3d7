"""bench/gateway_launch.py serves the gateway with the server `aigrid up` ships (stopping.gateway_server), so that the
benchmarks measure it: until 2026-12-06 it ran a plain uvicorn.Server of its own, without the WebSocket settings
(responses_socket.server_options), the cut requests' last words, the grace from the spec or the stop's own signal
handling. A real process on 127.0.0.1; its engine is never reached (nothing here needs one)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed

from tests.gateway.workers_helpers import gateway_process

LIMIT = 4096
"""The spec's gateway.max_body_bytes: a WebSocket message is read up to it plus responses_socket.SLACK_BYTES."""


def _spec(port: int) -> dict[str, object]:
    return {"name": "launch", "gateway": {"host": "127.0.0.1", "port": port, "network": "none",
                                          "max_body_bytes": LIMIT},
            "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
            "sites": {"s0": {"name": "Frankfurt", "lat": 50.1, "lon": 8.7, "jurisdiction": "EU"}},
            "endpoints": [{"id": "e0", "site": "s0", "model": "emulated", "engine": "vllm", "slots": 4,
                           "url": "http://127.0.0.1:9"}],  # the discard port: no engine answers (none is asked)
            "security": {"audit": None}}


def test_the_launched_gateway_is_the_shipped_server(tmp_path: Path) -> None:
    """A WebSocket message far past the body limit is refused by the server as it reads it (close 1009: the shipped
    server's ws_max_size, not uvicorn's 16 MiB default, which read it whole), and SIGINT stops the process through
    the gateway's own stop (exit 0; uvicorn's own handling raised the signal again at its end, exit -2)."""

    proc, port = gateway_process(tmp_path, _spec, lambda spec, port: [
        "-m", "aigrid.bench.gateway_launch", str(spec), "--port", str(port), "--loop", "asyncio"])
    try:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/v1/responses", open_timeout=30,
                                            max_size=None) as ws:
            ws.send("x" * (LIMIT + 200_000))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value
        assert proc.popen is not None
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(timeout=60) == 0, proc.log_tail()
    finally:
        proc.stop()
