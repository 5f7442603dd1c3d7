"""WebSocket /v1/responses echoes a `response.create`'s `stream_id` (its lane) on every event of that response. Until
the thirty-fourth session it was any string up to the message limit (`max_body_bytes`, 4 MiB): a 3 MiB lane on a
16-token response had the gateway write 75.5 MB (24 events, each carrying the lane again), compressed on its event
loop where the client negotiated permessage-deflate (which the SDKs and `websockets` do), while the client read a
few kilobytes. A lane is now at most responses_socket.MAX_STREAM_ID characters, else the create's 400 naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import websockets.sync.client

from aigrid.gateway.responses_socket import MAX_STREAM_ID
from tests.gateway.socket_grid import MODEL, TENANT, served


def _create(stream_id: str) -> str:
    return json.dumps({"type": "response.create", "model": MODEL, "input": "Say hello", "max_output_tokens": 8,
                       "stream_id": stream_id})


def test_a_lane_longer_than_its_bound_is_refused_naming_it_and_never_echoed(tmp_path: Path) -> None:
    with served(tmp_path) as grid, websockets.sync.client.connect(
            f"ws://127.0.0.1:{grid.port}/v1/responses", additional_headers=TENANT, max_size=None) as ws:
        ws.send(_create("x" * 300_000))
        refused = ws.recv()
        event = json.loads(refused)
        assert (event["type"], event["status"], event["error"]["param"]) == ("error", 400, "stream_id"), event
        assert str(MAX_STREAM_ID) in event["error"]["message"]
        assert len(refused) < 2_000  # the lane is not written back
        assert all(not e.received for e in grid.engines.values())  # nothing ran
        # the socket goes on, and a lane at the bound is served and echoed on each event
        lane = "l" * MAX_STREAM_ID
        ws.send(_create(lane))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("response.completed", "error"):
            events.append(json.loads(ws.recv()))
        assert events[-1]["type"] == "response.completed", events[-1]
        assert {e.get("stream_id") for e in events} == {lane}

