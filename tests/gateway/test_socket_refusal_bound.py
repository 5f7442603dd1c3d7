"""WebSocket /v1/responses closes a socket whose last responses_socket.MAX_REFUSED_RUN messages were all refused by
the socket itself (1008, policy violation, with the reason; `closed: refused` in its record). Until the
thirty-fourth session every bad message was answered an `error` event and the socket kept: one client flooding bad
messages had the gateway answer ~8,000 refusals a second (scripts/bench_socket_refusals.py). A create queued (or a
steer accepted) starts the count again, so a client that mends its mistakes is never closed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed

from aigrid.gateway.responses_socket import CLOSE_POLICY, MAX_REFUSED_RUN
from aigrid.security.quotas import QuotaLimits
from tests.gateway.socket_grid import MODEL, TENANT, served

BAD = [json.dumps({"type": "response.nothing"}), "not json", json.dumps({"type": "response.create", "model": MODEL,
                                                                         "input": "hi", "stream_id": 7})]
CREATE = json.dumps({"type": "response.create", "model": MODEL, "input": "Say hello", "max_output_tokens": 8})


def _connect(port: int) -> Any:
    return websockets.sync.client.connect(f"ws://127.0.0.1:{port}/v1/responses", additional_headers=TENANT)


def _refused(ws: Any, n: int) -> None:
    for i in range(n):
        ws.send(BAD[i % len(BAD)])
    for _ in range(n):
        event = json.loads(ws.recv(timeout=30))
        assert (event["type"], event["status"]) == ("error", 400), event


def test_a_socket_flooding_bad_messages_is_closed_1008_after_the_bound(tmp_path: Path) -> None:
    with served(tmp_path) as grid, _connect(grid.port) as ws:
        for i in range(MAX_REFUSED_RUN + 100):  # more than the bound, sent without reading
            try:
                ws.send(BAD[i % len(BAD)])
            except ConnectionClosed:
                break
        errors = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                assert json.loads(ws.recv(timeout=30))["type"] == "error"
                errors += 1
        assert errors == MAX_REFUSED_RUN
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_POLICY, closed.value
        assert "in a row refused" in closed.value.rcvd.reason
        (row,) = grid.until_records("WS /v1/responses", 1)
        assert row["extra"]["closed"] == "refused" and row["extra"]["refused_events"] == MAX_REFUSED_RUN, row
        assert all(not e.received for e in grid.engines.values())  # nothing ran


def test_a_create_queued_starts_the_count_again(tmp_path: Path) -> None:
    with served(tmp_path) as grid:
        with _connect(grid.port) as ws:
            for _ in range(3):  # 3 * (MAX_REFUSED_RUN - 1) refusals in all, never MAX_REFUSED_RUN in a row
                _refused(ws, MAX_REFUSED_RUN - 1)
                ws.send(CREATE)
                events: list[dict[str, Any]] = []
                while not events or events[-1]["type"] not in ("response.completed", "error"):
                    events.append(json.loads(ws.recv(timeout=30)))
                assert events[-1]["type"] == "response.completed", events[-1]
        (row,) = grid.until_records("WS /v1/responses", 1)
        assert row["extra"]["closed"] == "client" and row["extra"]["refused_events"] == 3 * (MAX_REFUSED_RUN - 1), row


def test_creates_the_endpoint_refuses_do_not_start_the_count_again(tmp_path: Path) -> None:
    """(review RV3, thirty-fourth session) A create queued started the count again, so MAX_REFUSED_RUN - 1 bad
    messages and one create for a model that does not exist (the endpoint's 404, before any engine and any quota),
    over and over, kept the socket: 6,400 refusals in 9.3 s, never closed. Now the endpoint's refusal of a create
    counts as one more in the row: the first such round closes the socket 1008, the message after it unread."""
    nope = json.dumps({"type": "response.create", "model": "no-such-model", "input": "hi", "max_output_tokens": 8})
    with served(tmp_path) as grid, _connect(grid.port) as ws:
        errors, statuses = 0, []
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(3):
                _refused(ws, MAX_REFUSED_RUN - 1)
                errors += MAX_REFUSED_RUN - 1
                ws.send(nope)
                event = json.loads(ws.recv(timeout=30))
                statuses.append((event["type"], event["status"]))
                errors += 1
                ws.send(BAD[0])
                ws.recv(timeout=30)  # the close: nothing more is answered
        assert statuses == [("error", 404)] and errors == MAX_REFUSED_RUN, (statuses, errors)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_POLICY, closed.value
        assert f"{MAX_REFUSED_RUN} messages in a row refused" in closed.value.rcvd.reason
        (row,) = grid.until_records("WS /v1/responses", 1)
        assert row["extra"]["closed"] == "refused", row
        assert all(not e.received for e in grid.engines.values())  # nothing ran


def test_creates_the_quota_refuses_count_toward_the_bound(tmp_path: Path) -> None:
    """(review RV4 of brief ATK9) The endpoint's 429 did not count: a tenant past its requests per minute looped
    response.create on one socket without end, each refused (since ATK9 before its body is read, as cheap as RV3's
    404) and charged nothing, the socket never closed. Now a 429 counts as every refusal does: MAX_REFUSED_RUN in a
    row close the socket 1008."""
    with served(tmp_path) as grid, _connect(grid.port) as ws:
        quotas = grid.gw.guard.quotas
        quotas.rules = replace(quotas.rules, tenants={**quotas.rules.tenants,
                                                      "metered": QuotaLimits(requests_per_min=1)})
        ws.send(CREATE)  # the minute's one request: served, the count starts again
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("response.completed", "error"):
            events.append(json.loads(ws.recv(timeout=30)))
        assert events[-1]["type"] == "response.completed", events[-1]
        statuses = []
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(MAX_REFUSED_RUN + 1):
                ws.send(CREATE)
                event = json.loads(ws.recv(timeout=30))
                statuses.append((event["type"], event["status"]))
        assert statuses == [("error", 429)] * MAX_REFUSED_RUN, statuses
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_POLICY, closed.value
        (row,) = grid.until_records("WS /v1/responses", 1)
        assert row["extra"]["closed"] == "refused", row
