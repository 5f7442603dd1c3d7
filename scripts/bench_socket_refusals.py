"""What one WebSocket /v1/responses sending nothing but bad messages costs the gateway: how many it refuses (an
`error` event each) before the socket ends, at what rate, how the socket ends, and the worst `/livez` answer time
meanwhile (another client polling it every 10 ms). A gateway on FAKE engines served by uvicorn
(tests/gateway/socket_grid), one process.

    .venv/bin/python scripts/bench_socket_refusals.py [--messages 20000]

Before the thirty-fourth session every refusal was answered and the socket kept: ~8,000 refusals a second from one
socket (the ATK walk). Now a socket whose last responses_socket.MAX_REFUSED_RUN messages were all refused is closed
1008 (policy violation) with the reason."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import websockets.sync.client
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gateway.socket_grid import TENANT, served, watching  # noqa: E402


def flood(port: int, messages: int) -> tuple[int, float, str]:
    """Refusals read, seconds, and how the socket ended, for `messages` bad messages sent as fast as they go."""
    bad = json.dumps({"type": "response.nothing"})
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/v1/responses", additional_headers=TENANT) as ws:
        def send() -> None:
            try:
                for _ in range(messages):
                    ws.send(bad)
            except ConnectionClosed:
                pass

        sender = threading.Thread(target=send, daemon=True)
        start, refused, end = time.perf_counter(), 0, "all answered, socket open"
        sender.start()
        try:
            while refused < messages:
                if json.loads(ws.recv(timeout=10))["type"] == "error":
                    refused += 1
        except ConnectionClosed as e:
            end = f"closed {e.rcvd.code if e.rcvd else None} {e.rcvd.reason if e.rcvd else ''!r}"
        took = time.perf_counter() - start
        sender.join(10)
        return refused, took, end


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    with served(Path(tempfile.mkdtemp())) as grid:
        with watching(grid.port, every_s=0.01) as watch:
            idle_worst = watch.reset()
            refused, took, end = flood(grid.port, args.messages)
        worst = watch.worst
        print(f"{args.messages} bad messages on one socket: {refused} refused in {took:.2f} s "
              f"({refused / took:,.0f}/s), {end}; /livez worst {worst * 1000:.0f} ms during it "
              f"({idle_worst * 1000:.0f} ms idle)")


if __name__ == "__main__":
    main()
