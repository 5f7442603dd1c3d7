"""A client that hangs up BEFORE its answer starts, on a real socket (uvicorn): while its request waits in the
admission queue, while the firewall reads a long text on its worker thread, while the engine prefills (a
stream's first byte), or while the engine writes a whole answer (`stream: false`). In every phase, on every
front door: the engine request is cancelled (the engine sees its request closed, or never gets it), nothing is
left in flight (engine slots, the admission ledger and queue), the quota reservation is released (no engine
answered: nothing charged), exactly one audit record says `client_closed` (the mid-stream outcome), the GenAI
metrics count it with that error type, and the access log line says so.

`walk()` measures one phase x route; `python -m tests.gateway.test_hangup` prints the whole table (the
findings in docs/reliability.md, "A client that hangs up before its answer starts")."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from aigrid.agents.tool import ToolContext
from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.engines.protocol import EngineStats, UpstreamResponse
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.background import BACKGROUND_ROUTE
from aigrid.gateway.guard import Guard
from aigrid.gateway.proxy import Held, Opened
from aigrid.gateway.relay_response import CLIENT_GONE
from aigrid.gateway.request_info import turn_prompt_tokens
from aigrid.gateway.tracing import OPERATIONS
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.security.firewall.pipeline import Screened
from aigrid.security.firewall.texts import ModelText, Source
from aigrid.security.quota_backend import Consumed, Counter, MemoryQuotaBackend
from aigrid.spec.load import load_spec, parse_spec
from aigrid.spec.models import AdmissionSpec, GridSpec, PrioritySpec, QuotaSpec, TenantSpec
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import DEMO, _no_sleep, audit_rows, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.serving import serving as on_socket

TENANT = "metered"
HEADERS = {"x-aigrid-tenant": TENANT, "x-aigrid-client-location": "Tokyo"}
SAY = "Say hello"
LONG = "Tell me about rivers. " * 120  # 2,640 characters: read on the firewall's worker thread
ENGINE_DELAY_S = 60.0
"""How long the engines take to their first byte (a long prefill; a whole answer: its whole decode): far past
anything a test waits for, so a loaded machine cannot let the answer come before the hang-up is seen (at 1.5 s a
hedged request had 0.7 s between its hedge and the first engine's answer); cancelled at the hang-up, it costs no
time."""


class WatchedEngine(FakeEngine):
    """A FAKE engine that says when the gateway closed a request it had not finished answering."""

    def __init__(self, name: str) -> None:
        super().__init__(name, words=tuple(f" w{i}" for i in range(20)))
        self.word_delay_s = 0.05  # a streamed answer takes a second: a client gone is seen while it streams
        self.completed = 0
        self.aborted = 0
        self.released_at: float | None = None

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        async with super().open(path, body) as upstream:
            started = done = False

            async def read() -> AsyncIterator[bytes]:
                nonlocal started, done
                async for chunk in upstream.body:
                    started = True
                    yield chunk
                done = True

            try:
                yield UpstreamResponse(upstream.status, upstream.headers, read())
            finally:
                try:
                    await self.releasing(started)
                finally:  # a close cut short by a cancel is a release too
                    self.released_at = time.monotonic()
                    if done:
                        self.completed += 1
                    else:
                        self.aborted += 1

    async def releasing(self, started: bool) -> None:
        """A request being closed, its answer read (`started`) or not: nothing to do here (_SlowToClose)."""


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def with_text(self, text: str) -> dict[str, Any]:
        """The body with `text` as its user's words."""
        body = orjson.loads(orjson.dumps(self.body))
        if "messages" in body:
            body["messages"][0]["content"] = text
        elif "prompt" in body:
            body["prompt"] = text
        else:
            body["input"] = text
        return body


def _routes() -> list[Route]:
    chat = {"model": "smollm2-135m", "messages": [{"role": "user", "content": SAY}], "max_tokens": 100}
    completion = {"model": "smollm2-135m", "prompt": SAY, "max_tokens": 100}
    message = {"model": "smollm2-135m", "messages": [{"role": "user", "content": SAY}], "max_tokens": 100}
    response = {"model": "smollm2-135m", "input": SAY, "max_output_tokens": 100}
    out = []
    for name, path, body in (("chat", "/v1/chat/completions", chat), ("completions", "/v1/completions", completion),
                             ("messages", "/v1/messages", message), ("responses", "/v1/responses", response)):
        out.append(Route(f"{name}-stream", path, {**body, "stream": True}))
        out.append(Route(f"{name}-whole", path, {**body, "stream": False}))
    return out


ROUTES = _routes()
PHASES = ("queue", "screen", "engine")
"""Where the client hangs up: waiting in the admission queue, waiting for the firewall's worker thread, waiting
for the engine (a stream's first byte after a long prefill; a whole answer's only byte)."""


def prompt_estimate(gw: Gateway) -> int:
    """The gateway's estimate of the prompt tokens of the requests it decided: what a request whose client left
    while an engine held it is charged (Exchange.used_tokens)."""
    return sum(r.prompt_tokens for r in gw.decisions.recent(100))


@dataclass
class Finding:
    route: str
    phase: str
    engine_asked: int = 0
    engine_completed: int = 0
    engine_aborted: int = 0
    release_s: float | None = None
    """From the hang-up to the engine's request closed (or finished)."""
    closed_s: float | None = None
    """From the hang-up to the exchange closed (its access line written)."""
    inflight: int = 0
    queued: int = 0
    tokens: int = 0
    prompt_estimate: int = 0
    """The gateway's estimate of the request's prompt tokens (its decision record's)."""
    outcomes: list[str] = field(default_factory=list)
    access: list[str] = field(default_factory=list)
    client_closed_metric: float = 0.0
    """gen_ai_client_operation_duration_seconds_count{error_type="client_closed"}"""

    def row(self) -> str:
        rel = "-" if self.release_s is None else f"{self.release_s:.2f}s"
        closed = "never" if self.closed_s is None else f"{self.closed_s:.2f}s"
        return (f"| {self.phase} | {self.route} | asked {self.engine_asked}, finished {self.engine_completed}, "
                f"closed early {self.engine_aborted} (after {rel}) | {closed} | {self.inflight} / {self.queued} | "
                f"{self.tokens} | {', '.join(self.outcomes) or 'none'} | {self.client_closed_metric:g} | "
                f"{', '.join(self.access) or 'none'} |")


class _Access(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record))


def _gateway(tmp: Path, engines: dict[str, WatchedEngine]) -> Gateway:
    spec = spec_in(tmp)
    tenants = {**spec.tenants, TENANT: TenantSpec(priority=PrioritySpec(default="interactive"),
                                                  quotas=QuotaSpec(requests_per_min=1000, tokens_per_min=1_000_000))}
    gateway = spec.gateway.model_copy(update={"admission": AdmissionSpec(
        max_wait_s={"interactive": 4.0, "standard": 4.0, "batch": 4.0}, poll_interval_s=0.02)})
    return build_gateway(spec.model_copy(update={"tenants": tenants, "gateway": gateway}), engines,
                         rng=random.Random(3), sleep=_no_sleep)


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether `check()` came true within `timeout` (polled: at once on an idle machine, 30 s for a loaded one)."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.01)
    return True


class _Gate:
    """Holds the firewall's worker thread inside its read of a long text until opened."""

    def __init__(self, gw: Gateway) -> None:
        self.reading = threading.Event()
        self.open = threading.Event()
        firewall = gw.guard.firewall
        check = firewall.check_texts

        def slow(tenant: str, texts: Sequence[ModelText]) -> Screened:
            if threading.current_thread() is not threading.main_thread():  # the worker thread: a long read
                self.reading.set()
                self.open.wait(5)
            return check(tenant, texts)

        firewall.check_texts = slow  # type: ignore[method-assign]


async def _request(port: int, route: Route, body: dict[str, Any]) -> asyncio.StreamWriter:
    """Send the request on a socket of its own; the caller closes it (the hang-up)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    data = orjson.dumps(body)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**HEADERS, "host": f"127.0.0.1:{port}", "content-type": "application/json",
                                                "content-length": str(len(data))}.items())
    writer.write(f"POST {route.path} HTTP/1.1\r\n{head}\r\n".encode() + data)
    await writer.drain()
    return writer


@asynccontextmanager
async def serving(gw: Gateway) -> AsyncIterator[tuple[int, _Access]]:
    """The gateway on a real socket (uvicorn, lifespan included): its port, and its access log lines."""
    access = _Access()
    logger = logging.getLogger("aigrid.access")
    level = logger.level
    logger.addHandler(access)
    logger.setLevel(logging.INFO)
    try:
        async with on_socket(build_app(gw)) as s:
            gw.guard.quotas.clock = lambda: 1_800_000_030.0  # one quota window for the whole test
            yield s.port, access
    finally:
        logger.removeHandler(access)
        logger.setLevel(level)


async def tokens(gw: Gateway) -> int:
    return await gw.guard.quotas.tokens_this_minute(gw.guard.principal(None, TENANT))


def inflight(gw: Gateway) -> int:
    """Engine slots and admission places still held, and requests still queued."""
    return sum(gw.store.inflight(e.id) for e in gw.store.snapshot().endpoints) + int(gw.admission.inflight(TENANT)) \
        + len(gw.admission.queue)


async def walk(tmp: Path, route: Route, phase: str) -> Finding:
    """Serve the gateway on a real socket; send `route`'s request; hang up in `phase`; measure."""
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    gw = _gateway(tmp, engines)
    gate = _Gate(gw)
    found = Finding(route.name, phase)
    try:
        async with serving(gw) as (port, access):
            await _walk(gw, engines, gate, port, access, route, phase, found)
    finally:
        gate.open.set()
    return found


async def _walk(gw: Gateway, engines: dict[str, WatchedEngine], gate: _Gate, port: int, access: _Access,
                route: Route, phase: str, found: Finding) -> None:
    body = route.body
    if phase == "queue":  # every engine reports a full queue: the request waits for capacity
        for f in engines.values():
            f.stats_value = EngineStats(running=4, waiting=64)
        await gw.scraper.scrape_once()
    elif phase == "screen":
        body = route.with_text(LONG)
    else:
        for f in engines.values():
            f.first_byte_delay_s = ENGINE_DELAY_S
    writer = await _request(port, route, body)
    ready = {"queue": lambda: len(gw.admission.queue) == 1, "screen": gate.reading.is_set,
             "engine": lambda: any(f.received for f in engines.values())}[phase]
    assert await _until(ready), f"the request never reached its {phase} phase"
    writer.close()  # the hang-up
    hung_up = time.monotonic()
    await asyncio.sleep(0.2)
    # what would have come next: capacity frees, the firewall's read ends (the engine's answer comes anyway)
    if phase == "queue":
        for f in engines.values():
            f.stats_value = EngineStats(running=0, waiting=0)
        await gw.scraper.scrape_once()
    gate.open.set()
    await _until(lambda: bool(access.lines), ENGINE_DELAY_S + 3.0)
    await asyncio.sleep(0.05)  # anything late
    if access.lines:
        found.closed_s = access.lines[0][0] - hung_up
    found.access = [str(getattr(r, "aigrid_fields", {}).get("outcome")) for _, r in access.lines]
    found.engine_asked = sum(len(f.received) for f in engines.values())
    found.engine_completed = sum(f.completed for f in engines.values())
    found.engine_aborted = sum(f.aborted for f in engines.values())
    released = [f.released_at for f in engines.values() if f.released_at is not None]
    found.release_s = max(released) - hung_up if released else None
    found.inflight = sum(gw.store.inflight(e.id) for e in gw.store.snapshot().endpoints) \
        + int(gw.admission.inflight(TENANT))
    found.queued = len(gw.admission.queue)
    found.tokens = await tokens(gw)
    found.prompt_estimate = prompt_estimate(gw)
    found.outcomes = [r["outcome"] for r in await audit_rows(gw)]
    found.client_closed_metric = gw.metrics.registry.get_sample_value(
        "gen_ai_client_operation_duration_seconds_count",
        {"gen_ai_operation_name": OPERATIONS[route.path],
         "gen_ai_request_model": "smollm2-135m", "error_type": "client_closed"}) or 0.0


CASES = [pytest.param(r, p, id=f"{p}-{r.name}") for p in PHASES for r in ROUTES]


@pytest.mark.parametrize(("route", "phase"), CASES)
async def test_a_client_that_hangs_up_before_its_answer_cancels_its_request(tmp_path: Path, route: Route,
                                                                            phase: str) -> None:
    found = await walk(tmp_path, route, phase)
    assert found.outcomes == ["client_closed"], found
    assert found.access == ["client_closed"], found
    assert found.closed_s is not None and found.closed_s < 5.0, found  # at the hang-up, not at the engine's end
    assert found.engine_completed == 0, found
    if phase == "engine":  # the engine saw its request closed at the hang-up, long before its answer was due
        assert found.engine_asked == 1 and found.engine_aborted == 1, found
        assert found.release_s is not None and found.release_s < 5.0, found
    else:  # it never reached an engine
        assert found.engine_asked == 0, found
    assert found.inflight == 0 and found.queued == 0, found
    if phase == "engine":  # its prompt was handed to the engine: that much is charged, not the reservation
        assert 0 < found.tokens == found.prompt_estimate, found
    else:  # the reservation released: no engine had it
        assert found.tokens == 0, found
    assert found.client_closed_metric == 1.0, found


class _SlowQuota(MemoryQuotaBackend):
    """A quota store whose reply comes late (Redis, the workers' hub): the reservation is made at once, its
    answer held until `reply` is set."""

    pauses = True  # awaits mid-call, as Redis and the hub do: the guard shields its charges

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.reply = asyncio.Event()

    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        consumed = await super().consume(counters, op)
        self.asked.set()
        await self.reply.wait()
        return consumed


async def test_a_hang_up_while_the_quota_store_answers_waits_for_its_reservation(tmp_path: Path) -> None:
    """Cut mid-reply, a reservation made on Redis or the hub would stay charged (its reply lost with it): the
    watcher is held for that step, and the request stops right after it, its reservation then released."""
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    slow = _SlowQuota()
    spec = _gateway(tmp_path, engines).spec
    gw = build_gateway(spec, engines, rng=random.Random(3), sleep=_no_sleep, guard=Guard(spec, quota_backend=slow))
    route = ROUTES[1]  # chat, whole
    async with serving(gw) as (port, access):
        writer = await _request(port, route, route.body)
        await asyncio.wait_for(slow.asked.wait(), 30)
        assert await tokens(gw) > 0  # reserved in the store, its reply not yet read
        writer.close()
        await asyncio.sleep(0.2)
        assert not access.lines  # the reservation's reply is awaited
        slow.reply.set()
        assert await _until(lambda: bool(access.lines), 30)
        assert [r["outcome"] for r in await audit_rows(gw)] == ["client_closed"]
        assert await tokens(gw) == 0 and inflight(gw) == 0
        assert sum(len(f.received) for f in engines.values()) == 0


class _SlowScripted(ScriptedEngine):
    """A SCRIPTED engine whose every model turn takes `delay_s`, but turn number `held` (from 1), which takes
    ENGINE_DELAY_S (a client hangs up during it); `turns` counts the turns begun, `begun` holds their bodies,
    `cancelled` counts the turns closed before their answer."""

    def __init__(self, replies: list[dict[str, Any]], delay_s: float, held: int | None = None) -> None:
        super().__init__(replies)
        self.delay_s = delay_s
        self.held = held
        self.turns = 0
        self.cancelled = 0
        self.begun: list[dict[str, Any]] = []

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.turns += 1
        self.begun.append(orjson.loads(body))
        try:
            await asyncio.sleep(ENGINE_DELAY_S if self.turns == self.held else self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        async with super().open(path, body) as upstream:
            yield upstream


async def test_a_server_side_tool_loop_is_not_cut_short_by_a_hang_up(tmp_path: Path) -> None:
    """Server-side tools act (SQL, MCP, the web): a loop that has started runs to its end, charged what its
    model turns used; its record says the client left."""
    engine = _SlowScripted([call("calculator", expression="1+1"), {"content": "2"}], delay_s=0.3)
    spec = _gateway(tmp_path, {}).spec
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "1+1?"}], "max_tokens": 50,
            "tools": [{"type": "function", "function": {"name": "calculator", "description": "math", "parameters": {
                "type": "object", "properties": {"expression": {"type": "string"}}}}}]}
    async with serving(gw) as (port, access):
        writer = await _request(port, Route("tools", "/v1/chat/completions", body), body)
        assert await _until(lambda: engine.turns == 1)
        writer.close()  # while the model's first turn is under way
        assert await _until(lambda: bool(access.lines), 30)
        assert engine.turns == 2 and len(engine.received) == 2  # the tool ran and the model answered
        assert [r["outcome"] for r in await audit_rows(gw)] == ["client_closed"]
        assert await tokens(gw) == 30 and inflight(gw) == 0  # both model turns' usage (2 x 15), once
        # no client received its answer: the access line's status is null, as for any client gone before its
        # answer (docs/observability.md); until review RV4 it said 200, the status of the answer sent to nobody
        assert [(r.aigrid_fields["outcome"], r.aigrid_fields["status"]) for _, r in access.lines] == [  # type: ignore[attr-defined]
            ("client_closed", None)]


class _SlowTool:
    """A server-side tool that takes `run_s` (a query, an MCP server's tool): counts its runs begun and ended."""

    name = "slow_lookup"
    description = "look something up"
    parameters = {"type": "object", "properties": {"q": {"type": "string"}}}
    source = Source.TOOL_RESULT

    def __init__(self, run_s: float) -> None:
        self.run_s = run_s
        self.started = 0
        self.ended = 0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> str:
        self.started += 1
        await asyncio.sleep(self.run_s)
        self.ended += 1
        return "found it"


TOOL_RUN_S = 3.0
"""How long the slow tool runs: a hang-up while it runs is seen within half of it, not when it ends."""
TOOL_PHASES = ("first-turn", "later-turn", "tool")
"""Where a streamed tool loop's client hangs up: during its first model turn (before the first byte), during its
second (after the calculator ran and the answer started), while the slow tool runs (after the first byte)."""


@pytest.mark.parametrize("phase", TOOL_PHASES)
async def test_a_streamed_tool_loop_stops_when_its_client_hangs_up(tmp_path: Path, phase: str) -> None:
    """A streamed loop's client is watched through the whole loop, before its first byte and after it: a hang-up
    stops it at once (the model turn under way closed, a tool under way left to finish on its own with its result
    discarded, nothing after them started), charged its finished model turns (15 tokens each), one
    `client_closed` record, nothing in flight (before: it was noticed when the next byte was written, after the
    loop's next steps, or not before the whole loop had run to its end; charged the reservation)."""
    # the turn the client hangs up in waits ENGINE_DELAY_S (it was 0.3 s like the others: the hang-up had to be
    # seen within it, or the turn finished and the test failed)
    engine = _SlowScripted([call("calculator", expression="1+1"), call("slow_lookup", q="x"), answer("2")],
                           delay_s=0.3, held={"first-turn": 1, "later-turn": 2, "tool": None}[phase])
    tool = _SlowTool(run_s=TOOL_RUN_S)
    spec = _gateway(tmp_path, {}).spec
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    gw.agents.tools.add(tool)
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "1+1?"}], "max_tokens": 50,
            "stream": True, "tools": [{"type": "function", "function": {"name": "calculator"}},
                                      {"type": "function", "function": {"name": "slow_lookup"}}]}
    ready = {"first-turn": lambda: engine.turns == 1, "later-turn": lambda: engine.turns == 2,
             "tool": lambda: tool.started == 1}[phase]
    async with serving(gw) as (port, access):
        writer = await _request(port, Route("tools", "/v1/chat/completions", body), body)
        assert await _until(ready)
        writer.close()
        hung_up = time.monotonic()
        assert await _until(lambda: bool(access.lines), 30)
        # at once, not at the next byte (after the tool's 3 s), with room for a loaded machine
        assert access.lines[0][0] - hung_up < TOOL_RUN_S * 0.8, access.lines[0][0] - hung_up
        # the turn under way closed at once (a held turn is cancelled, not ended); the tool under way ending (its
        # 3 s); then anything next, the loop's next turn or tool, would start at once: 0.3 s for it to show
        assert await _until(lambda: engine.cancelled == (phase != "tool") and tool.ended == tool.started, 30)
        await asyncio.sleep(0.3)
        begun, finished = {"first-turn": (1, 0), "later-turn": (2, 1), "tool": (2, 2)}[phase]
        assert (engine.turns, len(engine.received)) == (begun, finished)  # the turn under way closed, no next one
        assert engine.cancelled == (phase != "tool")
        assert tool.started == (1 if phase == "tool" else 0)
        assert tool.ended == tool.started  # a tool under way was not cut off: it finished, its result unused
        rows = await audit_rows(gw)
        assert [r["outcome"] for r in rows] == ["client_closed"]
        # the finished turns, once, and the prompt of a later turn its engine held; before any, the prompt the
        # first turn's engine held (until 2026-12-04 a later turn's prompt was not charged)
        held = turn_prompt_tokens(engine.begun[-1]) if phase == "later-turn" else 0
        assert await tokens(gw) == (15 * finished + held or prompt_estimate(gw)) > 0 and inflight(gw) == 0
        assert rows[0]["extra"].get("charged_tokens") == {  # said when it is not (only) the engines' count
            "first-turn": prompt_estimate(gw), "later-turn": 15 + held, "tool": None}[phase]
        record = gw.decisions.get(rows[0]["request_id"])
        assert record is not None and record.attempts[-1]["ok"] is (phase != "first-turn"), record.attempts


async def test_a_background_response_outlives_a_client_that_hangs_up(tmp_path: Path) -> None:
    """`background: true` runs are meant to outlive their client (docs/responses-api.md): a hang-up right after
    the create is sent stops neither the create nor the run."""
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    for f in engines.values():
        f.first_byte_delay_s = 0.3
    gw = _gateway(tmp_path, engines)
    body = {"model": "smollm2-135m", "input": SAY, "max_output_tokens": 100, "background": True}
    async with serving(gw) as (port, access):
        writer = await _request(port, Route("bg", "/v1/responses", body), body)
        writer.close()  # before reading anything
        assert await _until(lambda: len(access.lines) == 2, 30)
        assert sum(f.completed for f in engines.values()) == 1 and sum(f.aborted for f in engines.values()) == 0
        rows = await audit_rows(gw)
        run = [r for r in rows if r["extra"]["route"] == BACKGROUND_ROUTE]
        assert len(rows) == 2 and [r["outcome"] for r in run] == ["ok"], [(r["outcome"], r["extra"]) for r in rows]
        assert await tokens(gw) == 25 and inflight(gw) == 0  # the run's usage, once


async def test_a_client_gone_while_its_body_is_read_is_client_closed_not_an_internal_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    gw = _gateway(tmp_path, engines)
    async with serving(gw) as (port, access):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                     b"x-aigrid-tenant: metered\r\ncontent-length: 1000\r\n\r\n{\"model\": ")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()  # 990 bytes short
        assert await _until(lambda: bool(access.lines), 30)
        assert [r["outcome"] for r in await audit_rows(gw)] == ["client_closed"]
    assert "internal error" not in caplog.text


async def test_a_shutdown_before_the_answer_is_still_cancelled_not_client_closed(tmp_path: Path) -> None:
    """The watcher tells its own cancel from a shutdown's: a request cancelled by the server (its client still
    there) is recorded `cancelled` and the cancel goes on."""
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    for f in engines.values():
        f.first_byte_delay_s = 5.0
    gw = _gateway(tmp_path, engines)
    await gw.guard.start()
    try:
        body = orjson.dumps(ROUTES[1].body)
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            pass

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
                 "root_path": "", "scheme": "http", "server": ("gw", 80), "client": ("127.0.0.1", 5000),
                 "headers": [(k.encode(), v.encode()) for k, v in HEADERS.items()]}
        task = asyncio.create_task(build_app(gw)(scope, receive, send))
        assert await _until(lambda: any(f.received for f in engines.values()))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [r["outcome"] for r in await audit_rows(gw)] == ["cancelled"]
        assert await tokens(gw) == 0 and inflight(gw) == 0
        assert sum(f.aborted for f in engines.values()) == 1
    finally:
        await gw.guard.stop()


HEDGED_WHOLE = {**ROUTES[1].body, "max_tokens": 2}
"""A whole chat answer short enough to be hedged within ENGINE_DELAY_S: a whole answer is hedged after 2 x (TTFT +
its output limit's decode time) + 150 ms (proxy.HedgePolicy)."""


async def _send_hedged(port: int, body: dict[str, Any]) -> asyncio.StreamWriter:
    """A chat request with `x-aigrid-hedge: on` on a socket of its own, its answer left unread."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    data = orjson.dumps(body)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**HEADERS, "x-aigrid-hedge": "on", "host": f"127.0.0.1:{port}",
                                                "content-length": str(len(data))}.items())
    writer.write(f"POST /v1/chat/completions HTTP/1.1\r\n{head}\r\n".encode() + data)
    return writer


async def test_a_hang_up_while_hedged_closes_both_attempts(tmp_path: Path) -> None:
    """A hedged request waits on two engines: both requests are closed, each counted as the client's, and
    neither is taken for the hedge's loser."""
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    for f in engines.values():
        f.first_byte_delay_s = ENGINE_DELAY_S
    gw = _gateway(tmp_path, engines)
    body = HEDGED_WHOLE
    async with serving(gw) as (port, access):
        writer = await _send_hedged(port, body)
        assert await _until(lambda: sum(len(f.received) for f in engines.values()) == 2)  # the hedge started
        writer.close()
        assert await _until(lambda: bool(access.lines), 30)
        assert sum(f.aborted for f in engines.values()) == 2 and sum(f.completed for f in engines.values()) == 0
        rows = await audit_rows(gw)
        assert [r["outcome"] for r in rows] == ["client_closed"]
        assert await tokens(gw) == prompt_estimate(gw) > 0 and inflight(gw) == 0  # the prompt, once
        closed = sum(gw.metrics.registry.get_sample_value(
            "aigrid_requests_total", {"site": e.site, "endpoint": e.id, "outcome": "client_closed"}) or 0.0
            for e in gw.spec.endpoints)
        assert closed == 2.0
        record = gw.decisions.get(rows[0]["request_id"])
        assert record is not None
        assert [a["error"] for a in record.attempts] == ["cancelled: the client closed its connection"] * 2


def emulated_grid(tmp: Path, port: int) -> GridSpec:
    """One endpoint of model `m`: the engine emulator on `port` (vLLM's API), TENANT's quotas, the audit log."""
    return parse_spec({
        "name": "hangup", "gateway": {"network": "none", "scrape_interval_s": 60},
        "models": {"m": {"family": "f", "params_b": 1.0}},
        "sites": {"par": {"name": "Paris", "lat": 48.86, "lon": 2.35, "jurisdiction": "EU"}},
        "endpoints": [{"id": "par-m", "site": "par", "model": "m", "engine": "vllm", "slots": 2,
                       "url": f"http://127.0.0.1:{port}", "prefill_tps": 20000, "decode_tps": 50}],
        "tenants": {TENANT: {"quotas": {"requests_per_min": 1000, "tokens_per_min": 1_000_000}}},
        "cities": {"Tokyo": [35.68, 139.69]},
        "security": {"keys_file": str(tmp / "keys.json"),
                     "audit": {"path": str(tmp / "audit.db"), "signing_key": str(tmp / "audit.pem")}},
    }, "hangup")


@pytest.mark.parametrize("stream", [True, False], ids=["prefill", "whole"])
async def test_an_emulated_engine_sees_its_request_closed_at_the_hang_up(tmp_path: Path, stream: bool) -> None:
    """The whole way to an engine on a socket of its own (the ENGINE EMULATOR behind the gateway's
    Http1Transport): a stream's long prefill, or a whole answer's decode, is cancelled at the engine when the
    client hangs up (the emulator counts a cancel and frees its slot), not finished."""
    config = EmulatorConfig(model="m", slots=2, prefill_base_ms=3000.0 if stream else 1.0, decode_base_ms=20.0)
    server, emulator = await serve(config)
    up = upstream()
    try:
        grid = emulated_grid(tmp_path, bound_port(server))
        gw = build_gateway(grid, build_engines(grid, {}, up), rng=random.Random(0))
        body = {"model": "m", "prompt": "x" * 40, "max_tokens": 200, "ignore_eos": True,
                "stream": stream}  # 200 x 20 ms: 4 s whole (ignore_eos: the emulator's answers end at 128 otherwise)
        engine = emulator.engine
        async with serving(gw) as (port, access):
            writer = await _request(port, Route("emulated", "/v1/completions", body), body)
            assert await _until(lambda: engine.running + engine.waiting == 1)
            await asyncio.sleep(0.2)
            writer.close()
            # polled (30 s for a loaded machine); "at the hang-up" is what the engine made when it was closed: no
            # token yet of a stream (its prefill takes 3 s; one noticed at the first token has made one), not
            # the whole answer (4 s) of the other
            assert await _until(lambda: bool(access.lines), 30)
            assert await _until(lambda: engine.cancelled_total == 1, 30)
            assert engine.generation_tokens_total < (1 if stream else 200), engine.generation_tokens_total
            assert (engine.finished_total, engine.running, engine.waiting) == (0, 0, 0)
            assert [r["outcome"] for r in await audit_rows(gw)] == ["client_closed"]
            assert await tokens(gw) == prompt_estimate(gw) > 0 and inflight(gw) == 0  # the prompt it was handed
    finally:
        await up.aclose()
        server.close()


async def cost(n: int = 20_000) -> tuple[float, float]:  # pragma: no cover - docs/reliability.md, "Cost"
    """CPU microseconds per request of a whole answer's request without and with a Hangup: uvicorn's `receive`
    shape (the body at once, then a wait on an asyncio.Event), the watcher started after the body and cancelled
    when the exchange closes; 50 requests at a time."""
    from aigrid.gateway.relay_response import Hangup

    def receiver() -> Callable[[], Any]:
        event, calls = asyncio.Event(), [0]

        async def receive() -> dict[str, Any]:
            calls[0] += 1
            if calls[0] == 1:
                return {"type": "http.request", "body": b"{}", "more_body": False}
            await event.wait()
            return {"type": "http.disconnect"}

        return receive

    async def one(watch: bool) -> None:
        receive = receiver()
        if not watch:
            await receive()
            await asyncio.sleep(0)  # the request's work
            return
        hangup = Hangup(receive, asyncio.current_task())
        await hangup.receive()
        await asyncio.sleep(0)
        hangup.armed = False
        hangup.close()

    async def per_request(watch: bool) -> float:
        t0 = time.process_time()
        for _ in range(n // 50):
            await asyncio.gather(*(one(watch) for _ in range(50)))
        await asyncio.sleep(0)
        return (time.process_time() - t0) / n * 1e6

    await per_request(False)
    await per_request(True)
    return await per_request(False), await per_request(True)


def main() -> None:  # pragma: no cover - the table of docs/reliability.md (`--cost`: the watcher's CPU)
    import sys
    import tempfile

    if "--cost" in sys.argv:
        for r in range(5):
            plain, watched = asyncio.run(cost())
            print(f"round {r + 1}: {plain:.1f} us plain, {watched:.1f} us with a Hangup: {watched - plain:+.1f} us "
                  "per request")
        return

    async def run() -> None:

        print("| phase | route | engine | exchange closed after the hang-up | in flight / queued | tokens charged "
              "| audit | metric client_closed | access log |")
        for phase in PHASES:
            for route in ROUTES:
                with tempfile.TemporaryDirectory() as tmp:
                    print((await walk(Path(tmp), route, phase)).row(), flush=True)

    asyncio.run(run())


if __name__ == "__main__":  # pragma: no cover
    main()


async def test_holds_nest_and_the_outer_one_rearms() -> None:
    """A step that must not be cut inside another (a future hold around the whole route, the quota step in
    it): the inner resume() does not re-arm the watcher while the outer hold stands."""
    from aigrid.gateway.relay_response import Hangup

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    hangup = Hangup(receive, None)
    hangup.hold()
    hangup.hold()
    hangup.resume()
    assert hangup.armed is False
    hangup.resume()
    assert hangup.armed is True


class _StoreGone(MemoryQuotaBackend):
    pauses = True

    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        raise ConnectionError("the quota store is gone")


@pytest.mark.parametrize("refusal", ["429", "503"])
async def test_a_refused_reservation_rearms_the_hangup_watcher(tmp_path: Path, refusal: str) -> None:
    """Guard.admit held the watcher for the quota step and re-armed it only when the reservation was made: a 429 or
    a 503 left it held (a hold nested in it never re-armed it either), and a client gone after it was not seen."""
    from aigrid.errors import QuotaUnavailable, RateLimited
    from aigrid.gateway.exchange import Exchange
    from aigrid.gateway.relay_response import Hangup
    from aigrid.security.principal import Principal, Scopes

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"tenants": {**spec.tenants,
                                               "metered": TenantSpec(quotas=QuotaSpec(requests_per_min=1))}})
    guard = Guard(spec, quota_backend=_StoreGone() if refusal == "503" else None)
    who = Principal("metered", "k", Scopes(), "anonymous")
    if refusal == "429":
        await guard.admit(Exchange(route="chat", started=0.0, principal=who), {}, "hi", 1)
    hangup = Hangup(receive, None)
    ex = Exchange(route="chat", started=0.0, principal=who, hangup=hangup)
    with pytest.raises(RateLimited if refusal == "429" else QuotaUnavailable):
        await guard.admit(ex, {}, "hi", 1)
    assert hangup.armed is True
    hangup.hold()
    hangup.resume()
    assert hangup.armed is True  # no hold left standing


class _SlowToClose(WatchedEngine):
    """A FAKE engine whose request, closed before its first byte, takes `close_s` to let go (an adapter that
    reads the answer to its end, or waits for the engine's acknowledgement, before it gives its connection
    back); `closing` is set when such a close begins."""

    def __init__(self, name: str, close_s: float) -> None:
        super().__init__(name)
        self.close_s = close_s
        self.closing = asyncio.Event()

    async def releasing(self, started: bool) -> None:
        if not started:
            self.closing.set()
            await asyncio.sleep(self.close_s)  # the engine works on meanwhile


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_a_hang_up_while_the_hedges_loser_closes_closes_it_at_once(tmp_path: Path, stream: bool) -> None:
    """The attempt that answered first wins; the loser is cancelled and awaited while it closes. A client that
    hangs up then stops the request there: its cancel is not taken for the loser's, the loser's close is cut
    short, the winner's answer is closed unsent, one `client_closed` record, its prompt charged once, nothing in
    flight (before: the hang-up was swallowed and the request went on with the winner)."""
    engines = {e.id: _SlowToClose(e.id, close_s=30.0) for e in load_spec(DEMO).endpoints}
    # the engine asked first (nrt: a Tokyo client's) answers after ENGINE_DELAY_S, the hedge's at once: the hedge
    # wins and the first is the loser, whenever the hedge starts (0.39 s streamed, 0.79 s whole: HedgePolicy)
    engines["nrt-smollm2"].first_byte_delay_s = ENGINE_DELAY_S
    gw = _gateway(tmp_path, engines)
    body = ROUTES[0].body if stream else HEDGED_WHOLE
    async with serving(gw) as (port, access):
        writer = await _send_hedged(port, body)
        assert await _until(lambda: sum(len(f.received) for f in engines.values()) == 2)  # the hedge started
        assert await _until(lambda: any(f.closing.is_set() for f in engines.values()))  # the loser closes
        writer.close()
        hung_up = time.monotonic()
        assert await _until(lambda: bool(access.lines), 30)
        assert access.lines[0][0] - hung_up < 5.0, access.lines[0][0] - hung_up  # not after the loser's 30 s
        released = [f.released_at for f in engines.values() if f.received]
        assert len(released) == 2 and all(r is not None and r - hung_up < 5.0 for r in released), released
        assert engines["nrt-smollm2"].closing.is_set(), "the first engine was not the loser"
        assert sum(f.completed for f in engines.values()) == 0  # the winner's answer was not read on either
        rows = await audit_rows(gw)
        assert [r["outcome"] for r in rows] == ["client_closed"]
        assert await tokens(gw) == prompt_estimate(gw) > 0 and inflight(gw) == 0  # the prompt, once
        record = gw.decisions.get(rows[0]["request_id"])
        assert record is not None and record.status == "client_closed"
        loser = [a for a in record.attempts if not a["ok"]]
        assert len(loser) == 1 and loser[0]["error"].startswith("cancelled: "), record.attempts


class _SlowClose:
    """An engine response whose close takes a moment (an adapter giving its connection back)."""

    def __init__(self) -> None:
        self.closed = False
        self.closing = asyncio.Event()

    async def __aenter__(self) -> SimpleNamespace:
        return SimpleNamespace(status=200, headers={}, body=None)

    async def __aexit__(self, *exc: object) -> None:
        self.closing.set()
        await asyncio.sleep(0.5)
        self.closed = True


async def test_a_hang_up_while_a_hedge_closes_a_loser_that_answered_too_leaves_nothing_held(tmp_path: Path) -> None:
    """Both attempts had their first byte in one turn: the loser is closed unread. A hang-up during that close
    (review finding: the close was outside the cancel handling) left both endpoints' in-flight counts one high and
    the winner's engine request open. Now both slots come back, the winner is closed and its prompt charged."""
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    gw = _gateway(tmp_path, engines)
    a, b = list(engines)[:2]
    record = SimpleNamespace(prompt_tokens=10, width=1, attempts=[{"endpoint": a, "ok": True}, {"endpoint": b, "ok": True}],
                             status="routing", left_at=None)
    cands = {ep: SimpleNamespace(endpoint_id=ep, site_id=next(e.site for e in gw.spec.endpoints if e.id == ep))
             for ep in (a, b)}
    held: dict[str, tuple[Held, _SlowClose]] = {}
    for ep in (a, b):
        gw.store.request_started(ep, 10)
        gw.store.first_token(ep, 10)
        stack, response = Held(), _SlowClose()
        await stack.enter(response)  # type: ignore[arg-type]
        held[ep] = (stack, response)
    won = Opened(cands[a], None, held[a][0], b"x", 0.0, 0.0)  # type: ignore[arg-type]
    late = Opened(cands[b], None, held[b][0], b"x", 0.0, 0.0)  # type: ignore[arg-type]

    async def answered() -> Opened:
        return late

    loser = asyncio.ensure_future(answered())
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(gw.proxy._close_losers({loser: (cands[b], True)}, None, record, won))  # type: ignore[arg-type]
    await asyncio.wait_for(held[b][1].closing.wait(), 60)  # inside the loser's close (waited on, not slept for)
    closing.cancel(CLIENT_GONE)
    with pytest.raises(asyncio.CancelledError):
        await closing
    # the winner's close (0.5 s) polled for, up to 10 s: a loaded machine runs it late
    await _until(lambda: held[a][1].closed and (gw.store.inflight(a), gw.store.inflight(b)) == (0, 0), 10.0)
    assert (gw.store.inflight(a), gw.store.inflight(b)) == (0, 0)
    assert held[a][1].closed and record.left_at == a
    assert record.attempts[1]["error"] == "cancelled: another attempt answered first"
