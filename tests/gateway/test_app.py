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


async def test_no_answer_is_kept_by_a_cache_on_the_way(client: Any) -> None:
    """The gateway's answers are the caller's (its files, batches, stored responses, decisions, its key's models)
    and said nothing of caching: a file's content came with `last-modified` and an `etag` (heuristically fresh
    for a shared cache), and a cache that keeps what a request without `Authorization` got (Varnish's built-in
    rules keep answers to a GET without Authorization or a cookie for 120 s; the Anthropic SDK sends its key as
    `x-api-key`) handed one tenant's list of batches, or its file, to whoever asked the same URL. Every answer
    now says `no-store` unless its route says otherwise, and `nosniff`."""
    line = (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "smollm2-135m", '
            b'"messages": [{"role": "user", "content": "hi"}]}}\n')
    up = await client.post("/v1/files", files={"file": ("r.jsonl", line)}, data={"purpose": "batch"},
                           headers={"x-api-key": "k"})
    assert up.status_code == 200
    file_id = up.json()["id"]
    for path in ("/v1/models", "/v1/files", f"/v1/files/{file_id}", f"/v1/files/{file_id}/content", "/v1/batches",
                 "/v1/decisions", "/v1/grid", "/v1/responses/resp_missing", "/v1/nowhere"):
        got = await client.get(path, headers={"x-api-key": "k"})
        assert got.headers.get("cache-control") == "no-store", (path, got.status_code, dict(got.headers))
        assert got.headers.get("x-content-type-options") == "nosniff", path
    assert (await client.head(f"/v1/files/{file_id}/content")).headers.get("cache-control") == "no-store"
