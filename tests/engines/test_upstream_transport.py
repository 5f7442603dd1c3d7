"""Http1Transport under OpenAICompatEngine: streams, keep-alive reuse, failures mapped like httpx's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest

from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.upstream_transport import Http1Transport
from aigrid.errors import EngineStreamBroken, EngineUnavailable

BODY = orjson.dumps({"model": "m", "stream": True, "max_tokens": 3,
                     "messages": [{"role": "user", "content": "hi"}]})


async def test_streams_and_reuses_one_connection() -> None:
    server, emu = await serve(EmulatorConfig(decode_base_ms=1, prefill_base_ms=1), port=0)
    url = f"http://127.0.0.1:{bound_port(server)}"
    transport = Http1Transport()
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            engine = OpenAICompatEngine("vllm", url, client)
            for _ in range(3):
                async with engine.open("/v1/chat/completions", BODY) as up:
                    assert up.status == 200 and up.headers["content-type"] == "text/event-stream"
                    raw = b"".join([c async for c in up.body])
                assert raw.count(b'"content":" tok"') == 3 and raw.endswith(b"data: [DONE]\n\n")
            assert transport.idle("127.0.0.1", bound_port(server)) == 1
            stats = await engine.stats()
            assert stats.ttft_count == 3 and await engine.health()
    finally:
        server.close()


async def test_unreachable_and_broken_streams_are_mapped() -> None:
    async with httpx.AsyncClient(transport=Http1Transport()) as client:
        with pytest.raises(EngineUnavailable):
            async with OpenAICompatEngine("vllm", "http://127.0.0.1:9", client).open("/v1/completions", BODY):
                pass

    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"6\r\ndata: \r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=Http1Transport()) as client:
            engine = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client)
            with pytest.raises(EngineStreamBroken):
                async with engine.open("/v1/completions", BODY) as up:
                    async for _ in up.body:
                        pass
    finally:
        server.close()


async def test_a_closed_idle_connection_is_replaced() -> None:
    served = 0

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")  # keep-alive, then closes anyway
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(once_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=Http1Transport()) as client:
            engine = OpenAICompatEngine("openai", f"http://127.0.0.1:{port}", client)
            assert await engine.health()
            await asyncio.sleep(0.05)
            assert await engine.health()
    finally:
        server.close()
    assert served == 2


async def _stream_from(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                       read_timeout_s: float, got: bytearray) -> None:
    """Serve `handler` on a loopback port and stream a completion from it through OpenAICompatEngine on
    Http1Transport with the given read timeout, appending the body's bytes to `got`."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=Http1Transport(), timeout=httpx.Timeout(read_timeout_s)) as client:
            engine = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client)
            async with engine.open("/v1/completions", BODY) as up:
                async for chunk in up.body:
                    got += chunk
    finally:
        server.close()


async def _answer_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A fake engine reads the request's head and answers with the head of a chunked event stream."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")


async def test_a_silent_engine_times_out() -> None:
    async def head_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer_chunked(reader, writer)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    got = bytearray()
    with pytest.raises(EngineUnavailable, match="ReadTimeout"):
        await _stream_from(head_only, 0.1, got)
    assert got == b""


async def test_the_read_timeout_counts_each_wait_not_the_whole_stream() -> None:
    """Chunks 0.06 s apart for 0.36 s under a 0.15 s read timeout arrive whole; then 1 s of silence times out
    (one timer per connection, moved from wait to wait, as a timer per wait would)."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer_chunked(reader, writer)
        for i in range(6):
            await asyncio.sleep(0.06)
            event = b"data: %d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    got = bytearray()
    with pytest.raises(EngineStreamBroken, match="ReadTimeout"):
        await _stream_from(trickle, 0.15, got)
    assert got == b"".join(b"data: %d\n\n" % i for i in range(6))


async def test_connections_per_origin_are_capped_with_a_pool_timeout() -> None:
    server, _ = await serve(EmulatorConfig(decode_base_ms=100, prefill_base_ms=1), port=0)
    port = bound_port(server)
    transport = Http1Transport(max_connections=2)
    body = orjson.dumps({"model": "m", "stream": True, "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]})
    try:
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=0.1)) as client:
            engine = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client)
            async with engine.open("/v1/chat/completions", body) as a, engine.open("/v1/chat/completions", body):
                assert transport.in_use("127.0.0.1", port) == 2
                with pytest.raises(EngineUnavailable, match="PoolTimeout"):  # a third waits 0.1 s, then gives up
                    async with engine.open("/v1/chat/completions", body):
                        pass
                patient = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client,
                                             timeout=httpx.Timeout(5.0, pool=5.0))
                waiting = asyncio.create_task(_read_all(patient, body))  # waits for a free connection
                await asyncio.sleep(0.02)
                assert not waiting.done()
                _ = [c async for c in a.body]
            assert (await waiting).endswith(b"data: [DONE]\n\n")  # it got the connection a freed
            assert transport.in_use("127.0.0.1", port) == 0
    finally:
        server.close()


async def _read_all(engine: OpenAICompatEngine, body: bytes) -> bytes:
    async with engine.open("/v1/chat/completions", body) as up:
        return b"".join([c async for c in up.body])


async def test_the_direct_path_streams_and_maps_failures_like_the_client_path() -> None:
    """Proxied POSTs skip httpx's client layer (OpenAICompatEngine(transport=...)); same answers, same errors."""
    server, _ = await serve(EmulatorConfig(decode_base_ms=1, prefill_base_ms=1), port=0)
    port = bound_port(server)
    transport = Http1Transport()
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            engine = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client, transport=transport)
            for _ in range(2):
                async with engine.open("/v1/chat/completions", BODY) as up:
                    assert up.status == 200 and up.headers["content-type"] == "text/event-stream"
                    raw = b"".join([c async for c in up.body])
                assert raw.count(b'"content":" tok"') == 3 and raw.endswith(b"data: [DONE]\n\n")
            assert transport.idle("127.0.0.1", port) == 1 and transport.in_use("127.0.0.1", port) == 0
            with pytest.raises(EngineUnavailable):
                async with OpenAICompatEngine("vllm", "http://127.0.0.1:9", client, transport=transport).open(
                        "/v1/completions", BODY):
                    pass
    finally:
        server.close()
