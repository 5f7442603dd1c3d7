"""What one `response.create` over WebSocket /v1/responses makes the gateway write, by the length of its `stream_id`
(the lane every event of the response carries back): messages, megabytes received and seconds for one 16-token
response, with and without permessage-deflate. A gateway on FAKE engines served by uvicorn (tests/gateway/socket_grid).

    .venv/bin/python scripts/bench_socket_lane.py

Before the thirty-fourth session a 3 MiB lane was served: 24 messages, 75.5 MB, 1.27 s compressed (0.05 s for a
short lane); now it is the create's 400 naming stream_id (responses_socket.MAX_STREAM_ID)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import websockets.sync.client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gateway.socket_grid import MODEL, TENANT, Grid, served  # noqa: E402


def one(grid: Grid, lane: str | None, compression: bool) -> tuple[int, int, float]:
    """Messages, bytes received and seconds of one response whose create names `lane`."""
    options: dict = {} if compression else {"compression": None}
    with websockets.sync.client.connect(f"ws://127.0.0.1:{grid.port}/v1/responses", additional_headers=TENANT,
                                        max_size=None, **options) as ws:
        event = {"type": "response.create", "model": MODEL, "input": "hi", "max_output_tokens": 16}
        if lane is not None:
            event["stream_id"] = lane
        start, n, size = time.perf_counter(), 0, 0
        ws.send(json.dumps(event))
        while True:
            message = ws.recv()
            n, size = n + 1, size + len(message)
            if json.loads(message)["type"] in ("response.completed", "response.failed", "error"):
                return n, size, time.perf_counter() - start


def main() -> None:
    with served(Path(tempfile.mkdtemp()), words=tuple(f" w{i}" for i in range(16))) as grid:
        for compression in (True, False):
            for lane in (None, "l" * 128, "x" * (3 * 1024 * 1024)):
                n, size, seconds = one(grid, lane, compression)
                print(f"permessage-deflate {'on ' if compression else 'off'}  stream_id {0 if lane is None else len(lane):>7} "
                      f"characters: {n:>2} messages, {size / 1e6:6.1f} MB received, {seconds:.3f} s")


if __name__ == "__main__":
    main()
