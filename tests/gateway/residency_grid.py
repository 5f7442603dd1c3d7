"""The demo grid with keys enforced and a fake engine at each endpoint, asked over httpx: what the tests of where a
door keeps a keyed caller's data share (test_upload_residency, test_conversation_writer_residency)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.models import GridSpec
from tests.gateway.conftest import _no_sleep
from tests.gateway.fake_engine import FakeEngine


@asynccontextmanager
async def residency_grid(spec: GridSpec, keys: dict[str, str]) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, dict[str, str]], dict[str, FakeEngine]]]:
    """The gateway of `spec` (its keys file saved by the caller) started: its client, each of `keys` (name: api key)
    as its authorization header, and the fake engines by endpoint id; its batches and guard stopped after."""
    engines = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    gw = build_gateway(spec, engines, rng=random.Random(5), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            yield c, {name: {"authorization": f"Bearer {k}"} for name, k in keys.items()}, engines
    finally:
        if gw.batches is not None:
            await gw.batches.stop()
        await gw.guard.stop()


def reached(engines: dict[str, FakeEngine], text: str) -> set[str]:
    """The endpoints whose engine was sent `text`."""
    return {name for name, e in engines.items() if any(text in str(r) for r in e.received)}
