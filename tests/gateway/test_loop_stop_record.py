"""Why a tool loop ended is in its audit record (`extra.loop_stop`) and its access line (`loop_stop`), on every door
that runs one: chat (whole, streamed), Responses (whole, streamed, background) and a batch's line. A loop cut short
(its step limit here; a revoked key, a token budget) answers 200, its outcome `ok` as one that answered: until the
thirty-seventh session (brief AUDSTOP) neither the record nor the line told them apart."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.background import BACKGROUND_ROUTE
from aigrid.gateway.batch_line import line_route
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in

MODEL = "smollm2-135m"
STEPS = 2
"""The loop's aigrid_max_steps: every model turn asks for the calculator again, so it stops at its step limit."""
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Add one, again and again."}],
        "tools": [{"type": "function", "function": {"name": "calculator"}}], "aigrid_max_steps": STEPS,
        "max_tokens": 40}
RESPONSE = {"model": MODEL, "input": "Add one, again and again.", "tools": [{"type": "function", "name": "calculator"}],
            "aigrid_max_steps": STEPS, "max_output_tokens": 40}


class Looping(ScriptedEngine):
    """Every model turn asks for the calculator, unless `answers` (then it answers)."""

    def __init__(self) -> None:
        super().__init__([])
        self.answers = False

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.replies.append(answer("2") if self.answers else call("calculator", expression="1 + 1"))
        async with super().open(path, body) as upstream:
            yield upstream


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, Looping]]:
    spec = spec_in(tmp_path)
    engine = Looping()
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(2), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            yield c, gw, engine
    finally:
        if gw.batches is not None:
            await gw.batches.stop()
        await gw.guard.stop()


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.aigrid_fields for r in caplog.records if r.name == "aigrid.access"]  # type: ignore[attr-defined]


async def until(done: Callable[[], bool]) -> None:
    for _ in range(3000):  # up to 30 s: a loaded machine is late, not wrong
        if done():
            return
        await asyncio.sleep(0.01)


async def the_record(gw: Gateway, route: str) -> dict[str, Any]:
    (record,) = [row for row in await audit_rows(gw) if row["extra"].get("route") == route]
    return record


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", CHAT), ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/responses", RESPONSE), ("/v1/responses", {**RESPONSE, "stream": True})],
    ids=["chat", "chat-stream", "responses", "responses-stream"])
async def test_a_live_loop_cut_at_its_step_limit_says_so_in_its_record_and_line(
        grid: tuple[httpx.AsyncClient, Gateway, Looping], caplog: pytest.LogCaptureFixture,
        path: str, body: dict[str, Any]) -> None:
    c, gw, engine = grid
    with caplog.at_level("INFO", logger="aigrid.access"):
        r = await c.post(path, json=body)
        assert r.status_code == 200, r.text
        engine.answers = True
        answered = await c.post(path, json=body)
        assert answered.status_code == 200, answered.text
    cut, done = [row for row in await audit_rows(gw) if row["extra"].get("route") == path]
    assert (cut["outcome"], cut["extra"].get("loop_stop")) == ("ok", "step_limit"), cut  # before: no loop_stop
    assert (done["outcome"], done["extra"].get("loop_stop")) == ("ok", "answer"), done
    lines = [line for line in access_lines(caplog) if line["route"] == path]
    assert [line.get("loop_stop") for line in lines] == ["step_limit", "answer"], lines


async def test_a_request_without_a_loop_names_no_stop(grid: tuple[httpx.AsyncClient, Gateway, Looping],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    c, gw, engine = grid
    engine.answers = True
    with caplog.at_level("INFO", logger="aigrid.access"):
        r = await c.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4,
                                                       "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
    assert "loop_stop" not in (await the_record(gw, "/v1/chat/completions"))["extra"]
    assert all("loop_stop" not in line for line in access_lines(caplog))


async def test_a_background_loop_cut_at_its_step_limit_says_so(grid: tuple[httpx.AsyncClient, Gateway, Looping],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    c, gw, _ = grid
    with caplog.at_level("INFO", logger="aigrid.access"):
        r = await c.post("/v1/responses", json={**RESPONSE, "background": True})
        assert r.status_code == 200, r.text
        await until(lambda: not gw.background.owns(r.json()["id"]))
        record = await the_record(gw, BACKGROUND_ROUTE)
    assert (record["outcome"], record["extra"].get("loop_stop")) == ("ok", "step_limit"), record
    assert [line.get("loop_stop") for line in access_lines(caplog) if line["route"] == BACKGROUND_ROUTE] \
        == ["step_limit"]


async def test_a_batch_lines_loop_cut_at_its_step_limit_says_so(grid: tuple[httpx.AsyncClient, Gateway, Looping],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    c, gw, _ = grid
    data = orjson.dumps({"custom_id": "adds", "method": "POST", "url": "/v1/chat/completions", "body": CHAT})
    with caplog.at_level("INFO", logger="aigrid.access"):
        f = (await c.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", data)})).json()
        batch = (await c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                                   "completion_window": "24h"})).json()
        for _ in range(3000):
            batch = (await c.get(f"/v1/batches/{batch['id']}")).json()
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        assert batch["request_counts"]["completed"] == 1, batch
        route = line_route(batch["id"], "adds")
        record = await the_record(gw, route)
    assert (record["outcome"], record["extra"].get("loop_stop")) == ("ok", "step_limit"), record
    assert [line.get("loop_stop") for line in access_lines(caplog) if line["route"] == route] == ["step_limit"]
