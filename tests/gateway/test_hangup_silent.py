"""A client that hangs up AFTER its answer started, while the engine is silent (a long decode step, a stalled
engine): before, the gateway noticed it only at the engine's next chunk (an engine silent for 20 s held its
request's engine slot, in-flight count, quota reservation and connection for 20 s, and wrote no audit record);
now the response's disconnect watch cancels the streaming task at the hang-up (relay_response.RelayResponse), on
every front door over HTTP and on the Responses WebSocket. test_hangup.py covers the hang-up before the answer
starts; test_disconnect.py a client that leaves while chunks still flow."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from pathlib import Path

import orjson
import pytest
import websockets.sync.client

from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.gateway.app import build_gateway
from aigrid.gateway.response_store import StoredResponse
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, audit_rows
from tests.gateway.socket_grid import MODEL, served
from tests.gateway.test_hangup import (
    HEADERS,
    ROUTES,
    TENANT,
    Route,
    WatchedEngine,
    _gateway,
    _until,
    emulated_grid,
    inflight,
    serving,
    tokens,
)

SILENT_S = 10.0
"""How long the engine stays silent after its first chunk: far past every deadline below."""
STREAMED = [pytest.param(r, id=r.name) for r in ROUTES if r.stream]


async def _started(port: int, path: str, body: dict) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """The request sent on a socket of its own, once its answer has started: its reader and writer, and what was
    read (its head and a first event)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = orjson.dumps(body)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**HEADERS, "host": f"127.0.0.1:{port}",
                                                "content-type": "application/json",
                                                "content-length": str(len(data))}.items())
    writer.write(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + data)
    got = b""
    async with asyncio.timeout(30):  # the first event at 2.5 s at most on an idle machine
        while b"data:" not in got.partition(b"\r\n\r\n")[2]:
            got += await reader.read(65536)
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    return reader, writer, got


@pytest.mark.parametrize("route", STREAMED)
async def test_a_hang_up_while_the_engine_is_silent_mid_answer_is_seen_at_once(tmp_path: Path, route: Route) -> None:
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    for f in engines.values():
        f.word_delay_s = SILENT_S  # the first chunk at once, then silence
    gw = _gateway(tmp_path, engines)
    async with serving(gw) as (port, access):
        _, writer, _ = await _started(port, route.path, route.body)
        await asyncio.sleep(0.1)
        writer.close()  # the hang-up
        hung_up = time.monotonic()
        # "at once": well within the engine's silence (SILENT_S), with room for a loaded machine
        assert await _until(lambda: bool(access.lines), SILENT_S / 2), "the exchange did not close at the hang-up"
        assert access.lines[0][0] - hung_up < SILENT_S / 2
        assert [str(getattr(r, "aigrid_fields", {}).get("outcome")) for _, r in access.lines] == ["client_closed"]
        rows = await audit_rows(gw)
        assert [r["outcome"] for r in rows] == ["client_closed"]
        released = [f.released_at for f in engines.values() if f.released_at is not None]
        assert len(released) == 1 and released[0] - hung_up < SILENT_S / 2  # the engine's request closed, not finished
        assert sum(f.aborted for f in engines.values()) == 1 and sum(f.completed for f in engines.values()) == 0
        assert inflight(gw) == 0
        assert await tokens(gw) == rows[0]["extra"]["charged_tokens"] > 0  # the quota settled, as it was charged


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
    ("/v1/responses", {"input": "hi", "max_output_tokens": 5}),
    ("/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
], ids=["chat", "responses", "messages"])
async def test_an_emulated_engine_sees_its_connection_closed_at_a_hang_up_between_tokens(
        tmp_path: Path, path: str, body: dict) -> None:
    """The ENGINE EMULATOR on a socket of its own behind the gateway's Http1Transport, a decode step of 2.5 s
    (the first token at 2.5 s, the next at 5 s): the client hangs up after the first; the emulator sees its
    connection closed (it counts a cancel and frees its slot) before its next token, not at it. Checked by what the
    engine made, not by the clock: a request closed at the next token has made two (the gateway noticed the hang-up
    only when it relayed the second), one closed at the hang-up only the first."""
    server, emulator = await serve(EmulatorConfig(model="m", slots=2, prefill_base_ms=1.0, decode_base_ms=2500.0))
    up = upstream()
    try:
        grid = emulated_grid(tmp_path, bound_port(server))
        gw = build_gateway(grid, build_engines(grid, {}, up), rng=random.Random(0))
        engine = emulator.engine
        async with serving(gw) as (port, access):
            _, writer, _ = await _started(port, path, {"model": "m", **body, "stream": True})
            assert engine.generation_tokens_total == 1  # the first token only, when the client hangs up
            writer.close()
            assert await _until(lambda: engine.cancelled_total == 1, 30), "the engine's request was not closed"
            assert engine.generation_tokens_total == 1, "the engine's request was closed at its next token"
            assert await _until(lambda: bool(access.lines), 30)
            assert (engine.finished_total, engine.running, engine.waiting) == (0, 0, 0)
            rows = await audit_rows(gw)
            assert [r["outcome"] for r in rows] == ["client_closed"]
            assert inflight(gw) == 0
            assert await tokens(gw) == rows[0]["extra"]["charged_tokens"] > 0
    finally:
        await up.aclose()
        server.close()


def test_a_socket_closed_while_the_engine_is_silent_mid_response_is_seen_at_once(tmp_path: Path) -> None:
    with served(tmp_path, delay_s=SILENT_S, engine=lambda name, _: WatchedEngine(name)) as grid:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{grid.port}/v1/responses",
                                            additional_headers=HEADERS) as ws:
            ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": "Say hello",
                                "max_output_tokens": 100}))
            while json.loads(ws.recv(timeout=30))["type"] != "response.in_progress":
                pass
        hung_up = time.monotonic()
        rows = grid.until_records("/v1/responses", 1)
        # "at once": well within the engine's silence (SILENT_S), with room for a loaded machine
        assert time.monotonic() - hung_up < SILENT_S / 2, "the response's record came only after the engine's next chunk"
        assert [r["outcome"] for r in rows] == ["client_closed"]
        socket_row = grid.until_records("WS /v1/responses", 1)[0]
        assert socket_row["extra"]["responses"] == 1
        engines = list(grid.engines.values())
        assert sum(e.aborted for e in engines) == 1 and sum(e.completed for e in engines) == 0  # type: ignore[attr-defined]
        assert grid.inflight() == 0
        assert grid.balance() == rows[0]["extra"]["charged_tokens"] > 0


class _SlowToClose(WatchedEngine):
    """Its request takes a second to close (an engine behind a slow proxy), after an answer that came at once."""

    closing = False
    """Its close has begun (the test hangs up inside it)."""

    async def releasing(self, started: bool) -> None:
        self.closing = True
        await asyncio.sleep(1.0)


async def test_a_hang_up_while_a_broken_streams_engine_closes_leaves_nothing_held(tmp_path: Path) -> None:
    """The cut lands wherever the answer waits while an engine still serves it: here in the close of an engine
    request that broke mid-stream (Proxy.abandon). The engine slot is still given back and the attempt booked
    (a close cut short left the in-flight count one high for good: its booking came after the close)."""
    engines = {e.id: _SlowToClose(e.id) for e in load_spec(DEMO).endpoints}
    for f in engines.values():
        f.break_after = 1
    gw = _gateway(tmp_path, engines)
    chat = next(r for r in ROUTES if r.name == "chat-stream")
    async with serving(gw) as (port, access):
        _, writer, _ = await _started(port, chat.path, chat.body)
        # it broke at once: its close takes a second (waited for, not slept for)
        assert await _until(lambda: any(f.closing for f in engines.values()), 10.0)
        writer.close()  # while the gateway closes the engine's request
        assert await _until(lambda: bool(access.lines), 10.0)
        assert await _until(lambda: inflight(gw) == 0, 10.0), "the engine's slot stayed held"
        rows = await audit_rows(gw)
        assert [r["outcome"] for r in rows] == ["client_closed"]
        record = gw.decisions.get(rows[0]["request_id"])
        assert record is not None and [a.get("error", "")[:12] for a in record.attempts][-1] == "stream broke", \
            record.attempts  # booked, and no continuation opened for nobody


async def test_an_answer_that_has_ended_is_not_cut_while_the_responses_door_stores_it(tmp_path: Path) -> None:
    """Only an answer still under way at its engine is cut: once the engine's answer has ended and been released,
    a hang-up while the Responses door stores it (a store on Redis, whose reply a cancel would lose) lets the store
    finish, as before; the rest of the stream then ends at its next send."""
    engines = {e.id: WatchedEngine(e.id) for e in load_spec(DEMO).endpoints}
    gw = _gateway(tmp_path, engines)
    storing = asyncio.Event()
    route = next(r for r in ROUTES if r.name == "responses-stream")
    async with serving(gw) as (port, access):
        book = gw.stores.responses  # made by the lifespan
        put = book.put

        async def slow_put(record: StoredResponse, allowed: frozenset[str] | None) -> bool:
            storing.set()
            await asyncio.sleep(0.5)
            return await put(record, allowed)

        book.put = slow_put  # type: ignore[method-assign]
        _, writer, got = await _started(port, route.path, route.body)
        found = re.search(rb'"id":\s*"(resp_[^"]+)"', got)
        assert found is not None, got[:500]
        async with asyncio.timeout(30):
            await storing.wait()
        writer.close()  # while the finished answer is stored
        assert await _until(lambda: bool(access.lines), 30)
        assert sum(f.completed for f in engines.values()) == 1 and inflight(gw) == 0
        assert isinstance(await book.lookup(TENANT, found.group(1).decode()), StoredResponse), "the store was cut"


def cost(n: int = 200_000) -> float:  # pragma: no cover - docs/reliability.md, "Cost"
    """CPU microseconds per streamed response of its Cut: made, added to the watcher as its done callback, set in the
    context variable, engaged by the relay, closed and reset (what RelayResponse.__call__ and StreamRelay.__aiter__
    add per response; nothing is added per chunk)."""
    from aigrid.gateway.relay_response import CUT, Cut

    class Relay:
        live = True

    async def run() -> float:
        loop, task, relay = asyncio.get_running_loop(), asyncio.current_task(), Relay()
        futures = [loop.create_future() for _ in range(n)]
        t0 = time.process_time()
        for _ in futures:
            pass
        empty = time.process_time() - t0
        t0 = time.process_time()
        for gone in futures:
            cut = Cut(gone, task)
            gone.add_done_callback(cut)
            token = CUT.set(cut)
            if (engaged := CUT.get()) is not None:
                engaged.engage(relay)
            cut.close()
            CUT.reset(token)
        return (time.process_time() - t0 - empty) / n * 1e6

    return asyncio.run(run())


if __name__ == "__main__":  # pragma: no cover
    for r in range(5):
        print(f"round {r + 1}: {cost():.2f} us per streamed response")
