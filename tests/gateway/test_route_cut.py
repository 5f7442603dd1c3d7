"""routes.Audited's way out, cut by a BaseException that is neither an Exception nor a cancel (KeyboardInterrupt,
SystemExit; an injected one here, which pytest does not act on) before the answer's first byte: the request is settled
and audited error:internal, and the exception goes on (test_close_then_book and test_attempt_cut cover the proxy's
own ways out)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.routes import own_exchange
from aigrid.spec.models import QuotaSpec
from tests.gateway import hostile_engine as H
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.injected_cut import cut_by
from tests.gateway.metered_gateway import balance, metered_gateway
from tests.gateway.test_close_then_book import Injected, inflight, the_one_record, two_engines
from tests.gateway.test_exit_paths import CHAT


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_cut_by_another_base_exception_before_its_first_byte_is_audited_error_internal(
        tmp_path: Path, stream: bool) -> None:
    """Until the thirtieth session the route caught an Exception or a cancel only: such a cut before the first byte
    was audited client_closed, as if the client had left. Now error:internal, settled, nothing in flight, raised on."""
    error = Injected("interrupted before the first byte")

    @asynccontextmanager
    async def opening(path: str, payload: bytes) -> AsyncIterator[UpstreamResponse]:
        raise error
        yield UpstreamResponse(200, {}, H.whole(b"{}"))  # (an async context manager's generator)

    async for g in two_engines(tmp_path, lambda p, r: H.whole(b"{}")):
        for engine in g.gw.proxy._engines.values():
            engine.open = opening  # type: ignore[method-assign]
        await cut_by(error, g.post("chat", stream))
        assert inflight(g.gw) == 0
        record = await the_one_record(g.gw)
        assert record["outcome"] == "error:internal", record


async def test_an_exchange_the_gateway_opens_itself_cut_by_another_base_exception_is_audited_error_internal(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """routes.own_exchange (a batch's line, a background run, a compaction pass) caught an Exception or a cancel
    only: a block cut so before any engine had it was audited `ok`. Now error:internal, settled, logged, raised on."""
    gw = await metered_gateway(tmp_path, fakes, QuotaSpec(requests_per_min=1000, tokens_per_min=1_000_000))
    try:
        ex = Exchange("own work", time.time(), principal=gw.guard.principal(None, "metered"))
        error = Injected("interrupted in the gateway's own work")
        with pytest.raises(Injected) as got:
            async with own_exchange(gw, ex, {}, what="the test's own work"):
                await gw.guard.admit(ex, CHAT, "Say hello", 500)
                raise error
        assert got.value is error
        row = await the_one_record(gw)
        assert (row["outcome"], row["extra"]["route"]) == ("error:internal", "own work"), row
        assert ex.closed and await balance(gw) == 0  # its reservation settled: nothing used
    finally:
        await gw.guard.stop()
