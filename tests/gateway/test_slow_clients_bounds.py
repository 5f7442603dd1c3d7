"""The connection bounds of gateway/slow_clients.py over real sockets on 127.0.0.1 (uvicorn in this process, port 0):
a refused connection answered in the API's envelope from the one error hierarchy (503 too_many_connections, never the
admission queue's 429 overloaded), one client address held to its share of the process's bound, that bound read once
per server, and a request refused in its body (a bad chunk) answered and audited as the client's bad request."""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from aigrid.errors import (
    ApiError,
    InvalidRequest,
    Overloaded,
    RequestHeaderTooLarge,
    RequestTimeout,
    TooManyConnections,
)
from aigrid.gateway import slow_clients
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.relay_response import RelayResponse
from aigrid.gateway.slow_clients import (
    BUSY,
    BUSY_ADDRESS,
    HEAD_TOO_LARGE,
    NOT_HTTP,
    NOT_HTTP_BODY,
    TIMED_OUT,
    HeadDeadline,
)
from aigrid.gateway.stopping import GatewayServer, gateway_server
from aigrid.spec.models import QuotaSpec
from tests.gateway.conftest import FakeEngine, spec_in
from tests.gateway.metered_gateway import TENANT, balance, metered_gateway, the_one_record
from tests.serving import serving

BOUND = 8
SHARE = 4  # half of BOUND: the default share


class Bounded(HeadDeadline):
    """The process's bound lowered to BOUND; loopback counted like any address (the test's clients are 127.0.0.x)."""

    max_connections = staticmethod(lambda: BOUND)
    exempt = staticmethod(lambda host: False)


class BoundedLoopbackExempt(HeadDeadline):
    max_connections = staticmethod(lambda: BOUND)


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, source: str) -> Conn:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def served(connection: Conn) -> bool:
    reader, writer = connection
    writer.write(b"GET / HTTP/1.1\r\nhost: gw\r\n\r\n")
    return (await asyncio.wait_for(reader.readuntil(b"ok"), 30)).startswith(b"HTTP/1.1 200 ")


async def refused(port: int, source: str) -> bytes:
    """What a connection from `source` is answered before it sends anything (then closed)."""
    reader, writer = await connect(port, source)
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def admitted(port: int, source: str) -> Conn:
    """A connection from `source` the server kept and served: one accepted before the server saw the closes that made
    room (a loaded machine may take a while) is refused, and the next is tried."""
    async with asyncio.timeout(30):
        while True:
            connection = await connect(port, source)
            try:
                if await served(connection):
                    return connection
            except asyncio.IncompleteReadError as e:
                assert e.partial in (BUSY, BUSY_ADDRESS)
            connection[1].close()
            await asyncio.sleep(0.05)


def server_of(gw: Gateway) -> GatewayServer:
    """stopping.gateway_server of `gw`, as `aigrid up` builds it, without the signal handlers it sets on the loop."""
    loop = asyncio.get_running_loop()
    try:
        return gateway_server(build_app(gw), gw)
    finally:
        for sig in (2, 15):  # stop_on_signals' handlers, off this test's loop
            loop.remove_signal_handler(sig)


def close(connections: list[Conn]) -> None:
    for _, writer in connections:
        writer.close()


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A whole HTTP/1.1 answer's status, headers and JSON body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, orjson.loads(body)


def test_a_refused_connection_is_the_error_hierarchys_503_not_the_sheds_429() -> None:
    """Before: a hand-written body, 503 with `overloaded` (type server_error), the code the admission queue sheds
    with as 429 (errors.Overloaded) and the WebSocket bounds answer 429: one code, two statuses."""
    for answer in (BUSY, BUSY_ADDRESS):
        status, headers, body = parse(answer)
        err = TooManyConnections("", headers={"retry-after": "1"})
        assert (status, body["error"]["type"], body["error"]["code"]) == (err.status, err.type, err.code) == (
            503, "service_unavailable_error", "too_many_connections")
        assert body["error"]["code"] != Overloaded.code
        assert headers["retry-after"] == "1" and headers["x-should-retry"] == "true"
        assert headers["connection"] == "close" and int(headers["content-length"]) == len(answer.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(("answer", "err"), [(TIMED_OUT, RequestTimeout), (HEAD_TOO_LARGE, RequestHeaderTooLarge),
                                              (NOT_HTTP, InvalidRequest)], ids=["408", "431", "400"])
def test_every_answer_written_outside_the_app_is_the_error_hierarchys(answer: bytes, err: type[ApiError]) -> None:
    """Before: the 408 of a head's deadline and the 431 of a head growing past its size were hand-written with no
    body (content-length 0): no envelope saying what was wrong, no x-should-retry."""
    status, headers, body = parse(answer)
    assert (status, body["error"]["type"], body["error"]["code"]) == (err.status, err.type, err.code)
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert headers["x-should-retry"] == ("true" if err("").should_retry() else "false")
    assert int(headers["content-length"]) == len(answer.partition(b"\r\n\r\n")[2])


@pytest.fixture
async def bounded() -> AsyncIterator[tuple[int, Any]]:
    async with serving(Starlette(routes=[Route("/", _ok)]), http=Bounded, lifespan="off", log_level="error") as s:
        yield s.port, s.server


async def test_one_address_holds_at_most_its_share_of_the_connections(
        bounded: tuple[int, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Before: one client could hold every connection the process takes (each re-opened within the head deadline),
    every other client refused."""
    port, server = bounded
    mine = [await connect(port, "127.0.0.2") for _ in range(SHARE)]
    assert await refused(port, "127.0.0.2") == BUSY_ADDRESS  # its share held: refused as accepted
    others = [await connect(port, "127.0.0.3") for _ in range(SHARE)]  # another address has its own share
    assert all([await served(c) for c in [*mine, *others]])
    assert await refused(port, "127.0.0.4") == BUSY  # the process's bound: every address together
    assert "from 127.0.0.2" in caplog.text
    close(mine[:1])
    mine[1:] = mine[1:] + [await admitted(port, "127.0.0.2")]  # room for that address again once one closed
    close([*mine, *others])
    book = server.server_state.aigrid_connections
    async with asyncio.timeout(30):
        while book.held:  # the table keeps only addresses with a connection open
            await asyncio.sleep(0.02)


class BoundedThirds(Bounded):
    """Room for three addresses' shares of SHARE each, so that two may be refused for theirs at once."""

    max_connections = staticmethod(lambda: 3 * SHARE)
    connection_share = 0.34  # int(12 * 0.34) = 4 = SHARE


async def test_an_addresss_refusal_is_logged_per_address_naming_it_its_count_and_the_setting(
        caplog: pytest.LogCaptureFixture) -> None:
    """An operator behind a proxy on another host (an ingress, Docker's 172.17.0.1) sees every client refused from
    the proxy's address: the line must say which address, what it holds and which setting to raise. Before: one
    line every 10 s for every refusal of the process together, naming only the last address (here: 127.0.0.3's
    refusals said nothing of 127.0.0.2's), and no hint of what to set. Now one line per address (at most one a minute
    each, not one per connection), each naming its address, its count and the setting."""
    async with serving(Starlette(routes=[Route("/", _ok)]), http=BoundedThirds, lifespan="off",
                       log_level="error") as s:
        held = [await connect(s.port, source) for source in ("127.0.0.2", "127.0.0.3") for _ in range(SHARE)]
        assert all([await served(c) for c in held])
        for source in ("127.0.0.2", "127.0.0.3") * 3:
            assert await refused(s.port, source) == BUSY_ADDRESS
        close(held)
    lines = [r.getMessage() for r in caplog.records if "connection_share_per_address" in r.getMessage()]
    assert len(lines) == 2, lines
    for line, source in zip(lines, ("127.0.0.2", "127.0.0.3"), strict=True):
        assert f"from {source} " in line and f"it holds {SHARE}," in line, line
        assert "gateway.connection_share_per_address 0.34 of this process's bound 12" in line, line
        assert "set gateway.connection_share_per_address to 1" in line, line


def test_an_addresss_refusals_within_its_minute_are_counted_into_its_next_line() -> None:
    book = slow_clients.Connections(8)
    assert book.refused_address("10.0.0.1", 100.0) == [("10.0.0.1", 1)]  # the first: a line at once
    assert [book.refused_address("10.0.0.1", 100.0 + t) for t in (1, 30, 59)] == [[], [], []]
    assert book.refused_address("10.0.0.2", 101.0) == [("10.0.0.2", 1)]  # another address has its own minute
    assert book.refused_address("10.0.0.2", 102.0) == []  # counted, not yet told
    assert book.refused_address("10.0.0.1", 160.0) == [("10.0.0.1", 4)]  # the three between its lines, and this one
    assert set(book.refused_from) == {"10.0.0.1", "10.0.0.2"}
    # 10.0.0.2's line is a minute old: it leaves the table, its untold refusal told (it was dropped untold)
    assert book.refused_address("10.0.0.1", 230.0) == [("10.0.0.1", 1), ("10.0.0.2", 1)]
    assert set(book.refused_from) == {"10.0.0.1"}


async def test_an_addresss_refusals_not_yet_told_are_logged_when_it_leaves_the_table(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """127.0.0.2 refused twice within its minute (the second counted for its next line), then, past that minute,
    127.0.0.3 refused: 127.0.0.2 leaves the table and its second refusal is logged then, not dropped untold (which
    it was: two lines for three refusals)."""
    clock = [1000.0]
    monkeypatch.setattr(slow_clients, "time", type("Clock", (), {"monotonic": staticmethod(lambda: clock[0])}))
    async with serving(Starlette(routes=[Route("/", _ok)]), http=BoundedThirds, lifespan="off",
                       log_level="error") as s:
        held = [await connect(s.port, source) for source in ("127.0.0.2", "127.0.0.3") for _ in range(SHARE)]
        assert all([await served(c) for c in held])
        for at, source in ((1000.0, "127.0.0.2"), (1001.0, "127.0.0.2"), (1000.0 + 61, "127.0.0.3")):
            clock[0] = at
            assert await refused(s.port, source) == BUSY_ADDRESS
        close(held)
    lines = [r.getMessage() for r in caplog.records if "connection_share_per_address" in r.getMessage()]
    told = sorted(line.split(" since ")[0] for line in lines)
    assert told == ["refused 1 connection(s) from 127.0.0.2"] * 2 + ["refused 1 connection(s) from 127.0.0.3"], lines


async def test_loopback_is_not_held_to_a_share() -> None:
    """A proxy or sidecar on the same host brings every client from a loopback address: it has the process's
    whole bound (as before), the same for the spec's share."""
    async with serving(Starlette(routes=[Route("/", _ok)]), http=BoundedLoopbackExempt, lifespan="off",
                       log_level="error") as s:
        held = [await connect(s.port, "127.0.0.2") for _ in range(BOUND)]
        assert all([await served(c) for c in held])
        assert await refused(s.port, "127.0.0.2") == BUSY
        close(held)


async def test_the_bound_is_read_once_per_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: getrlimit (a system call) on every accepted connection."""
    calls: list[int] = []
    getrlimit = resource.getrlimit

    def counted(which: int) -> tuple[int, int]:
        if which == resource.RLIMIT_NOFILE:
            calls.append(which)
        return getrlimit(which)

    monkeypatch.setattr(resource, "getrlimit", counted)
    async with serving(Starlette(routes=[Route("/", _ok)]), http=HeadDeadline, lifespan="off", log_level="error") as s:
        for _ in range(5):
            connection = await connect(s.port, "127.0.0.1")
            assert await served(connection)
            close([connection])
    assert len(calls) == 1


async def test_the_share_comes_from_the_spec(tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """stopping.gateway_server (`aigrid up`, each worker) bounds its server by gateway.connection_share_per_address."""
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"connection_share_per_address": 0.25})})
    gw = build_gateway(spec, fakes)
    server = server_of(gw)
    book = server.server_state.aigrid_connections
    assert (book.cap, book.per_address) == (slow_clients.max_connections(), int(slow_clients.max_connections() * 0.25))
    assert book.exempt("127.0.0.1") and book.exempt("::1") and not book.exempt("10.0.0.1")




@pytest.mark.parametrize("pause", [False, True], ids=["in-one-piece", "while-the-app-reads"])
async def test_a_request_refused_in_its_body_is_the_clients_400_audited_and_settled(
        tmp_path: Path, fakes: dict[str, FakeEngine], pause: bool) -> None:
    """A chat request whose chunked body has a chunk size that is not hex: llhttp refuses it after its head reached
    the app. Before: the connection was closed under the app (NOT_HTTP with no request id), whose read saw a client
    gone: audited `client_closed`. Now the app's read raises the 400, answered in the envelope with its request id,
    one record `error:invalid_request`, nothing charged, no engine asked."""
    gw = await metered_gateway(tmp_path, fakes, QuotaSpec(requests_per_min=1000, tokens_per_min=1_000_000))
    try:
        async with serving(build_app(gw), http=HeadDeadline, lifespan="off", log_level="error") as s:
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            head = "".join(f"{k}: {v}\r\n" for k, v in TENANT.items()).encode()
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                         b"transfer-encoding: chunked\r\n" + head + b"\r\n5\r\n{\"mod\r\n")
            if pause:  # the app waits in its read of the body when the bad chunk comes
                await writer.drain()
                await asyncio.sleep(0.3)
            writer.write(b"zz\r\nel\"\r\n0\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
        status, headers, body = parse(answer)
        assert status == 400 and body["error"]["code"] == "invalid_request", answer
        assert body["error"]["message"] == NOT_HTTP_BODY and headers["connection"] == "close"
        row = await the_one_record(gw)
        assert row["outcome"] == "error:invalid_request" and headers["x-request-id"] == row["request_id"]
        assert await balance(gw) == 0 and all(not e.received for e in fakes.values())
    finally:
        await gw.guard.stop()


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()  # until the client closes
    await websocket.close()


UPGRADE = (b"GET /ws HTTP/1.1\r\nhost: gw\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
           b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")


async def test_a_websocket_leaves_its_addresss_count_when_upgraded() -> None:
    """Its connection ends under the WebSocket protocol, which does not count it down: without this the count of its
    address never fell, and an address that had opened its share of WebSockets was refused for good."""
    app = Starlette(routes=[Route("/", _ok), WebSocketRoute("/ws", _socket)])
    async with serving(app, http=Bounded, lifespan="off", log_level="error") as s:
        for _ in range(SHARE + 1):  # more than the address's share, one after the other
            reader, writer = await connect(s.port, "127.0.0.2")
            writer.write(UPGRADE)
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).startswith(b"HTTP/1.1 101 ")
            assert "127.0.0.2" not in s.server.server_state.aigrid_connections.held
            writer.close()
            await writer.wait_closed()
        assert await served(await admitted(s.port, "127.0.0.2"))


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    """A host or home is given a /64: counted by address, one client had a share per address it chose (2^64 of
    them), the process's bound its only bound. IPv4 (mapped too) by address; loopback not counted."""
    book = slow_clients.Connections(BOUND)
    same = [f"2001:db8:1:2:{i:x}::1" for i in range(1, SHARE + 2)]
    assert [book.take(h, 1)[0] for h in same] == [None] * SHARE + [BUSY_ADDRESS]
    assert book.take("2001:db8:1:3::1", 1) == (None, "2001:db8:1:3::/64")  # the next /64: its own share
    assert book.take("::ffff:10.0.0.1", 1) == (None, "::ffff:10.0.0.1") and book.take("::1", 1) == (None, None)
    book.give_back("2001:db8:1:2::/64")
    assert book.take(same[-1], 1)[0] is None  # room again once one of that /64 ended


async def test_a_body_refused_after_a_streamed_answer_began_cuts_it_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    """A route that streams without reading its chunked body: its only read is the stream's disconnect watch
    (relay_response._disconnected). A bad chunk then can no longer be answered 400: the answer is cut as a client
    gone, its cleanup run. Before: the watch's read raised InvalidRequest, re-raised by RelayResponse's cleanup
    before it closed the body: 'Exception in ASGI application' with a traceback, the body's close skipped."""
    closed = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            while True:
                await asyncio.sleep(0.02)
                yield b""
        finally:
            closed.set()

    async def streams(request: Request) -> RelayResponse:
        return RelayResponse(chunks(), 200, {"content-type": "text/plain"})

    async with serving(Starlette(routes=[Route("/", streams, methods=["POST"])]), http=HeadDeadline, lifespan="off",
                       log_level="error") as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"POST / HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n")
        got = await asyncio.wait_for(reader.readuntil(b"first"), 30)
        writer.write(b"zz\r\n")
        got += await asyncio.wait_for(reader.read(), 30)
        writer.close()
        await asyncio.wait_for(closed.wait(), 30)
    assert got.startswith(b"HTTP/1.1 200 ") and b"invalid_request" not in got
    assert "Exception in ASGI application" not in caplog.text


async def test_connections_refused_as_accepted_are_counted_in_the_rejected_metric(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """Before: a 503 too_many_connections was answered by the connection's protocol before any route, so
    aigrid_requests_rejected_total never saw it (a gateway refusing half its clients showed no refusal). Now
    gateway_server points the server's Connections at that counter: each refusal, for its address's share or the
    process's bound, is counted once as it is refused."""
    gw = build_gateway(spec_in(tmp_path), fakes)
    wired = server_of(gw).server_state.aigrid_connections

    def counted() -> float:
        return gw.metrics.registry.get_sample_value("aigrid_requests_rejected_total",
                                                    {"code": "too_many_connections"}) or 0.0

    assert wired.counted is not None and counted() == 0.0
    async with serving(Starlette(routes=[Route("/", _ok)]), http=Bounded, lifespan="off", log_level="error") as s:
        # this server's bounds (BOUND, every address counted) with the gateway's counting
        s.server.server_state.aigrid_connections = slow_clients.Connections(BOUND, exempt=lambda host: False,
                                                                           counted=wired.counted)
        held = [await connect(s.port, "127.0.0.2") for _ in range(SHARE)]
        assert all([await served(c) for c in held])
        assert counted() == 0.0  # connections taken are not counted
        assert await refused(s.port, "127.0.0.2") == BUSY_ADDRESS  # its share held
        held += [await connect(s.port, "127.0.0.3") for _ in range(SHARE)]
        assert all([await served(c) for c in held[SHARE:]])
        assert await refused(s.port, "127.0.0.4") == BUSY  # the process's bound
        close(held)
    assert counted() == 2.0
    assert b'aigrid_requests_rejected_total{code="too_many_connections"} 2.0' in gw.metrics.exposition()


class FullDisk:
    """A metric whose every write raises as a multiprocess metrics file that cannot grow (full disk) does."""

    def __init__(self) -> None:
        self.writes = 0

    def labels(self, *_: Any) -> FullDisk:
        return self

    def inc(self, *_: Any) -> None:
        self.writes += 1
        raise OSError(28, "No space left on device")

    set = inc


async def test_failed_counts_of_refused_connections_and_circuits_log_a_bounded_number_of_lines(
        tmp_path: Path, fakes: dict[str, FakeEngine], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: each refused connection whose count failed (a metrics file that cannot grow) logged its own WARNING,
    and so did each circuit opening: a connection flood on a full disk was one line per refusal. Both counts now go
    through the gateway's one guarded writer (Proxy.written, observe.MetricsWrites): counted, one WARNING for the
    first failure (and each WARN_EVERY-th), the refusals answered all the same."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    gw = build_gateway(spec_in(tmp_path), fakes)
    rejected, opens = FullDisk(), FullDisk()
    monkeypatch.setattr(gw.metrics, "rejected", rejected)
    monkeypatch.setattr(gw.metrics, "circuit_opens", opens)
    wired = server_of(gw).server_state.aigrid_connections
    n = 20
    async with serving(Starlette(routes=[Route("/", _ok)]), http=Bounded, lifespan="off", log_level="error") as s:
        s.server.server_state.aigrid_connections = slow_clients.Connections(BOUND, exempt=lambda host: False,
                                                                           counted=wired.counted)
        held = [await connect(s.port, "127.0.0.2") for _ in range(SHARE)]
        assert all([await served(c) for c in held])
        assert [await refused(s.port, "127.0.0.2") for _ in range(n)] == [BUSY_ADDRESS] * n  # answered all the same
        close(held)
    endpoint = gw.spec.endpoints[0].id
    for _ in range(n):
        gw.store.on_circuit_open(endpoint)
    told = [r.getMessage() for r in caplog.records if "not written" in r.getMessage() or "not counted" in r.getMessage()]
    assert rejected.writes == n and opens.writes == n and len(told) == 1, told  # 40 failures, one line
    assert "No space left on device" in told[0] and gw.proxy.written.failed == 2 * n
