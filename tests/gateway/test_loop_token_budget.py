"""A tool loop's later model turns are reserved on the request's quota before they run: admission reserves the first
turn (its prompt's estimate and max_tokens), and a loop of up to max_steps + 1 turns spent the rest unreserved,
settled only at its end. A tenant with a token budget of 300 had one request spend 2,040 tokens (17 turns of 120),
ten at once 8,520. Now each later turn grows the reservation by its own estimate (Guard.extend); when the quota has
no room the loop ends with what it has (finish_reason "length", stop "token_budget"): charged what it used, one
audit record."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.errors import UpstreamFailed
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.guard import Guard
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quota_backend import Consumed, Counter, MemoryQuotaBackend
from aigrid.spec.models import QuotaSpec, TenantSpec
from tests.agents.scripted_engine import ScriptedEngine, call
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in

BUDGET = 300
TURN = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
"""Each model turn's usage, as the engine counts it."""
TENANT = {"x-aigrid-tenant": "metered"}
ASK = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Add one, sixteen times."}],
       "tools": [{"type": "function", "function": {"name": "calculator"}}], "aigrid_max_steps": 16,
       "max_tokens": 40}


class AlwaysCalls(ScriptedEngine):
    """A SCRIPTED engine whose every model turn asks for the calculator again, `usage` a turn."""

    def __init__(self, usage: dict[str, int] = TURN) -> None:
        super().__init__([])
        self.usage = usage

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.replies.append({**call("calculator", expression="1 + 1"), "usage": self.usage})
        async with super().open(path, body) as upstream:
            yield upstream


@asynccontextmanager
async def metered(tmp_path: Path, budget: int, usage: dict[str, int] = TURN
                  ) -> AsyncIterator[tuple[Gateway, dict[str, AlwaysCalls]]]:
    """The demo grid with a tenant `metered` of `budget` tokens, an AlwaysCalls engine at each endpoint."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"tenants": {**spec.tenants,
                                               "metered": TenantSpec(quotas=QuotaSpec(token_budget=budget))}})
    engines = {e.id: AlwaysCalls(usage) for e in spec.endpoints}
    gw = build_gateway(spec, engines, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    try:
        yield gw, engines
    finally:
        await gw.guard.stop()


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[tuple[Gateway, dict[str, AlwaysCalls]]]:
    async with metered(tmp_path, BUDGET) as made:
        yield made


async def spent(gw: Gateway, days_ahead: int = 0) -> int:
    """The tenant's token budget counter (the day's window; `days_ahead`: a later day's, which a settlement past the
    budget is carried into: Quotas._carry)."""
    quotas = gw.guard.quotas
    day = 86_400.0
    index = math.floor(quotas.clock() / day) + days_ahead
    return await quotas.backend.value(f"{quotas.prefix}:{{metered}}:tenant:metered:budget:{index}")


def turns(engines: dict[str, AlwaysCalls]) -> int:
    return sum(len(e.received) for e in engines.values())


async def _ask(c: httpx.AsyncClient, stream: bool) -> tuple[int, dict[str, Any] | None]:
    """(status, the answer's loop summary and finish_reason) of one request, streamed or not."""
    r = await c.post("/v1/chat/completions", json={**ASK, "stream": stream}, headers=TENANT)
    if r.status_code != 200:
        return r.status_code, None
    if not stream:
        doc = r.json()
        return 200, {"finish_reason": doc["choices"][0]["finish_reason"], **doc["aigrid_loop"]}
    chunks = [orjson.loads(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: {")]
    last = next(ch for ch in reversed(chunks) if ch.get("choices") and ch["choices"][0].get("finish_reason"))
    return 200, {"finish_reason": last["choices"][0]["finish_reason"], **last["aigrid_loop"]}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_loop_stops_at_its_token_budget_and_is_charged_what_it_used(
        grid: tuple[Gateway, dict[str, AlwaysCalls]], stream: bool) -> None:
    """Before: 17 model turns ran (2,040 tokens against a budget of 300). Now the loop ends when the next turn's
    estimate has no room: the answer's stop says token_budget, and the budget is charged the turns that ran."""
    gw, engines = grid
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        status, loop = await _ask(c, stream)
    assert status == 200 and loop is not None
    assert loop["stop"] == "token_budget" and loop["finish_reason"] == "length", loop
    ran = turns(engines)
    assert loop["model_calls"] == ran and 1 <= ran < 17
    assert await spent(gw) == ran * TURN["total_tokens"]  # settled once, to the engines' count
    assert await spent(gw) <= BUDGET + TURN["total_tokens"]  # the budget, and at most one turn's estimation error
    records = await audit_rows(gw)
    assert len(records) == 1 and records[0]["outcome"] == "ok"
    assert records[0]["prompt_tokens"] + records[0]["completion_tokens"] == ran * TURN["total_tokens"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        status, _ = await _ask(c, stream)
    assert status == 429  # what is left of the budget holds no first turn: refused at admission


@pytest.mark.parametrize("stream", [False, True])
async def test_a_loop_on_an_engine_that_reports_no_usage_is_charged_each_turn_and_stops_at_its_budget(
        tmp_path: Path, stream: bool) -> None:
    """An engine that reports no token counts: the loop summed its turns' counts as 0, so each later turn was
    charged only past what the reservation held 'unused' (all of it: the reservation grew to its largest turn),
    and the answer's usage said 0 tokens, which settled the whole reservation back: 17 turns ran on a budget of
    1,000 and the tenant was charged nothing. Now the count is unknown (the answer's usage is empty): each turn is
    charged its reservation (prompt estimate and max_tokens), and the loop ends at its budget, charged that."""
    async with metered(tmp_path, 1000, usage={}) as (gw, engines):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            status, loop = await _ask(c, stream)
        assert status == 200 and loop is not None
        assert loop["stop"] == "token_budget", loop
        ran = turns(engines)
        assert 1 < ran < 17 and loop["model_calls"] == ran
        charged = await spent(gw)
        assert ran * ASK["max_tokens"] < charged <= 1000  # each turn's prompt and max_tokens, within the budget
        records = await audit_rows(gw)
        assert len(records) == 1 and records[0]["extra"]["charged_tokens"] == charged


@pytest.mark.parametrize("stream", [False, True])
async def test_loops_at_once_share_the_budget(grid: tuple[Gateway, dict[str, AlwaysCalls]], stream: bool) -> None:
    """Before: of ten loops at once six were admitted (each reserved one turn) and spent 8,520 tokens of a budget
    of 300. Now every turn of each is reserved before it runs: together they stay within the budget (and each at
    most one turn's estimation error past it), each admitted one ends at token_budget, one record each. Admission
    reserves the first turn as the loop sends it, the tools' instructions with the prompt (before: the client's
    messages only, 69 tokens a request where the turn's estimate is 202: four admitted, 480 tokens spent)."""
    gw, engines = grid
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        answers = await asyncio.gather(*(_ask(c, stream) for _ in range(10)))
    served = [loop for status, loop in answers if status == 200]
    assert {status for status, _ in answers} <= {200, 429} and served
    assert all(loop is not None and loop["stop"] == "token_budget" for loop in served), served
    ran = turns(engines)
    assert sum(loop["model_calls"] for loop in served if loop is not None) == ran
    assert await spent(gw) == ran * TURN["total_tokens"]
    assert await spent(gw) <= BUDGET
    records = await audit_rows(gw)
    assert len(records) == 10  # one a request, the refused ones too
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in records) == await spent(gw)


async def test_an_engine_that_counts_more_than_the_estimate_is_caught_up_before_the_next_turn(tmp_path: Path) -> None:
    """Each turn's prompt counted at 400 tokens by the engine, far past the gateway's estimate: reserving each turn's
    estimate alone would let the error grow turn by turn (8 turns, 3,360 tokens of a budget of 2,000); what the
    finished turns used past the reservation is reserved with the next turn, so the loop stops within one turn's
    error of the budget."""
    big = {"prompt_tokens": 400, "completion_tokens": 20, "total_tokens": 420}
    async with metered(tmp_path, 2000, big) as (gw, engines):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            status, loop = await _ask(c, False)
        assert status == 200 and loop is not None and loop["stop"] == "token_budget", loop
        ran = turns(engines)
        # what the turns used past today's budget is tomorrow's debt (carried since brief TOKEST), not dropped
        assert await spent(gw) + await spent(gw, 1) == ran * big["total_tokens"]
        assert await spent(gw) + await spent(gw, 1) <= 2000 + big["total_tokens"]  # one turn's error at most
        assert await spent(gw) <= 2000
        assert [r["outcome"] for r in await audit_rows(gw)] == ["ok"]


def _last_response(text: str) -> dict[str, Any]:
    """The Response of a streamed Responses answer's last event (response.completed / incomplete / failed)."""
    events = [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert events and events[-1]["type"] in {"response.completed", "response.incomplete", "response.failed"}, events
    return events[-1]["response"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_responses_request_runs_its_loop_within_the_budget_too(
        grid: tuple[Gateway, dict[str, AlwaysCalls]], stream: bool) -> None:
    """The Responses API runs its server-side tools through the chat route's loop: bounded the same way (before, 17
    turns here too), its answer incomplete, charged the turns that ran. Streamed, the response.incomplete event's
    Response names the loop's stop as the whole answer does (before: `reason` alone, chat_events.Finish did not
    carry the chunk's aigrid_loop.stop); the WebSocket's events are the same stream's."""
    gw, engines = grid
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/responses", headers=TENANT, json={
            "model": ASK["model"], "input": "Add one, sixteen times.", "max_output_tokens": 40, "stream": stream,
            "tools": [{"type": "function", "name": "calculator"}], "aigrid_max_steps": 16})
    assert r.status_code == 200, r.text
    response = _last_response(r.text) if stream else r.json()
    assert response["status"] == "incomplete", response
    # OpenAI's reason (its schema has no other name), and aigrid's: the tenant's token budget, not max_output_tokens
    assert response["incomplete_details"] == {"reason": "max_output_tokens", "aigrid_stop": "token_budget"}
    ran = turns(engines)
    assert 1 <= ran < 17 and await spent(gw) == ran * TURN["total_tokens"] <= BUDGET + TURN["total_tokens"]
    assert len(await audit_rows(gw)) == 1


async def test_a_quota_store_that_fails_mid_loop_ends_it_rather_than_run_turns_unreserved(
        grid: tuple[Gateway, dict[str, AlwaysCalls]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis or the workers' hub gone after admission: no further turn runs without its reservation; the loop ends
    with what it has (logged), charged its first turn, one record."""
    gw, engines = grid

    extend = gw.guard.quotas.extend
    calls = []

    async def down(reservation: Any, tokens: int, **kw: Any) -> Any:
        calls.append(tokens)
        if len(calls) == 1:  # the first turn's, before the store goes
            return await extend(reservation, tokens, **kw)
        raise UpstreamFailed("quota counters unavailable: the hub is gone")

    monkeypatch.setattr(gw.guard.quotas, "extend", down)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        status, loop = await _ask(c, False)
    assert status == 200 and loop is not None and loop["stop"] == "token_budget" and turns(engines) == 1, loop
    assert "failed to reserve a further model turn" in caplog.text
    assert await spent(gw) == TURN["total_tokens"] and len(await audit_rows(gw)) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_turn_the_budget_has_room_for_in_part_is_sent_with_fewer_output_tokens(
        grid: tuple[Gateway, dict[str, AlwaysCalls]], stream: bool) -> None:
    """No max_tokens: each turn may write 256 tokens. Before, each later turn reserved its whole 256 on top of what
    the earlier turns held unused, and the loop ended after one turn (120 tokens of a budget of 300). Now a turn is
    charged past what the reservation holds unused, and where the budget has room for its prompt but not all 256
    it is sent with what there is (the first turn too: admission reserves its prompt, the tools' instructions with
    it, and 16 output tokens): a second turn runs, and the budget is not passed."""
    gw, engines = grid
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json={**{k: v for k, v in ASK.items() if k != "max_tokens"},
                                                       "stream": stream}, headers=TENANT)
    assert r.status_code == 200, r.text
    sent = [body.get("max_tokens") for e in engines.values() for body in e.received]
    assert len(sent) == 2 and all(16 <= tokens < 256 for tokens in sent), sent
    assert await spent(gw) == 2 * TURN["total_tokens"] <= BUDGET
    assert '"stop":"token_budget"' in r.text.replace(" ", "")


class _ChargesThenHangs(MemoryQuotaBackend):
    """A quota store (Redis, the hub) that has charged but whose reply has not come back when the caller is
    cancelled: `charged` set once it took the counters, the reply held until `reply` is set."""

    pauses = True  # awaits mid-call, as Redis and the hub do: the guard shields its charges

    def __init__(self) -> None:
        super().__init__()
        self.charged = asyncio.Event()
        self.reply = asyncio.Event()
        self.hang = False

    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        consumed = await super().consume(counters, op)
        await self._held()
        return consumed

    async def grow(self, counters: Sequence[Counter], give: int, op: str | None = None) -> int | None:
        short = await super().grow(counters, give, op)
        await self._held()
        return short

    async def _held(self) -> None:
        if self.hang:
            self.charged.set()
            await self.reply.wait()


@pytest.mark.parametrize("step", ["admit", "extend"])
async def test_a_cancel_while_the_quota_store_charges_leaves_that_charge_for_finish_to_settle(
        tmp_path: Path, step: str) -> None:
    """A whole-answer timeout, a shutdown or a losing hedge cancels the request while the store has charged and
    its reply is on the way: the charge is still put on the exchange and settled by finish, not left charged
    until the budget's period ends."""
    store = _ChargesThenHangs()
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"tenants": {**spec.tenants,
                                               "metered": TenantSpec(quotas=QuotaSpec(token_budget=BUDGET))}})
    gw = build_gateway(spec, {}, rng=random.Random(3), sleep=_no_sleep,
                       guard=Guard(spec, quota_backend=store))
    await gw.guard.start()
    try:
        ex = Exchange(route="chat", started=0.0, principal=Principal("metered", "k", Scopes(), "anonymous"))
        if step == "extend":
            await gw.guard.admit(ex, {}, "hi", 100)
            store.hang = True
            task = asyncio.create_task(gw.guard.extend(ex, 200, 300))
        else:
            store.hang = True
            task = asyncio.create_task(gw.guard.admit(ex, {}, "hi", 100))
        await asyncio.wait_for(store.charged.wait(), 30)
        assert await spent(gw) > 0
        task.cancel()
        await asyncio.sleep(0)
        store.reply.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ex.reservation is not None
        await gw.guard.finish(ex)
        assert await spent(gw) == 0  # nothing reached an engine: the whole charge released
    finally:
        await gw.guard.stop()


async def run_ended(gw: Gateway, rid: str, within_s: float = 30.0) -> None:
    """Until the background run of `rid` has ended (its status final, its exchange settled and recorded): its task
    awaited, not polled (a run already over has left the table); past `within_s`, the test fails saying so."""
    held = gw.background._tasks.get(rid)
    if held is not None:
        try:
            await asyncio.wait_for(asyncio.shield(held[1]), within_s)
        except TimeoutError:
            raise AssertionError(f"background run {rid} still running after {within_s} s") from None


async def test_a_background_response_with_server_tools_reserves_the_loops_first_turn_as_the_foreground_does(
        grid: tuple[Gateway, dict[str, AlwaysCalls]]) -> None:
    """Its create reserved the prompt and the whole max_output_tokens (here past the tenant's budget: 429 "request
    too large") where the same request in the foreground reserves the loop's first turn and runs (the test above);
    now both reserve the same, and the background run is bounded by the budget as the foreground loop is."""
    gw, engines = grid
    ask = {"model": ASK["model"], "input": "Add one, sixteen times.", "max_output_tokens": 2 * BUDGET,
           "tools": [{"type": "function", "name": "calculator"}], "aigrid_max_steps": 16}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/responses", headers=TENANT, json={**ask, "background": True})
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        await run_ended(gw, rid)
        got = (await c.get(f"/v1/responses/{rid}", headers=TENANT)).json()
    assert got["status"] == "incomplete" and got["incomplete_details"]["aigrid_stop"] == "token_budget", got
    assert 1 <= turns(engines) < 17 and await spent(gw) <= BUDGET + TURN["total_tokens"]
