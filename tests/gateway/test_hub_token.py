"""The workers' hub serves only the processes it started: a connection must open with the hub's per-start token
(hub_protocol.HELLO, compared in constant time), which the parent hands each worker through an inherited pipe
(workers.token_pipe / hub_token). Until the thirty-fifth session any process of the gateway's user could connect to
the hub's socket and post decisions, quota charges and releases, telemetry or audit records (issue 12, ATK3 item 2)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aigrid.errors import ConfigError
from aigrid.gateway.hub import Hub
from aigrid.gateway.hub_client import HubClient, HubError
from aigrid.gateway.hub_protocol import HELLO, frame
from aigrid.gateway.workers import HUB_TOKEN_FD, hub_token, token_pipe
from tests.gateway.started_hub import started_hub

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
