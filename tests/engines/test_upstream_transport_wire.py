"""Http1Transport against an engine that does not send one answer per request (docs/reliability.md, "The wire"):
interim responses, a switch of protocols, bytes after a response's end or before a request, a new connection closed
unanswered. Each ends bounded, and no request is ever handed bytes that were not its own answer."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence

import httpx
import orjson
import pytest

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.upstream_transport import SWITCHED, Http1Transport
from aigrid.errors import EngineUnavailable

READ = "read"
"""A script step: read one request (its head and Content-Length body)."""
CLOSE = "close"
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


def answer(body: bytes) -> bytes:
    return OK + b"content-length: %d\r\n\r\n" % len(body) + body


class Scripted:
    """A raw engine on 127.0.0.1: connection i plays scripts[i] (the last one for any later connection): bytes are
    written, a float sleeps, READ reads a request, CLOSE closes."""

    def __init__(self, *scripts: Sequence[bytes | float | str]) -> None:
        self.scripts = scripts
        self.connections = 0
        self.requests = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        try:
            for step in script:
                if step == READ:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    await reader.readexactly(length)
                    self.requests += 1
                elif step == CLOSE:
                    return
                elif isinstance(step, float):
                    await asyncio.sleep(step)
                else:
                    assert isinstance(step, bytes)
                    writer.write(step)
                    await writer.drain()
            await asyncio.sleep(5)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def serving(engine: Scripted) -> AsyncIterator[Http1Transport]:
    server = await asyncio.start_server(engine._serve, "127.0.0.1", 0)
    engine.port = server.sockets[0].getsockname()[1]
    transport = Http1Transport()
    try:
        yield transport
    finally:
        await transport.aclose()
        server.close()


async def ask(transport: Http1Transport, port: int) -> tuple[int, dict[bytes, bytes], bytes]:
    """One POST: the status, headers and whole body."""
    head = [b"POST /v1/chat/completions HTTP/1.1", b"host: engine", b"content-length: 2"]
    status, headers, body = await transport.exchange(("127.0.0.1", port), head, b"{}", TIMEOUTS)
    try:
        return status, dict(headers), b"".join([chunk async for chunk in body])
    finally:
        await body.aclose()


@pytest.mark.parametrize("interim", [
    [b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"hello")],  # in the same read
    [b"HTTP/1.1 100 Continue\r\n\r\n", 0.1, answer(b"hello")],  # read alone, the answer later
    [b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n", 0.1,
     b"HTTP/1.1 102 Processing\r\n\r\n" + answer(b"hello")],
], ids=["100 with the answer", "100 then the answer", "103 and 102"])
async def test_interim_responses_are_skipped_and_the_final_one_is_the_answer(interim: list[bytes | float]) -> None:
    """Before: an interim response read alone was the answer (status 100, an empty body, the real answer's bytes
    read after its end); one read with the answer lent it its headers (`link`)."""
    engine = Scripted([READ, *interim, READ, answer(b"again")])
    async for transport in serving(engine):
        status, headers, body = await ask(transport, engine.port)
        assert (status, body) == (200, b"hello") and b"link" not in headers
        assert await ask(transport, engine.port) == (200, {b"content-type": b"application/json",
                                                           b"content-length": b"5"}, b"again")
        assert engine.connections == 1  # a whole answer after interim ones: the connection is reused


async def test_interim_responses_without_end_are_cut_at_the_heads_bound() -> None:
    engine = Scripted([READ, *[b"HTTP/1.1 100 Continue\r\n\r\n" * 4096] * 16])  # 1.6 MB of interim heads
    async for transport in serving(engine):
        with pytest.raises(httpx.RemoteProtocolError, match="head is larger than"):
            await ask(transport, engine.port)


@pytest.mark.parametrize("switch", [
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nraw bytes",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
], ids=["with upgrade headers", "bare"])
async def test_a_switch_of_protocols_is_a_protocol_error(switch: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """Before: status 101 handed back as an answer (the gateway relayed a 101 to its client, audited `ok`), and
    httptools' upgrade exception escaped the read callback (asyncio's "Fatal error" with a traceback)."""
    engine = Scripted([READ, switch], [READ, answer(b"ok")])
    async for transport in serving(engine):
        with pytest.raises(httpx.RemoteProtocolError, match=re.escape(SWITCHED)):
            await ask(transport, engine.port)
        assert (await ask(transport, engine.port))[2] == b"ok"
    assert "Fatal error" not in caplog.text


@pytest.mark.parametrize("script", [
    [READ, answer(b"abc") + answer(b"SMUGGLED"), READ, answer(b"mine")],  # a second response glued to the first
    [READ, answer(b"abc"), 0.1, answer(b"SMUGGLED"), READ, answer(b"mine")],  # one sent while the connection idles
], ids=["glued", "while idle"])
async def test_bytes_after_an_answer_are_not_read_and_the_connection_is_not_reused(
        script: list[bytes | float | str], caplog: pytest.LogCaptureFixture) -> None:
    """Before: a second response glued to the first was read as part of its body (b"abcSMUGGLED") and the
    connection pooled; one sent while it idled was dropped when it was reused, and whatever of it was still on its
    way then became the next request's answer."""
    engine = Scripted(script, [READ, answer(b"mine")])
    async for transport in serving(engine):
        assert (await ask(transport, engine.port))[2] == b"abc"
        await asyncio.sleep(0.3)
        assert (await ask(transport, engine.port))[2] == b"mine"
        assert engine.connections == 2
    assert "a response it was not asked for" in caplog.text  # logged: the engine's fault


async def test_a_response_before_the_request_is_not_its_answer() -> None:
    """Before: a response the engine sent as the connection opened was the answer (b"EARLY"), and the real answer's
    body was read after it."""
    engine = Scripted([answer(b"EARLY"), READ, answer(b"late")])
    async for transport in serving(engine):
        with pytest.raises(httpx.RemoteProtocolError, match="not asked for"):
            await ask(transport, engine.port)


async def test_a_new_connection_closed_unanswered_is_not_resent_but_a_pooled_one_is() -> None:
    """Before: a request whose new connection the engine closed after reading it was sent again (the engine read it
    twice: a generation paid twice on a hosted engine). A kept-alive connection closed is resent, as before."""
    engine = Scripted([READ, CLOSE])
    async for transport in serving(engine):
        client = httpx.AsyncClient(transport=transport)
        adapter = OpenAICompatEngine("vllm", f"http://127.0.0.1:{engine.port}", client, transport=transport)
        body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        with pytest.raises(EngineUnavailable, match="closed a new connection without answering"):
            async with adapter.open("/v1/chat/completions", body):
                pass
        assert engine.requests == 1

    pooled = Scripted([READ, answer(b"{}"), READ, CLOSE], [READ, answer(b"{}")])
    async for transport in serving(pooled):
        adapter = OpenAICompatEngine("vllm", f"http://127.0.0.1:{pooled.port}", httpx.AsyncClient(),
                                     transport=transport)
        for _ in range(2):  # the second on the kept connection, which the engine closes: resent on a new one
            async with adapter.open("/v1/chat/completions", b"{}") as up:
                assert up.status == 200 and b"".join([c async for c in up.body]) == b"{}"
        assert (pooled.connections, pooled.requests) == (2, 3)


async def test_on_httpxs_client_too_a_new_connection_closed_unanswered_is_not_resent() -> None:
    """An engine not on Http1Transport (https, or no transport given: httpx's own client, openai_compat._send), whose
    httpcore says the same "Server disconnected without sending a response" for a new connection and a pooled one.
    Before: a request whose new connection the engine closed after reading it was sent again (read twice); a pooled
    one is still resent, as on Http1Transport."""
    engine = Scripted([READ, CLOSE])
    async for _ in serving(engine):
        async with httpx.AsyncClient() as client:
            adapter = OpenAICompatEngine("vllm", f"http://127.0.0.1:{engine.port}", client)
            with pytest.raises(EngineUnavailable, match="Server disconnected"):
                async with adapter.open("/v1/chat/completions", b"{}"):
                    pass
        assert engine.requests == 1

    pooled = Scripted([READ, answer(b"{}"), READ, CLOSE], [READ, answer(b"{}")])
    async for _ in serving(pooled):
        async with httpx.AsyncClient() as client:
            adapter = OpenAICompatEngine("vllm", f"http://127.0.0.1:{pooled.port}", client)
            for _ in range(2):  # the second on the kept connection, which the engine closes: resent on a new one
                async with adapter.open("/v1/chat/completions", b"{}") as up:
                    assert up.status == 200 and b"".join([c async for c in up.body]) == b"{}"
        assert (pooled.connections, pooled.requests) == (2, 3)


@pytest.fixture(autouse=True)
def _warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
