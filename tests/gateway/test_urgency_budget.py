"""A request's deadline is one budget, fixed when it arrives (gateway/urgency.py, `Deadline`): every step it takes
before its first token gets what is left of it, never the whole again: an automatic compaction's pass and then the
answer (responses_api.py), a failover to the next candidate and an escalation to a larger model (proxy.py).

Time is the test's: the gateway's clock moves only when an engine "works" (each call moves it by a set time), so
the assertions read the deadline each step was decided or sent with, not the wall clock of a loaded machine."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aigrid.engines.protocol import EngineStats, UpstreamResponse
from aigrid.errors import EngineUnavailable
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.decisions import DecisionRecord
from aigrid.spec.load import load_spec
from aigrid.spec.models import AuditSpec, QuotaSpec, TenantSpec
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.compaction_grid import (  # LOW: below CONVERSATION's estimate, compacted first
    CONVERSATION,
    LOW,
    METERED,
    MODEL,
)
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in, started
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import openai_client

PASS_USAGE = {"prompt_tokens": 70, "completion_tokens": 30, "total_tokens": 100}
DEADLINE_MS = 2000.0


class Clock:
    """The gateway's clock, moved only by the engines below."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedEngine(ScriptedEngine):
    """A scripted engine each call of which takes the next of `took_s` on the gateway's clock; `busy`: its stats
    say every slot is taken and a long queue waits (the admission queue holds what is routed then)."""

    def __init__(self, clock: Clock, took_s: list[float]) -> None:
        super().__init__([])
        self.clock, self.took_s = clock, took_s
        self.busy = False
        self.answered: Callable[[], Awaitable[None]] | None = None
        """Awaited once each call is over (the test's hook between the pass and the answer)."""

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.clock.now += self.took_s.pop(0)
        async with super().open(path, body) as upstream:
            yield upstream
        if self.answered is not None:
            await self.answered()

    async def stats(self) -> EngineStats:
        return EngineStats(running=4, waiting=64) if self.busy else EngineStats()


@asynccontextmanager
async def compacting_grid(tmp_path: Path, took_s: list[float]) -> AsyncIterator[tuple[Gateway, TimedEngine,
                                                                                      openai.AsyncOpenAI]]:
    """The demo grid, every endpoint one timed engine (the pass answers a summary, then the answer), a tenant
    `metered` with quotas."""
    spec = spec_in(tmp_path)
    tenants = {**spec.tenants, "metered": TenantSpec(quotas=QuotaSpec(requests_per_min=1000,
                                                                      tokens_per_min=1_000_000))}
    clock = Clock()
    engine = TimedEngine(clock, took_s)
    engine.replies = [{"content": "The user wants invoice 2231 totalled.", "usage": PASS_USAGE},
                      {"content": "Dear Dana, ..."}]
    gw = build_gateway(spec.model_copy(update={"tenants": tenants}), {e.id: engine for e in spec.endpoints},
                       rng=random.Random(3), sleep=_no_sleep, clock=clock)
    gw.guard.quotas.clock = lambda: 1_800_000_030.0
    await gw.scraper.scrape_once()
    await gw.guard.start()
    client = openai_client(build_app(gw))
    try:
        yield gw, engine, client
    finally:
        await client.close()
        await gw.guard.stop()


def _left_ms(record: DecisionRecord) -> float | None:
    """What was left of the deadline when the decision was made."""
    u = record.decision.urgency
    return None if u is None else u.deadline_ms


async def test_the_answer_after_a_compaction_pass_gets_what_the_pass_left(tmp_path: Path) -> None:
    """The pass took 1.2 s of the 2 s: the answer is decided with the 0.8 s left (it was decided with the whole
    2 s again: a client asking for 2 s could wait ~4 s for its first token)."""
    async with compacting_grid(tmp_path, [1.2, 0.1]) as (gw, engine, client):
        done = await client.responses.create(model=MODEL, input=CONVERSATION, context_management=LOW,
                                             extra_headers=METERED, extra_body={"deadline_ms": DEADLINE_MS})
        assert [item.type for item in done.output] == ["compaction", "message"]
        answer, pass_ = gw.decisions.recent(2)
        assert pass_.decision.request_id != answer.decision.request_id and len(engine.received) == 2
        assert _left_ms(pass_) == pytest.approx(DEADLINE_MS)
        assert _left_ms(answer) == pytest.approx(DEADLINE_MS - 1200.0)
        # each exchange's audit record names the deadline asked; the decision, what was left of it
        compact, create = (await audit_rows(gw))[-2:]
        assert compact["extra"]["urgency"]["deadline_ms"] == create["extra"]["urgency"]["deadline_ms"] == DEADLINE_MS


@pytest.mark.parametrize("where", ["header", "body"])
async def test_a_budget_the_pass_spent_is_the_deadline_error_settled_and_audited(tmp_path: Path, where: str) -> None:
    """The pass took 2.5 s of the 2 s: the answer is refused as any deadline miss is (503 deadline_unmeetable naming
    the field it was asked with, before any engine works on the answer), the pass's tokens charged, the answer's
    reservation given back, both exchanges audited. It was answered, 4.5 s after the request arrived."""
    asked = ({"extra_headers": {**METERED, "x-aigrid-deadline-ms": "2000"}} if where == "header"
             else {"extra_headers": METERED, "extra_body": {"deadline_ms": DEADLINE_MS}})
    param = "x-aigrid-deadline-ms" if where == "header" else "deadline_ms"
    async with compacting_grid(tmp_path, [2.5, 0.1]) as (gw, engine, client):
        with pytest.raises(openai.APIStatusError) as refused:
            await client.with_options(max_retries=0).responses.create(model=MODEL, input=CONVERSATION,
                                                                      context_management=LOW, **asked)
        assert refused.value.status_code == 503, refused.value.body
        assert refused.value.body["code"] == "deadline_unmeetable" and refused.value.body["param"] == param
        assert refused.value.body["message"].startswith("the deadline (2000 ms to the first token) cannot be met")
        assert refused.value.response.headers["x-should-retry"] == "false"
        assert len(engine.received) == 1  # the pass only
        principal = gw.guard.principal(None, "metered")
        assert await gw.guard.quotas.tokens_this_minute(principal) == 100  # the pass's usage; the answer's none
        compact, create = (await audit_rows(gw))[-2:]
        assert compact["extra"]["route"] == "/v1/responses/compact" and compact["outcome"] == "ok"
        assert create["extra"]["route"] == "/v1/responses" and create["outcome"] == "error:deadline_unmeetable"
        assert create["prompt_tokens"] == create["completion_tokens"] == 0
        answer = gw.decisions.recent(1)[0]
        assert answer.status == "deadline_unmeetable" and _left_ms(answer) == pytest.approx(-500.0)


@pytest.mark.parametrize("deadline_ms", [None, 60_000.0])
async def test_the_answers_wait_in_the_admission_queue_counts_from_its_own_start(tmp_path: Path,
                                                                                 deadline_ms: float | None) -> None:
    """The pass took 31 s, and then every engine is busy: the answer waits in the admission queue as any request
    does (the standard class's 30 s), and is answered once an engine frees; a deadline still counts from the
    create's arrival. Since the deadline became one budget (2f10c942) the queue counted its wait from the create's
    arrival too, deadline or none: the answer was shed at once, 429 'every eligible endpoint stayed busy for
    31.0 s', the pass already charged."""
    extra = {} if deadline_ms is None else {"deadline_ms": deadline_ms}
    async with compacting_grid(tmp_path, [31.0, 0.1]) as (gw, engine, client):
        async def pass_answered() -> None:
            engine.answered, engine.busy = None, True
            await gw.scraper.scrape_once()

        engine.answered = pass_answered
        create = asyncio.create_task(client.with_options(max_retries=0).responses.create(
            model=MODEL, input=CONVERSATION, context_management=LOW, extra_headers=METERED, extra_body=extra))
        async with asyncio.timeout(30):  # the pass answered, the answer routed (at once; 30 s for a loaded machine)
            while not len(gw.admission.queue) and not create.done():
                await asyncio.sleep(0.01)
        for _ in range(5):  # the queue's passes (an expiry due now is taken at the next one)
            gw.admission.drain()
            await asyncio.sleep(0.01)
        assert not create.done() and len(gw.admission.queue) == 1, create.done() and create.exception()
        engine.busy = False
        await gw.scraper.scrape_once()
        gw.admission.drain()
        done = await create
        assert [item.type for item in done.output] == ["compaction", "message"]
        answer = gw.decisions.recent(1)[0]
        assert _left_ms(answer) == (None if deadline_ms is None else pytest.approx(deadline_ms - 31_000.0))


# --- failover and escalation ----------------------------------------------------------------------------------


class Timed(FakeEngine):
    """A fake engine whose call takes `took_s` on the gateway's clock; `plan.fail_first`: the first call to any of
    them fails before its first byte (whichever endpoint the decision ranked first)."""

    def __init__(self, name: str, clock: Clock, plan: dict[str, Any]) -> None:
        super().__init__(name, words=(name, " says", " hi"))
        self.clock, self.plan = clock, plan

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.clock.now += self.plan["took_s"].get(self.name, 0.0)
        if self.plan.pop("fail_first", False):
            self.received.append({})
            raise EngineUnavailable(f"{self.name}: no first byte")
        if (slow_s := self.plan.pop("slow_first_s", None)) is not None:  # the first call's first byte is late
            self.first_byte_delay_s = slow_s
        async with super().open(path, body) as upstream:
            yield upstream


@asynccontextmanager
async def timed_grid(spec: Any, plan: dict[str, Any]) -> AsyncIterator[tuple[Gateway, dict[str, Timed],
                                                                            httpx.AsyncClient]]:
    clock = Clock()
    fakes = {e.id: Timed(e.id, clock, plan) for e in spec.endpoints}
    gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=_no_sleep, clock=clock)
    await gw.scraper.scrape_once()
    async with started(gw) as c:
        yield gw, fakes, c


@pytest.mark.parametrize("hedge", ["off", "on"])
async def test_a_failover_gets_what_the_failed_attempt_left(tmp_path: Path, hedge: str) -> None:
    """The first candidate fails after 1.99 s of a 2 s deadline: no spare is predicted to answer in the 10 ms left,
    so none is asked (the deadline's 503, the attempt that failed named); failing after 10 ms, the next one
    answers. The spare was sent whatever was left (it answered 4 s after arrival where it was predicted 2 s)."""
    headers = {"x-aigrid-client-location": "Tokyo", "x-aigrid-deadline-ms": "2000", "x-aigrid-hedge": hedge}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    for took_s, in_time in ((0.01, True), (1.99, False)):
        plan: dict[str, Any] = {"fail_first": True, "took_s": {}}
        async with timed_grid(spec_in(tmp_path / str(took_s)), plan) as (gw, fakes, client):
            for fake in fakes.values():
                fake.plan["took_s"][fake.name] = took_s
            r = await client.post("/v1/chat/completions", headers=headers, json=body)
            record = gw.decisions.recent(1)[0]
            first, second = record.decision.ranked[:2]
            assert second.prediction.ttft_ms < DEADLINE_MS - 10.0  # in time as decided; past the 10 ms left
            assert fakes[first.endpoint_id].received == [{}]
            if in_time:
                assert r.status_code == 200, r.text
                assert r.headers["x-aigrid-endpoint"] == second.endpoint_id
                continue
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "deadline_unmeetable" and error["param"] == "x-aigrid-deadline-ms", error
            assert first.endpoint_id in error["message"] and second.endpoint_id in error["message"]
            assert r.headers["x-should-retry"] == "false" and r.headers["x-aigrid-decision"] == record.decision.request_id
            assert sum(len(f.received) for f in fakes.values()) == 1  # no spare asked
            assert record.status == "deadline_unmeetable" and [a["endpoint"] for a in record.attempts] == [
                first.endpoint_id]
            row = (await audit_rows(gw))[-1]
            assert row["outcome"] == "error:deadline_unmeetable"


async def test_a_hedge_starts_only_on_a_candidate_in_time(tmp_path: Path) -> None:
    """The first candidate's first byte is late (hedged after 1 x its predicted TTFT): with 1.99 s of the 2 s
    deadline spent there, no spare is predicted to answer in the 10 ms left, so no hedge starts (none counted) and
    the first answers; with 10 ms spent, the hedge starts and wins. The hedge was started whatever was left."""
    headers = {"x-aigrid-client-location": "Tokyo", "x-aigrid-deadline-ms": "2000", "x-aigrid-hedge": "on"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    for took_s, hedged in ((0.01, True), (1.99, False)):
        spec = spec_in(tmp_path / str(took_s))
        spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={
            "hedge": spec.gateway.hedge.model_copy(update={"factor": 1.0, "min_ms": 0.0})})})
        # past any TTFT predicted within the deadline (the hedge starts at 1 x it, 0.11 s here): cut once the hedge
        # answers where one starts (it was 2.5 s for both); where none does, the test waits for it
        slow_s = 60.0 if hedged else 1.0
        plan: dict[str, Any] = {"slow_first_s": slow_s, "took_s": {}}
        async with timed_grid(spec, plan) as (gw, fakes, client):
            for fake in fakes.values():
                fake.plan["took_s"][fake.name] = took_s
            before = gw.metrics.hedges._value.get()
            r = await client.post("/v1/chat/completions", headers=headers, json=body)
            assert r.status_code == 200, r.text
            record = gw.decisions.recent(1)[0]
            first, second = record.decision.ranked[:2]
            assert first.prediction.ttft_ms < 1000.0 and second.prediction.ttft_ms < DEADLINE_MS - 10.0
            assert [a.get("hedge", False) for a in record.attempts] == ([False, True] if hedged else [False])
            assert r.headers["x-aigrid-endpoint"] == (second if hedged else first).endpoint_id
            assert gw.metrics.hedges._value.get() - before == (1 if hedged else 0)


RIGHT_SIZE = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"


async def test_an_escalation_gets_what_the_first_answer_left(tmp_path: Path) -> None:
    """The small model's unsure answer took 4.99 s of a 5 s deadline: no larger model is predicted to answer in the
    10 ms left, so the first answer stands (it was asked again of the larger model whatever was left); after 10 ms
    it is escalated as before."""
    spec = load_spec(RIGHT_SIZE)
    tenants = dict(spec.tenants)
    tenants["auto"] = TenantSpec.model_validate({"policy": "balanced", "right_size": {
        "max_quality_drop": 2.0, "escalate": {"below_confidence": 0.5, "within_ms": 60_000}}})
    body = {"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    headers = {"x-aigrid-tenant": "auto", "x-aigrid-client-location": "Frankfurt", "x-aigrid-deadline-ms": "5000"}
    for took_s, escalated in ((0.01, True), (4.99, False)):
        sec = spec.security.model_copy(update={"keys_file": str(tmp_path / f"{took_s}.json"), "audit": AuditSpec(
            path=str(tmp_path / f"{took_s}.db"), signing_key=str(tmp_path / f"{took_s}.pem"))})
        grid = spec.model_copy(update={"tenants": tenants, "security": sec})
        async with timed_grid(grid, {"took_s": {"fra-small": took_s}}) as (gw, fakes, client):
            fakes["fra-small"].logprob = math.log(0.3)
            r = await client.post("/v1/chat/completions", headers=headers, json=body)
            assert r.status_code == 200, r.text
            record = gw.decisions.recent(1)[0]
            larger = [c for c in record.decision.ranked if c.model == "large-70b"]
            assert larger and all(c.prediction.ttft_ms > 10.0 for c in larger)
            assert record.decision.ranked[0].endpoint_id == "fra-small"
            assert (r.headers["x-aigrid-model"] == "large-70b") is escalated
            assert sum(len(fakes[c.endpoint_id].received) for c in larger) == (1 if escalated else 0)
