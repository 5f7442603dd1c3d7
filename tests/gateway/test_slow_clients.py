"""A client that sends its request slowly (gateway/slow_clients.py): its head within a deadline or the connection
is answered 408 and closed; its body within a deadline or the API's own 408. uvicorn runs in this process on a
socket bound here (port 0), with the deadline shortened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aigrid.gateway import slow_clients
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.slow_clients import (
    HEAD_TIMEOUT_S,
    HEAD_TOO_LARGE,
    MAX_HEAD_BYTES,
    HeadDeadline,
    timed_out,
)
from tests.gateway.conftest import FakeEngine, _no_sleep, audit_rows, spec_in, trickled
from tests.serving import serving


class QuickDeadline(HeadDeadline):
    head_timeout_s = 0.4


TIMED_OUT = timed_out(QuickDeadline.head_timeout_s)
"""QuickDeadline's 408, naming its 0.4 s."""


async def _read_then_ok(request: Request) -> PlainTextResponse:
    await request.body()  # the whole body first: an answer only once it came
    return PlainTextResponse("ok")


ok = Starlette(routes=[Route("/", _read_then_ok, methods=["GET", "POST"])])


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(ok, http=QuickDeadline, lifespan="off", log_level="error") as s:
        yield s.port


ANSWER_S = 30.0
"""How long a test waits for an answer that comes in well under a second on an idle machine: generous for a loaded one,
and past uvicorn's keep-alive (5 s) and the real head deadline (10 s), so a deadline not applied still fails a test."""


async def answer(reader: asyncio.StreamReader, within_s: float = ANSWER_S) -> bytes:
    """What the server sends before it closes the connection (or within `within_s`)."""
    return await asyncio.wait_for(reader.read(), within_s)


@pytest.mark.parametrize("sent", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"],
                         ids=["nothing", "half a head"])
async def test_a_head_not_complete_in_time_is_answered_408_and_closed(port: int, sent: bytes) -> None:
    """uvicorn kept such a connection open for good (40 s and more with the real gateway); now the deadline."""
    started = asyncio.get_running_loop().time()  # before the connection: the server's deadline starts after it
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    got = await answer(reader)
    # the deadline in force, not HEAD_TIMEOUT_S (the 408 said "within 10 s" whatever the protocol's was)
    assert got == TIMED_OUT and b"within 0.4 s" in got and f"within {HEAD_TIMEOUT_S:g} s".encode() not in got
    # QuickDeadline's 0.4 s, not the default HEAD_TIMEOUT_S (10 s): a loaded machine only adds to the 0.4
    assert 0.3 < asyncio.get_running_loop().time() - started < HEAD_TIMEOUT_S / 2
    writer.close()


async def test_each_request_on_a_kept_connection_has_the_deadline_from_its_first_byte(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"ok"), ANSWER_S)
    assert first.startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.3)  # within the keep-alive time: the connection is still open
    writer.write(b"GET / HTTP/1.1\r\nHost:")  # the next request's head starts and stalls
    assert await answer(reader) == TIMED_OUT
    writer.close()


async def test_a_head_in_time_is_served_however_long_the_answer_takes(port: int) -> None:
    """The deadline is the head's: a body that follows within its own time and the answer are not cut."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\nab")
    await asyncio.sleep(0.6)  # past the head's deadline, with the head complete
    writer.write(b"cd")
    assert (await asyncio.wait_for(reader.readuntil(b"ok"), ANSWER_S)).startswith(b"HTTP/1.1 200")
    writer.close()


@pytest.mark.parametrize("headers", [
    b"Authorization: Bearer " + b"a" * (MAX_HEAD_BYTES + 1024) + b"\r\n",  # one header line
    b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(MAX_HEAD_BYTES // 40)),  # many
], ids=["one header", "many headers"])
async def test_a_head_larger_than_the_limit_is_answered_431_and_never_served(port: int, headers: bytes) -> None:
    """uvicorn took a request head of any size (64 MiB served, and 5.8 s of the event loop parsing it: httptools
    joins a header value's pieces as they arrive, in time quadratic in its length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\n" + headers + b"\r\n")
    got = await answer(reader)
    assert got.startswith(b"HTTP/1.1 431 ") and b"request_header_too_large" in got, got[:200]
    assert got.partition(b"\r\n\r\n")[2] == HEAD_TOO_LARGE.partition(b"\r\n\r\n")[2]  # one answer, however refused
    writer.close()


async def test_a_head_growing_past_the_limit_is_refused_before_it_ends(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ")
    for _ in range(MAX_HEAD_BYTES // 16384 + 1):  # never ends its line: the deadline would answer 408
        writer.write(b"a" * 16384)
        await asyncio.sleep(0.01)
    assert await answer(reader) == HEAD_TOO_LARGE
    writer.close()


async def test_a_large_head_within_the_limit_is_served(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"ok"), ANSWER_S)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_body_not_sent_in_time_is_the_apis_408_and_audited(tmp_path: Path, fakes: dict[str, FakeEngine],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that trickles its body held its request (authenticated, not yet admitted) for good: now a 408 in
    OpenAI's envelope, recorded as every refused request is; no engine asked."""
    monkeypatch.setattr(slow_clients, "BODY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(slow_clients, "MIN_BODY_RATE", float("inf"))
    gw = build_gateway(spec_in(tmp_path), fakes, sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", content=trickled(
                b'{"model": "smollm2-135m", ', b'"messages": [{"role": "user", "content": "hi"}]}', 1.0),
                headers={"content-type": "application/json"})
        assert r.status_code == 408, r.text
        assert r.json()["error"]["code"] == "request_timeout" and "within 0.3 s (26 bytes came)" in r.json()["error"]["message"]
        assert (await audit_rows(gw))[-1]["outcome"] == "error:request_timeout"
        assert all(not e.received for e in fakes.values())
    finally:
        await gw.guard.stop()


def test_a_body_has_a_minute_and_its_size_at_64_kib_a_second() -> None:
    """A chat body of the gateway's largest (4 MiB) has about two minutes; a file or message batch of 100 MiB about
    27 (each takes a quarter of that at 1 Mbit/s); a body sent in chunks has what the route's limit would take."""
    mib = 1024 * 1024
    assert slow_clients.body_deadline_s(None, 4 * mib) == slow_clients.body_deadline_s(4 * mib, 4 * mib) == 124.0
    assert slow_clients.body_deadline_s(2_000, 4 * mib) < 61
    assert 26 * 60 < slow_clients.body_deadline_s(100 * mib, 100 * mib) < 28 * 60


async def test_an_upload_not_sent_in_time_is_the_apis_408(tmp_path: Path, fakes: dict[str, FakeEngine],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The Files API read its multipart upload without a deadline: the same 408, the file not kept."""
    monkeypatch.setattr(slow_clients, "BODY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(slow_clients, "MIN_BODY_RATE", float("inf"))
    gw = build_gateway(spec_in(tmp_path), fakes, sleep=_no_sleep)
    await gw.guard.start()
    head = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b\r\nContent-Disposition: '
            b'form-data; name="file"; filename="in.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n{"custom_id": ')

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/files", content=trickled(head, b'"a"}\r\n--b--\r\n', 1.0),
                             headers={"content-type": "multipart/form-data; boundary=b"})
            assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout", r.text
            assert (await audit_rows(gw))[-1]["outcome"] == "error:request_timeout"
            assert (await c.get("/v1/files")).json()["data"] == []
    finally:
        await gw.guard.stop()
