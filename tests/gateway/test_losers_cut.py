"""proxy._close_losers (a hedged request's race: the winner's answer goes on, every other attempt is cancelled and
closed) when a loser raises a BaseException that is no cancel (KeyboardInterrupt, SystemExit; an injected one here,
which pytest does not act on), awaited or in its close: until the thirtieth session it skipped the losers after it and
left the winner's engine request open, one in flight for good. test_hangup covers the request's own cancel there."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from aigrid.gateway.app import Gateway, build_gateway
from aigrid.gateway.proxy import Held, Opened
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.test_close_then_book import Injected, booked

OTHER = RuntimeError("the losing engine's connection broke while closing")


def gateway(tmp: Path) -> Gateway:
    spec = spec_in(tmp)
    return build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)


@pytest.mark.parametrize("where", ["awaited", "awaited-a-bug", "closing", "closing-an-exception"])
async def test_a_loser_cut_by_another_base_exception_closes_every_other_and_the_winner(tmp_path: Path,
                                                                                       where: str) -> None:
    """Three attempts: the winner `a`, a loser `b` that is cut (its task raises the injected error, or its close does),
    and a loser `c` that answered in the same turn. Every engine request is closed, nothing in flight, the winner
    booked error:internal once (not the client's 499), the error raised on; a loser's close that fails with an
    Exception only is logged, and the winner goes on (left open, still in flight: it is being served). A loser's task
    that raises an Exception other than an engine's or the API's (a bug in the attempt) cuts alike, the winner booked
    error:internal, not client_closed (book_cut's reading of an Exception in a close after the client left)."""
    gw = gateway(tmp_path)
    a, b, c = [e.id for e in gw.spec.endpoints][:3]
    site = {e.id: e.site for e in gw.spec.endpoints}
    cands = {ep: SimpleNamespace(endpoint_id=ep, site_id=site[ep]) for ep in (a, b, c)}
    record = SimpleNamespace(prompt_tokens=10, width=1, status="routing", left_at=None,
                             attempts=[{"endpoint": ep, "ok": True} for ep in (a, b, c)])
    error: BaseException = RuntimeError("a bug in the losing attempt") if where == "awaited-a-bug" else \
        Injected("interrupted while the race's losers closed")
    closed: list[str] = []

    @asynccontextmanager
    async def engine_request(ep: str, fails: BaseException | None = None) -> AsyncIterator[None]:
        try:
            yield
        finally:
            closed.append(ep)
        if fails is not None:
            raise fails

    async def opened(ep: str, fails: BaseException | None = None) -> Opened:
        gw.store.request_started(ep, 10)
        gw.store.first_token(ep, 10)
        stack = Held()
        await stack.enter(engine_request(ep, fails))  # type: ignore[arg-type]
        return Opened(cands[ep], None, stack, b"x", 0.0, 0.0)  # type: ignore[arg-type]

    async def cut_before_its_first_byte() -> Opened:  # as _attempt raises it on: its own slot already freed
        raise error

    won = await opened(a)
    bad = cut_before_its_first_byte() if where.startswith("awaited") else \
        opened(b, error if where == "closing" else OTHER)
    running = {asyncio.ensure_future(bad): (cands[b], True), asyncio.ensure_future(opened(c)): (cands[c], True)}
    await asyncio.wait(running)  # both done in the winner's turn
    if where == "closing-an-exception":
        await gw.proxy._close_losers(running, None, record, won)  # type: ignore[arg-type]
        assert sorted(closed) == sorted([b, c]) and gw.store.inflight(a) == 1
        assert all(gw.store.inflight(ep) == 0 for ep in (b, c))
        await won.stack.aclose()
        return
    with pytest.raises(type(error)) as got:
        await gw.proxy._close_losers(running, None, record, won)  # type: ignore[arg-type]
    assert got.value is error
    assert sorted(closed) == sorted([a, c] if where.startswith("awaited") else [a, b, c]), closed
    assert all(gw.store.inflight(ep) == 0 for ep in (a, b, c)), [gw.store.inflight(ep) for ep in (a, b, c)]
    assert {k: v for k, v in booked(gw).items() if k[0] == a} == {(a, "error:internal"): 1}, booked(gw)
    assert record.left_at == a
