"""The workers' hub serves only the processes it started: a connection must open with the hub's per-start token
(hub_protocol.HELLO, compared in constant time), which the parent hands each worker through an inherited pipe
(workers.token_pipe / hub_token). Until the thirty-fifth session any process of the gateway's user could connect to
the hub's socket and post decisions, quota charges and releases, telemetry or audit records (issue 12, ATK3 item 2)."""

from __future__ import annotations

import asyncio
import http.client
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from aigrid.errors import ConfigError
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient, HubError
from aigrid.gateway.hub_protocol import HELLO, frame
from aigrid.gateway.workers import HUB_TOKEN_FD, hub_token, token_pipe
from tests.gateway.started_hub import started_hub
from tests.gateway.workers_helpers import (
    one_connection_per_worker,
    serving_workers,
    two_workers,
    worker_processes,
)

FORGED = {"id": "forged", "tenant": "default", "outcome": "ok"}


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with started_hub("aigrid-tok-") as h:
        yield h


async def _raw(path: Path, *frames: bytes) -> bytes:
    """What the hub answers a connection that writes `frames` (b"": it closed the connection unanswered)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(b"".join(frames))
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("hello", [None, "not-the-token", ""], ids=["no-hello", "wrong-token", "empty-token"])
async def test_a_process_without_the_hubs_token_is_refused(hub: Hub, hello: str | None) -> None:
    """A local process that connects to the socket (without the token, or with another) is closed unanswered,
    and what it posted (a decision any worker would then show) is not taken."""
    first = [] if hello is None else [frame([0, HELLO, hello])]
    answer = await _raw(hub.path, *first, frame([1, "decision", FORGED]), frame([2, "decision_get", "forged"]))
    assert answer == b""
    worker = HubClient(hub.path, hub.token)
    try:
        assert await worker.decision("forged") is None
        assert await worker.call("value", "k") == 0  # the worker holding the token is served
    finally:
        await worker.aclose()


async def test_a_client_with_another_token_cannot_call(hub: Hub) -> None:
    stranger = HubClient(hub.path, "0" * 64)
    try:
        with pytest.raises(HubError):
            await stranger.call("value", "k")
    finally:
        await stranger.aclose()


async def test_an_oversized_hello_is_refused_unread(hub: Hub) -> None:
    assert await _raw(hub.path, frame([0, HELLO, hub.token + "x" * 300])) == b""


def test_a_worker_reads_its_token_from_the_inherited_pipe_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fd = token_pipe("s3cret-token")
    monkeypatch.setenv(HUB_TOKEN_FD, str(fd))
    assert hub_token() == "s3cret-token"
    assert HUB_TOKEN_FD not in os.environ  # no child of the worker inherits the variable
    with pytest.raises(OSError):
        os.fstat(fd)  # the pipe is closed once read
    with pytest.raises(ConfigError, match=HUB_TOKEN_FD):
        hub_token()  # started without one


def test_a_worker_started_again_after_a_crash_gets_the_token_and_serves(tmp_path: Path) -> None:
    """The parent hands every start of a worker a new pipe holding the token, a restart after a crash too: the
    worker started again serves a request, whose decision (posted to the hub on the new worker's connection) the
    other worker reads back from the hub (review RV2 of the thirty-fifth session: the restart test of test_workers
    counts processes only, which a worker failing at every start also passes)."""
    with two_workers(tmp_path, decode_ms=1) as grid:
        parent, (dead, alive) = grid.gateway.pid, grid.workers
        os.kill(dead, 9)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(worker_processes(parent)) - {dead, alive}:
            time.sleep(0.2)
        workers = serving_workers(parent, grid.port)  # the new one accepts only once it serves
        (new,) = set(workers) - {alive}
        conns: list[http.client.HTTPConnection] = []
        try:
            by_worker = one_connection_per_worker(grid.port, workers, conns)
            by_worker[new].request("POST", "/v1/chat/completions", headers={"content-type": "application/json"},
                                   body=orjson.dumps({"model": "emulated", "max_tokens": 4,
                                                      "messages": [{"role": "user", "content": "hi"}]}))
            answer = by_worker[new].getresponse()
            answer.read()
            assert answer.status == 200
            status, deadline = 0, time.monotonic() + 30  # posted to the hub once the answer has ended, not waited on
            while status != 200 and time.monotonic() < deadline:
                by_worker[alive].request("GET", f"/v1/decisions/{answer.getheader('x-aigrid-decision')}")
                reply = by_worker[alive].getresponse()
                reply.read()
                status = reply.status
                time.sleep(0.05)
            assert status == 200, "the other worker never found the new worker's decision in the hub"
        finally:
            for conn in conns:
                conn.close()


async def test_a_connection_cancelled_before_its_hello_is_closed_and_forgotten(hub: Hub) -> None:
    """A connection's serving cancelled while the hub still serves and the peer has said nothing (no hello yet) is
    closed and dropped from the hub's connections, like every other end of a connection (review RV2: the cancel
    was re-raised with the writer left open and the task kept in `_conns`)."""
    reader, writer = await asyncio.open_unix_connection(str(hub.path))
    try:
        deadline = time.monotonic() + 5
        while not hub._conns and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        (task,) = hub._conns
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hub._conns == set()
        assert await asyncio.wait_for(reader.read(65536), 5) == b""  # the hub closed its end
    finally:
        writer.close()
