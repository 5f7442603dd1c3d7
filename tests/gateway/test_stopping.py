"""stopping.CutAnswers: what a request the stop cancels answers, in each front door's form (the real processes:
test_shutdown.py). Before, uvicorn's plain-text 500 for a request whose answer had not begun, and a stream's
chunked body broken off. Also: the 503 names the request as its audit record does, the last words are not cut by
a later cancel, a later signal cancels no request twice (GatewayServer.hurry)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import uvicorn

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway import uvicorn_fit
from aigrid.gateway.app import build_app
from aigrid.gateway.stopping import GRACE_END, CutAnswers, GatewayServer
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
            "server": ("gw", 80), "client": ("127.0.0.1", 5000), "headers": headers or []}


async def _cut(path: str, *, stream: bytes | None, headers: list[tuple[bytes, bytes]] | None = None
               ) -> list[dict[str, Any]]:
    """The messages sent for a request cancelled while its app waits: after `stream` (an SSE body begun), or
    before any answer (None)."""
    sent: list[dict[str, Any]] = []
    waiting = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if stream is not None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
            await send({"type": "http.response.body", "body": stream, "more_body": True})
        waiting.set()
        await asyncio.Event().wait()  # an engine that has not answered yet

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def send(message: Any) -> None:
        sent.append(message)

    task = asyncio.create_task(CutAnswers(app)(_scope(path, headers), receive, send))
    await waiting.wait()
    task.cancel("Task cancelled, timeout graceful shutdown exceeded")  # uvicorn's, at the end of the grace
    await task  # the cut is answered, not raised on
    return sent


def _last_event(sent: list[dict[str, Any]]) -> bytes:
    last = sent[-1]
    assert last["type"] == "http.response.body" and last["more_body"] is False  # the body ends whole
    return bytes(last["body"])


async def test_a_request_cut_before_its_answer_is_a_503_shutting_down_in_its_envelope() -> None:
    sent = await _cut("/v1/chat/completions", stream=None)
    assert sent[0]["status"] == 503
    headers = dict(sent[0]["headers"])
    assert headers[b"retry-after"] == b"1"
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "shutting_down"
    sent = await _cut("/v1/messages", stream=None)  # Anthropic's door: its envelope and status for an overload
    assert sent[0]["status"] == 529
    assert orjson.loads(sent[1]["body"])["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(("path", "headers"), [("/v1/chat/completions", None), ("/v1/completions", None)])
async def test_an_openai_stream_cut_ends_with_an_error_event(path: str, headers: Any) -> None:
    event = _last_event(await _cut(path, stream=b'data: {"choices":[]}\n\n', headers=headers))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert orjson.loads(event[len(b"data: "):])["error"]["code"] == "shutting_down"


async def test_a_messages_stream_cut_ends_with_anthropics_error_event() -> None:
    event = _last_event(await _cut("/v1/messages", stream=b"event: message_start\ndata: {}\n\n"))
    name, data = event.strip().split(b"\n")
    assert name == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: "))["error"]["type"] == "overloaded_error"


async def test_a_responses_stream_cut_ends_with_an_error_event_numbered_after_the_last() -> None:
    begun = b"event: response.created\ndata: {}\n\nevent: response.in_progress\ndata: {}\n\n"
    event = _last_event(await _cut("/v1/responses", stream=begun))
    name, data = event.strip().split(b"\n")
    assert name == b"event: error"
    body = orjson.loads(data.removeprefix(b"data: "))
    assert body["code"] == "shutting_down" and body["sequence_number"] == 2


async def test_a_whole_body_begun_and_cut_is_raised_on_as_before() -> None:
    """Nothing can be added to a JSON body begun: the cancel goes on (uvicorn closes the connection)."""
    begun = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
        begun.set()
        await asyncio.Event().wait()

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        await asyncio.Event().wait()

    task = asyncio.create_task(CutAnswers(app)(_scope("/v1/chat/completions"), receive, send))
    await begun.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sent) == 2  # nothing sent after the cut


async def test_a_cancelled_error_that_is_no_cancel_of_the_request_is_raised_on() -> None:
    """A CancelledError out of the app while nobody cancelled its task (a future some other task cancelled, awaited
    here: a bug of ours, stop or no stop) is not a cut: it goes on to uvicorn (its 500 and the traceback in the
    log), not answered 503 `shutting_down` with nothing logged."""
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        other = asyncio.get_running_loop().create_future()
        other.cancel()
        await other

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        await asyncio.Event().wait()

    with pytest.raises(asyncio.CancelledError):
        await CutAnswers(app)(_scope("/v1/chat/completions"), receive, send)
    assert sent == []


class _Held(FakeEngine):
    """An engine that takes the request and never answers (`reached` set when it has it)."""

    def __init__(self, name: str, reached: asyncio.Event) -> None:
        super().__init__(name)
        self.reached = reached

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.reached.set()
        await asyncio.Event().wait()
        yield UpstreamResponse(200, {}, None)  # pragma: no cover (never reached)


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/v1/chat/completions", {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}, []),
    ("/v1/messages", {"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
     [(b"anthropic-version", b"2023-06-01")])])
async def test_a_cut_requests_503_names_the_request_its_audit_record_names(
        tmp_path: Path, path: str, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    """The 503 `shutting_down` of an audited route carries x-request-id and request-id, the `request_id` of its
    `cancelled` record (Anthropic's body too, as Anthropic's errors do). Before, it carried neither: a client could
    not match the refusal to its record, while every other answer of these routes names it (README)."""
    reached = asyncio.Event()
    engines = {e.id: _Held(e.id, reached) for e in load_spec(DEMO).endpoints}
    async with serving(spec_in(tmp_path), engines) as (_, gw):
        app = CutAnswers(build_app(gw))
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": orjson.dumps(body), "more_body": False}]

        async def receive() -> dict[str, Any]:
            if chunks:
                return chunks.pop()
            await asyncio.Event().wait()  # the client waits for its answer
            return {}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = _scope(path, [(b"content-type", b"application/json"), (b"x-aigrid-client-location", b"Tokyo"),
                              *headers])
        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(reached.wait(), 10)  # on its engine, no answer begun
        task.cancel("Task cancelled, timeout graceful shutdown exceeded")
        await task
        assert sent[0]["status"] in (503, 529)
        answer = dict(sent[0]["headers"])
        [record] = [r for r in await audit_rows(gw) if r["extra"]["route"] == path]
        assert record["outcome"] == "cancelled"
        assert answer[b"x-request-id"] == answer[b"request-id"] == record["request_id"].encode()
        if path == "/v1/messages":
            assert orjson.loads(sent[1]["body"])["request_id"] == record["request_id"]


async def test_a_later_cancel_does_not_cut_the_last_words_being_sent() -> None:
    """The 503 being written to a client slow to read (a full socket: the send waits) when its request is
    cancelled again (the grace's end after a second signal, a third signal): the answer is still sent whole and
    the request ends. Before, the second cancel cut the send mid-way (the head sent, no body) and was raised on."""
    started, reading = asyncio.Event(), asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async def receive() -> Any:
        await asyncio.Event().wait()

    async def send(message: Any) -> None:
        sent.append(message)
        await reading.wait()  # the client reads nothing yet

    task = asyncio.create_task(CutAnswers(app)(_scope("/v1/chat/completions"), receive, send))
    await started.wait()
    task.cancel("the first cut")
    while not sent:
        await asyncio.sleep(0)
    task.cancel("a second cut")  # while the 503's head waits on the client
    for _ in range(5):
        await asyncio.sleep(0)
    reading.set()
    await asyncio.wait_for(task, 5)  # answered, not raised on
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "shutting_down"


async def taking_cuts(over: asyncio.Event, cancels: list[str], first: asyncio.Event) -> None:
    """A request that takes each cut (its last words, its record: each cancel's message kept in `cancels`, `first`
    set at the first) and ends when `over` is set."""
    while not over.is_set():
        try:
            await over.wait()
        except asyncio.CancelledError as e:
            cancels.append(str(e))
            first.set()
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def test_a_later_signal_cancels_no_request_twice() -> None:
    """A second signal cuts every request (`hurry`); a third cuts none of them again (each is sending its last
    words or writing its record). Before, each signal cancelled every request again."""
    runner = SimpleNamespace(hurried=0)
    runner.hurry = lambda: setattr(runner, "hurried", runner.hurried + 1)
    gateway = SimpleNamespace(stopping=False, batches=SimpleNamespace(runner=runner))
    server = GatewayServer(uvicorn.Config(lambda *_: None), gateway)  # type: ignore[arg-type]
    cancels: list[str] = []
    over = asyncio.Event()
    task = asyncio.create_task(taking_cuts(over, cancels, asyncio.Event()))
    server.server_state.tasks.add(task)
    await asyncio.sleep(0)
    for _ in range(3):  # SIGTERM three times
        server.signalled()
        await asyncio.sleep(0)
    ended_early = task.done()
    over.set()
    await task
    assert gateway.stopping and server.should_exit and server.hurried and not ended_early
    assert cancels == ["the gateway is stopping"]
    assert runner.hurried == 2  # the batches' drain skipped (a second time: that cancels nothing twice)


async def test_a_signal_after_the_graces_end_cancels_no_request_uvicorn_cut_again() -> None:
    """The grace ends with a request (or a socket) still running: uvicorn cancels it (GRACE_END) and the lifespan's
    shutdown waits for it (CUT_WAIT_S at most). A second signal then cuts nothing uvicorn cut: its last words, a
    socket's 1012 close, go on. Until 2026-12-06 `hurry` skipped only the tasks it had cut itself and cancelled it
    again. Also: GRACE_END is the message uvicorn cancels with."""
    gateway = SimpleNamespace(stopping=False, batches=None)
    server = GatewayServer(uvicorn.Config(lambda *_: None, timeout_graceful_shutdown=0), gateway)  # type: ignore[arg-type]
    cancels: list[str] = []
    over, first = asyncio.Event(), asyncio.Event()

    async def lifespan_shutdown() -> None:
        pass

    task = asyncio.create_task(taking_cuts(over, cancels, first))
    server.server_state.tasks.add(task)
    server.lifespan = SimpleNamespace(shutdown=lifespan_shutdown)
    server.servers = []  # uvicorn's listening servers (startup's): none here
    server.signalled()  # the first signal: the grace (0 s here)
    stopping = asyncio.create_task(server.shutdown())
    await asyncio.wait_for(first.wait(), 30)  # uvicorn has cut it; the lifespan's shutdown waits for it
    server.signalled()  # a second signal, within CUT_WAIT_S of the grace's end
    await asyncio.sleep(0)
    over.set()
    await task
    server.server_state.tasks.discard(task)
    await stopping
    assert server.hurried and cancels == [GRACE_END]


@pytest.mark.parametrize(("code", "stopping", "closed_by"), [
    (1012, True, "server"), (1000, True, "client"), (1006, True, "client"), (1012, False, "client")])
async def test_a_sockets_close_is_the_servers_only_when_the_stop_closed_it(
        code: int, stopping: bool, closed_by: str) -> None:
    """Who ended a Responses WebSocket is read from the close itself: uvicorn's 1012 while the gateway stops is the
    server's (its running response `cancelled`); a client's own close (1000, or its connection lost: 1006) during
    a stop is the client's. Before, any close during a stop was recorded `server`."""
    from aigrid.gateway.parse_pool import ParsePool
    from aigrid.gateway.responses_socket import _Connection, _Waiting

    class Ws:
        async def receive(self) -> dict[str, Any]:
            return {"type": "websocket.disconnect", "code": code}

    conn = _Connection(Ws(), None, {}, 1000, _Waiting(10_000), ParsePool(), lambda: stopping)  # type: ignore[arg-type]
    await conn.run()
    assert conn.closed_by == closed_by


class _Gated(FakeEngine):
    """An engine whose streamed answer stops after its first word until `gate` is set."""

    def __init__(self, name: str, gate: asyncio.Event) -> None:
        super().__init__(name, ("Hello", " from", " the", " grid"))
        self.gate = gate

    async def _sse(self, req: dict) -> AsyncIterator[bytes]:  # type: ignore[type-arg]
        chunks = 0
        async for chunk in super()._sse(req):
            yield chunk
            chunks += 1
            if chunks == 2:  # the role's chunk and the first word sent
                await self.gate.wait()


class _Waiting(FakeEngine):
    """An engine that takes the request (`reached` set), answers nothing until `gate` is set, then answers whole."""

    def __init__(self, name: str, reached: asyncio.Event, gate: asyncio.Event) -> None:
        super().__init__(name)
        self.reached, self.gate = reached, gate

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.reached.set()
        await self.gate.wait()
        async with super().open(path, body) as response:
            yield response


@asynccontextmanager
async def _stopping_gateway(tmp_path: Path, gate: asyncio.Event, grace_s: float, held: bool = False,
                            engine: Callable[[str], FakeEngine] | None = None,
                            ) -> AsyncIterator[tuple[GatewayServer, int, asyncio.Task[None]]]:
    """The gateway as `aigrid gateway` serves it (stopping.gateway_server: its grace from the spec, its WebSocket
    protocol, its signal handling: `signalled()` is what SIGTERM calls) on 127.0.0.1, every engine `_Gated` (`held`:
    `_Held`, which sets `gate` once it has the request; `engine`: the one it makes of an endpoint's id)."""
    import random

    from aigrid.gateway.app import build_gateway
    from aigrid.gateway.responses_socket import server_options
    from aigrid.gateway.stopping import gateway_server
    from tests.gateway.conftest import _no_sleep
    from tests.serving import serving_gateway

    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"shutdown_grace_s": grace_s})})
    engines = {e.id: engine(e.id) if engine else _Held(e.id, gate) if held else _Gated(e.id, gate)
               for e in spec.endpoints}
    gw = build_gateway(spec, engines, rng=random.Random(5), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    server = gateway_server(build_app(gw), gw, **server_options(spec))
    async with serving_gateway(server) as (port, task):
        try:
            yield server, port, task
        finally:
            gate.set()
            if not task.done():
                server.signalled()
                server.signalled()


def _records(tmp_path: Path, route: str) -> list[dict[str, Any]]:
    """The route's audit records, read from the log's file once the gateway stopped (its final checkpoint)."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "audit.db")
    try:
        rows = [orjson.loads(r[0]) for r in db.execute("SELECT body FROM audit_records ORDER BY seq")]
    finally:
        db.close()
    return [r for r in rows if r["extra"]["route"] == route]


async def _until(ws: Any, kind: str) -> list[dict[str, Any]]:
    """The socket's messages up to the first of type `kind`, included."""
    got = []
    while not got or got[-1]["type"] != kind:
        got.append(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))
    return got


def _ask_whole(c: Any) -> asyncio.Task[Any]:
    """A whole (not streamed) chat answer asked of the gateway through httpx client `c`, under way as a task."""
    return asyncio.create_task(c.post("/v1/chat/completions", headers={"x-aigrid-client-location": "Tokyo"},
                                      json={"model": "smollm2-135m", "messages": [
                                          {"role": "user", "content": "Name three rivers in Japan."}]}))


async def _until_closed(server: GatewayServer, task: asyncio.Task[Any], timeout_s: float = 30) -> None:
    """Until uvicorn closed its listening servers (its stop begun), the server's task still running meanwhile;
    a stop that never closes them fails in `timeout_s`, saying so (not at pytest-timeout's 300 s)."""
    try:
        async with asyncio.timeout(timeout_s):  # in this task: no turn of the loop added once they are closed
            while any(s.is_serving() for s in server.servers):
                assert not task.done()
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"uvicorn's servers still serving {timeout_s} s after the signal: its stop never closed them")


CREATE = {"type": "response.create", "model": "smollm2-135m", "input": "hi", "max_output_tokens": 16}


async def test_a_sockets_response_under_way_gets_the_grace_then_the_socket_is_closed_1012(tmp_path: Path) -> None:
    """The first signal: a Responses WebSocket's response under way runs to its end (the grace, as an HTTP request's),
    a response.create sent meanwhile is refused (`error` event, 503 `shutting_down`), then the gateway closes the
    socket 1012, recorded closed by the server. Before, uvicorn closed it 1012 at once: the response was cut
    (`cancelled`) with no grace, the refusal never came."""
    import websockets

    gate = asyncio.Event()
    async with _stopping_gateway(tmp_path, gate, grace_s=60) as (server, port, task):
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/responses",
                                      additional_headers={"x-aigrid-client-location": "Tokyo"}) as ws:
            await ws.send(orjson.dumps(CREATE).decode())
            begun = await _until(ws, "response.output_text.delta")  # the response under way, held at its engine
            server.signalled()  # SIGTERM
            await ws.send(orjson.dumps({**CREATE, "stream_id": "late"}).decode())
            refused = (await _until(ws, "error"))[-1]
            assert refused["status"] == 503 and refused["error"]["code"] == "shutting_down", refused
            assert refused["error"]["headers"]["retry-after"] == "1"
            gate.set()  # the engine answers on, within the grace
            done = begun + await _until(ws, "response.completed")
            assert done[-1]["response"]["status"] == "completed"
            assert "".join(e["delta"] for e in done if e["type"] == "response.output_text.delta") == "Hello from the grid"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 1012
        await asyncio.wait_for(task, 60)  # the gateway stopped (well within its 60 s of grace)
    assert [r["outcome"] for r in _records(tmp_path, "/v1/responses")] == ["ok"]
    [sock] = _records(tmp_path, "WS /v1/responses")
    assert (sock["extra"]["closed"], sock["extra"]["responses"], sock["extra"]["refused_events"]) == ("server", 1, 1)


async def test_a_sockets_response_still_running_at_the_graces_end_is_cut_then_closed_1012(tmp_path: Path) -> None:
    """The grace (gateway.shutdown_grace_s, here 0.2 s) ends with the response still running: it is cancelled
    (`cancelled`, its quota settled), its client told (`error` event `shutting_down`, as a stream cut over HTTP ends
    with one), and the socket closed 1012 by the server; uvicorn's own log has no traceback of it."""
    import websockets

    gate = asyncio.Event()  # never set while the gateway stops: the engine never ends its answer
    async with _stopping_gateway(tmp_path, gate, grace_s=0.2) as (server, port, task):
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/responses",
                                      additional_headers={"x-aigrid-client-location": "Tokyo"}) as ws:
            await ws.send(orjson.dumps({**CREATE, "stream_id": "s1"}).decode())
            await _until(ws, "response.output_text.delta")
            server.signalled()
            cut = (await _until(ws, "error"))[-1]
            assert cut["error"]["code"] == "shutting_down" and cut["stream_id"] == "s1", cut
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 1012
        await asyncio.wait_for(task, 60)
    assert [r["outcome"] for r in _records(tmp_path, "/v1/responses")] == ["cancelled"]
    assert [r["extra"]["closed"] for r in _records(tmp_path, "WS /v1/responses")] == ["server"]


async def test_the_grace_is_the_specs(tmp_path: Path) -> None:
    """gateway.shutdown_grace_s is the server's grace (uvicorn's timeout_graceful_shutdown), 5 s by default, and a
    grace that is not a number of seconds is refused naming the field. Before, a constant (stopping.GRACE_S)."""
    from aigrid.gateway.app import build_gateway
    from aigrid.gateway.stopping import gateway_server
    from aigrid.spec.load import parse_spec
    from aigrid.spec.models import GatewaySpec

    assert GatewaySpec().shutdown_grace_s == 5
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"shutdown_grace_s": 12.5})})
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints})
    try:
        assert gateway_server(build_app(gw), gw).config.timeout_graceful_shutdown == 12.5
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(sig)
    grid = {"name": "g", "gateway": {"shutdown_grace_s": -1}, "models": {}, "sites": {}, "endpoints": []}
    with pytest.raises(Exception, match="shutdown_grace_s"):
        parse_spec(grid, "spec.yaml")


async def test_a_whole_answer_on_its_engine_when_the_stop_begins_gets_the_grace(tmp_path: Path) -> None:
    """A whole answer held on its engine when the first signal comes is given the grace: uvicorn's stop (its servers
    closed, each connection's shutdown) does not end it, and the engine's answer, once it comes, is the client's 200
    (recorded `ok`). Under uvicorn 0.44.0 (pyproject's floor until the twenty-eighth session's area G) a connection's
    shutdown made the request's `receive` return http.disconnect at once: the gateway took the stop for its client
    hanging up, cut the request at the stop's beginning (no grace; `client_closed`, charged as a hang-up) and uvicorn
    answered its own plain-text 500 ("ASGI callable returned without starting response"). uvicorn 0.45.0 dropped
    that; pyproject asks for it since. CI runs the installed uvicorn; this fails with
    PYTHONPATH=<uvicorn 0.44.0 unpacked> (docs/upgrading.md)."""
    import httpx

    reached, gate = asyncio.Event(), asyncio.Event()
    async with _stopping_gateway(tmp_path, gate, grace_s=60, engine=lambda name: _Waiting(name, reached, gate)) as (
            server, port, task):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            asked = _ask_whole(c)
            await asyncio.wait_for(reached.wait(), 30)  # on its engine
            server.signalled()  # SIGTERM
            await _until_closed(server, task)  # uvicorn's stop begun: its servers closed, then at once (no await
            # between) each connection's shutdown
            for _ in range(100):  # turns of the loop, for whatever that shutdown set off to run its course
                await asyncio.sleep(0)
            assert not asked.done(), asked.result().text
            gate.set()  # the engine answers, well within the grace
            answer = await asyncio.wait_for(asked, 30)
        await asyncio.wait_for(task, 60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from the grid"
    assert [r["outcome"] for r in _records(tmp_path, "/v1/chat/completions")] == ["ok"]


@pytest.mark.parametrize("signals", [1, 2])
async def test_a_request_the_stop_cuts_while_its_engine_holds_it_is_charged_nothing(
        tmp_path: Path, signals: int) -> None:
    """A whole answer on its engine, no byte of it yet, when the stop cuts it (the grace's end; or a second signal):
    work the grid throws away is charged nothing beyond what was delivered (docs/reliability.md, 'Stopping cleanly'):
    nothing reached the client, so nothing is charged, its record without charged_tokens or cost. From 02aa19de to
    the twenty-seventh session's area W the prompt's estimate was charged, as for a client that hangs up."""
    import httpx

    reached = asyncio.Event()
    async with _stopping_gateway(tmp_path, reached, grace_s=0.2 if signals == 1 else 60, held=True) as (
            server, port, task):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            asked = _ask_whole(c)
            await asyncio.wait_for(reached.wait(), 30)  # on its engine
            for _ in range(signals):
                server.signalled()
            answer = await asyncio.wait_for(asked, 60)
        await asyncio.wait_for(task, 60)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "shutting_down"
    [record] = _records(tmp_path, "/v1/chat/completions")
    assert record["outcome"] == "cancelled"
    assert record["extra"].get("charged_tokens", 0) == 0, record["extra"]  # neither the prompt nor the reservation
    assert not record["extra"].get("cost_usd"), record["extra"]


@pytest.mark.parametrize("signals", [1, 2])
async def test_a_sockets_response_the_stop_cuts_while_its_engine_holds_it_is_charged_nothing(
        tmp_path: Path, signals: int) -> None:
    """The socket's form of the case above: a Responses WebSocket's response on its engine, no byte of it yet, cut by
    the stop (the grace's end; or a second signal, stopping.CUT) is charged nothing, as an HTTP request cut so is
    (from e1d51d16 to area W it was charged its prompt)."""
    import websockets

    reached = asyncio.Event()
    async with _stopping_gateway(tmp_path, reached, grace_s=0.2 if signals == 1 else 60, held=True) as (
            server, port, task):
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/responses",
                                      additional_headers={"x-aigrid-client-location": "Tokyo"}) as ws:
            await ws.send(orjson.dumps({**CREATE, "input": "Name three rivers in Japan."}).decode())
            await asyncio.wait_for(reached.wait(), 30)  # on its engine
            for _ in range(signals):
                server.signalled()
            cut = (await _until(ws, "error"))[-1]
            assert cut["error"]["code"] == "shutting_down", cut
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 1012
        await asyncio.wait_for(task, 60)
    [record] = _records(tmp_path, "/v1/responses")
    assert record["outcome"] == "cancelled"
    assert record["extra"].get("charged_tokens", 0) == 0, record["extra"]
    assert not record["extra"].get("cost_usd"), record["extra"]


async def test_a_socket_whose_client_never_answers_the_stops_close_holds_the_stop_no_longer_than_a_last_word(
        tmp_path: Path) -> None:
    """An idle socket whose client neither reads nor answers a close (a peer gone without a word): the stop's close
    (1012, Lingering) waits SEND_BOUND_S for its echo, as a cut request's last words wait, then drops the connection.
    Before (review RV2), uvicorn's close_timeout (10 s) applied: every such socket held the stop for the whole grace
    or 10 s (measured: 10.2 s with a 30 s grace, 3.2 s with 3 s), where uvicorn's own close at the stop took 0.2 s."""
    import base64
    import os

    gate = asyncio.Event()
    async with _stopping_gateway(tmp_path, gate, grace_s=60) as (server, port, task):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(f"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         "x-aigrid-client-location: Tokyo\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert head.startswith(b"HTTP/1.1 101"), head
            server.signalled()  # from now on the client reads nothing and never echoes the close
            # well past SEND_BOUND_S (1 s), below uvicorn's close_timeout (10 s) and the grace (60 s)
            await asyncio.wait_for(task, 8)
        finally:
            writer.close()


@pytest.fixture
def fits_afresh() -> Iterator[None]:
    """uvicorn_fit.uvicorn_fits runs once per process (cached): a test checks again, and leaves no answer of its own."""
    uvicorn_fit.uvicorn_fits.cache_clear()
    yield
    uvicorn_fit.uvicorn_fits.cache_clear()


def test_the_installed_uvicorn_is_what_the_stop_was_written_against(
        fits_afresh: None, caplog: pytest.LogCaptureFixture) -> None:
    """Lingering's attributes are uvicorn's WebSocket protocol's: no warning. (That GRACE_END is the message uvicorn
    cancels with at the grace's end is checked by test_a_signal_after_the_graces_end_cancels_no_request_uvicorn_cut_again:
    since 8b3971f4 nothing in the gateway compares a cancel's message with it, so it is no startup check.)"""
    with caplog.at_level(logging.WARNING, logger="aigrid.gateway"):
        assert uvicorn_fit.uvicorn_fits().lingers
    assert not caplog.records


async def test_under_a_uvicorn_without_lingerings_attributes_a_socket_is_closed_at_the_stop_as_uvicorn_does(
        tmp_path: Path, fits_afresh: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Lingering reads uvicorn's WebSocket protocol's internals (handshake_complete, close_sent, ...) inside uvicorn's
    connection.shutdown(), which nothing catches. Where uvicorn lacks one (here: a name made up), one warning at
    startup and uvicorn's own behaviour: the socket closed 1012 when the stop begins, its response under way cut, the
    stop not held for the grace (60 s)."""
    import websockets

    monkeypatch.setattr(uvicorn_fit, "LINGER_READS", (*uvicorn_fit.LINGER_READS, "no_such_attribute"))
    gate = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="aigrid.gateway"):
        async with _stopping_gateway(tmp_path, gate, grace_s=60) as (server, port, task):
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/responses",
                                          additional_headers={"x-aigrid-client-location": "Tokyo"}) as ws:
                await ws.send(orjson.dumps(CREATE).decode())
                await _until(ws, "response.output_text.delta")  # held at its engine
                server.signalled()  # SIGTERM
                with pytest.raises(websockets.ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 30)
            assert ws.close_code == 1012
            await asyncio.wait_for(task, 30)  # no grace held: the engine's gate never opened
    warnings = [r.getMessage() for r in caplog.records if "no_such_attribute" in r.getMessage()]
    assert len(warnings) == 1 and "Lingering not used" in warnings[0], warnings
    assert [r["outcome"] for r in _records(tmp_path, "/v1/responses")] == ["cancelled"]  # cut by the stop's close
