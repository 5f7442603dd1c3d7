"""The gateway app's start (app.build_app's lifespan): what a failed start leaves behind and what it says."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from aigrid.gateway.app import build_app, build_gateway
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine


async def lifespan_start(app: Any) -> dict[str, Any]:
    """Run the ASGI lifespan's startup as a server would; the app's answer (startup.complete or .failed)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await answers.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    try:
        return await asyncio.wait_for(answers.get(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_stop_that_fails_after_a_failed_start_is_logged_and_the_start_error_stands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A start that fails half-way stops what it started; a stop that fails then was suppressed without a
    word. Now it is logged (with its traceback), and the start's own error is still the one reported."""
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints})
    app = build_app(gw)

    async def scraper_start() -> None:
        raise RuntimeError("the scraper could not start")

    async def agents_stop() -> None:
        raise RuntimeError("the agents could not stop")

    monkeypatch.setattr(gw.scraper, "start", scraper_start)
    monkeypatch.setattr(gw.agents, "stop", agents_stop)
    with caplog.at_level(logging.WARNING, logger="aigrid.gateway"):
        answer = await lifespan_start(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert isinstance(gw.startup_error, RuntimeError) and str(gw.startup_error) == "the scraper could not start"
    warned = [r for r in caplog.records if "while stopping after a failed start" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_info is not None
    assert "agents_stop" in warned[0].getMessage() and "the agents could not stop" in caplog.text
    await gw.guard.stop()
