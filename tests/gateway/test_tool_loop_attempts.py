"""A tool loop that has had server-side tools run is never run again on another engine: its tools act (an SQL
write, an MCP tool that sends or exports, a request to the web), so a second run would act twice. Neither a
failover after a later model turn fails, nor a hedge (a second attempt started while the first is slow)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.agents.tool import ToolContext
from aigrid.engines.protocol import UpstreamResponse
from aigrid.errors import EngineUnavailable
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.security.firewall.texts import Source
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in

MODEL = "smollm2-135m"
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "Export the payroll, then say done."}],
       "tools": [{"type": "function", "function": {"name": "payroll_export"}}]}


class Export:
    """A server-side tool that acts: each run is counted."""

    name = "payroll_export"
    description = "exports the payroll"
    parameters: Mapping[str, Any] = {"type": "object", "properties": {}}
    source = Source.MCP_RESULT

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        self.runs += 1
        return "exported"


class FailsSecondTurn(ScriptedEngine):
    """A SCRIPTED engine that asks for the tool, then fails on the loop's next model turn."""

    def __init__(self) -> None:
        super().__init__([call("payroll_export")])

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        if not self.replies:
            raise EngineUnavailable("connection reset by the engine")
        async with super().open(path, body) as upstream:
            yield upstream


class Slow(ScriptedEngine):
    """A SCRIPTED engine whose every model turn takes `delay_s`."""

    def __init__(self, delay_s: float, replies: list[dict[str, Any]]) -> None:
        super().__init__(replies)
        self.delay_s = delay_s

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        await asyncio.sleep(self.delay_s)
        async with super().open(path, body) as upstream:
            yield upstream


async def _grid(tmp_path: Path, engine: Callable[[], ScriptedEngine]) -> tuple[dict[str, ScriptedEngine], Gateway, Export]:
    """The demo grid, an engine of `engine()` at each endpoint and the counting tool, its guard started."""
    spec = spec_in(tmp_path)
    engines = {e.id: engine() for e in spec.endpoints}
    gw = build_gateway(spec, engines, rng=random.Random(2), sleep=_no_sleep)
    tool = Export()
    gw.agents.tools.add(tool)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    return engines, gw, tool


async def test_a_loop_whose_engine_fails_after_its_tools_acted_is_not_run_again(tmp_path: Path) -> None:
    """Before: the whole loop ran again at the next candidate (the tool ran at each: twice, three times), and only
    the answering attempt's turns were charged. Now the answer is the 502 that says so, which the SDKs do not
    retry, charged the turns the loop finished, its record naming the tool's one run."""
    engines, gw, tool = await _grid(tmp_path, FailsSecondTurn)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json=ASK)
        assert r.status_code == 502, r.text
        assert r.headers["x-should-retry"] == "false"
        assert "not tried again" in r.json()["error"]["message"], r.text
        assert tool.runs == 1
        assert sum(len(e.received) for e in engines.values()) == 1  # one engine: the turn that asked (the next one failed)
        record = (await audit_rows(gw))[-1]
        assert record["outcome"] == "error:upstream_failed"
        assert [(t["tool"], t["ok"]) for t in record["extra"]["tools"]] == [("payroll_export", True)]
        assert record["extra"].get("charged_tokens", 0) > 0  # the finished turn, not nothing
        failed = [e for e, state in gw.store.snapshot().states.items() if state.error_rate > 0]
        assert len(failed) == 1  # the engine that failed is charged the failure, no other engine asked
    finally:
        await gw.guard.stop()


async def test_a_loop_with_server_side_tools_is_not_hedged(tmp_path: Path) -> None:
    """A hedge starts a second attempt when the first byte is late; a loop's first byte comes after whole model
    turns and tool runs, so with `x-aigrid-hedge: on` nearly every loop was run twice at once, its tools too.
    A whole answer's hedge waits for its decode time too: with no max_tokens that is the context's (8,192 tokens, 27
    min), and a streamed loop's first byte comes at once, so neither hedged within the test, with the loop's hedge
    left on too (it passed so, and slept 2 s for nothing). max_tokens 1: the hedge would start at 0.73 s and its
    tool run at its first turn's end (2.2 s), before the first attempt's loop ends (two turns, 3.0 s)."""
    engines, gw, tool = await _grid(tmp_path, lambda: Slow(1.5, [call("payroll_export"), answer("done")]))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     timeout=30) as c:
            r = await c.post("/v1/chat/completions", json={**ASK, "max_tokens": 1}, headers={"x-aigrid-hedge": "on"})
            assert r.status_code == 200, r.text
        assert tool.runs == 1
        assert sum(len(e.received) for e in engines.values()) == 2
    finally:
        await gw.guard.stop()


async def streamed_cut(tmp_path: Path, engine: Callable[[], ScriptedEngine]) -> tuple[Gateway, dict[str, Any]]:
    """A streamed loop (max_tokens 500) on `engine()`, whose engine fails after the tool ran once: it ended with the
    in-stream error, audited `interrupted`; the gateway (its guard stopped) and that record."""
    engines, gw, tool = await _grid(tmp_path, engine)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json={**ASK, "stream": True, "max_tokens": 500})
        assert r.status_code == 200 and "stream_interrupted" in r.text, r.text
        assert tool.runs == 1
        record = (await audit_rows(gw))[-1]
        assert record["outcome"] == "interrupted"
        return gw, record
    finally:
        await gw.guard.stop()


async def test_a_streamed_loop_that_breaks_after_its_tools_acted_is_charged_its_finished_turns(tmp_path: Path) -> None:
    """After the first byte a streamed loop is not run again either: it ends with the in-stream error. It was
    charged its reservation (one turn's prompt and max_tokens), not what its finished turns used; now those
    turns (and the prompt the failed turn's engine was sent)."""
    _, record = await streamed_cut(tmp_path, FailsSecondTurn)
    finished = 15  # the scripted turn's usage (prompt 10 + completion 5)
    assert finished <= record["extra"]["charged_tokens"] < 500, record  # the turns it ran and the held prompt


class CountsBelowZero(FailsSecondTurn):
    """FailsSecondTurn whose first turn reports counts below zero (a broken or hostile engine)."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = [{**call("payroll_export"),
                         "usage": {"prompt_tokens": -100_000, "completion_tokens": -5, "total_tokens": -100_005}}]


async def test_a_loop_turns_counts_below_zero_are_not_charged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A loop cut after its tools acted is charged its finished turns' counts: a turn's -100,000 was summed into
    them and the tenant refunded (charged -99,903 tokens). Now that turn's count is unknown (agents.loop.turn_counts,
    logged as the engine's): the loop is charged its reservation, as any answer whose count is unknown."""
    gw, record = await streamed_cut(tmp_path, CountsBelowZero)
    assert record["extra"]["charged_tokens"] >= 500, record  # the reservation: at least the turn's max_tokens
    assert "counted prompt_tokens is -100000" in caplog.text
    assert gw.proxy.written.failed == 0


class CountsPastContext(FailsSecondTurn):
    """FailsSecondTurn whose first turn counts 2**63-1 tokens: within 64 bits, far past its model's context."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = [{**call("payroll_export"),
                         "usage": {"prompt_tokens": (1 << 63) - 11, "completion_tokens": 10, "total_tokens": (1 << 63) - 1}}]


async def test_a_loop_turns_count_past_its_context_is_not_charged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A turn's count was bounded to 64 bits only, not by its context: a loop cut after its tools acted was charged
    the engine's 2**63-1 tokens (its tenant locked out for good; two such turns summed past 64 bits). Now the turn's
    bound is its model's context (LoopConfig.most_turn_tokens, from the spec, as the front door's token_counts.count_fault):
    the count is unknown, logged as the engine's, and the loop is charged its reservation."""
    gw, record = await streamed_cut(tmp_path, CountsPastContext)
    context = gw.spec.models[MODEL].context
    assert 500 <= record["extra"]["charged_tokens"] <= context + 500, record  # the reservation, not 2**63-1
    assert f"9223372036854775807 tokens, more than the {context} its context holds" in caplog.text
    assert gw.proxy.written.failed == 0
