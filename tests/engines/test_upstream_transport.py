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
    """Chunks 0.1 s apart for 0.8 s under a 0.5 s read timeout arrive whole; then 2 s of silence times out
    (one timer per connection, moved from wait to wait, as a timer per wait would). The engine and the
    timer share one event loop: a pause of the loop as long as the timeout less the gap (a loaded machine, a
    garbage collection) makes both due at once and the timer wins, so that margin is 0.4 s (it was 0.09 s:
    chunks 0.06 s apart under 0.15 s)."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer_chunked(reader, writer)
        for i in range(8):
            await asyncio.sleep(0.1)
            event = b"data: %d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    got = bytearray()
    with pytest.raises(EngineStreamBroken, match="ReadTimeout"):
        await _stream_from(trickle, 0.5, got)
    assert got == b"".join(b"data: %d\n\n" % i for i in range(8))


async def test_a_whole_answer_s_head_is_awaited_past_the_read_timeout() -> None:
    """An engine sends a whole (non-streamed) answer's head once the answer is whole: a CPU engine writing 4,096
    tokens at 10 a second takes 410 s. The head was awaited for the read timeout (300 s in the gateway), so such
    an answer failed there, below the proxy's own deadline for it (first_byte_timeout.whole_max_s, 600 s), and
    the next candidate began the generation again. The proxy bounds the head now; the read timeout bounds the
    silences between the body's reads, as before."""
    async def slow_whole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.6)  # twice the read timeout below: the answer is being written
        body = b'{"choices": []}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow_whole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = Http1Transport()
    try:
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(0.3)) as client:
            engine = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client, transport=transport,
                                        head_timeout_s=2.0)
            async with engine.open("/v1/completions", BODY) as up:  # the proxy's direct path
                assert b"".join([c async for c in up.body]) == b'{"choices": []}'
            late = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client, transport=transport,
                                      head_timeout_s=0.3)
            with pytest.raises(EngineUnavailable, match="response head"):
                async with late.open("/v1/completions", BODY):
                    pass
    finally:
        server.close()


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


async def _sink_stream(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                       read_timeout_s: float, got: bytearray, by_sink: list[bytes], take: int = 1000) -> None:
    """As _stream_from on the direct path, but after the first chunk the reads go to a sink attached to the body (the gateway's
    relay from the read callback) until it is detached; the sink asks to be detached after `take` reads.
    Whatever follows is read with __anext__ as before."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def sink(data: bytes) -> bool:
        by_sink.append(data)
        got.extend(data)
        return len(by_sink) < take

    try:
        transport = Http1Transport()
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(read_timeout_s)) as client:
            engine = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client, transport=transport)
            async with engine.open("/v1/completions", BODY) as up:
                got += await anext(up.body)
                detached = up.body.attach(sink)  # type: ignore[attr-defined]
                assert detached is not None
                await detached
                async for chunk in up.body:
                    got += chunk
    finally:
        server.close()


def _trickle(n: int, gap_s: float, then: float | None) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                                    Awaitable[None]]:
    """n events `gap_s` apart, then the end of the body (then=None) or `then` seconds of silence and a close."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer_chunked(reader, writer)
        for i in range(n):
            await asyncio.sleep(gap_s)
            event = b"data: %d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        if then is None:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        else:
            await asyncio.sleep(then)
        writer.close()
    return handler


EVENTS = b"".join(b"data: %d\n\n" % i for i in range(8))


async def test_a_sink_takes_the_reads_from_the_callback_and_the_end_is_read_as_before() -> None:
    got, by_sink = bytearray(), []
    await _sink_stream(_trickle(8, 0.02, None), 5.0, got, by_sink)
    assert bytes(got) == EVENTS
    assert len(by_sink) >= 5  # every read after the first, each handed over once (the last may end the body)


async def test_a_sink_that_asks_to_stop_leaves_the_rest_to_the_reader_in_order() -> None:
    got, by_sink = bytearray(), []
    await _sink_stream(_trickle(8, 0.02, None), 5.0, got, by_sink, take=2)
    assert bytes(got) == EVENTS and len(by_sink) == 2


async def test_a_silent_engine_times_out_with_a_sink_attached() -> None:
    """The read timeout counts from the last read the sink took; the silence then surfaces as a ReadTimeout
    from __anext__, mapped as without a sink. Events 0.1 s apart for 0.8 s under a 0.5 s timeout: a pause of
    the shared event loop shorter than 0.4 s cannot make the timer fire between two events (the margin was
    0.1 s: 0.05 s apart under 0.15 s)."""
    got, by_sink = bytearray(), []
    started = asyncio.get_running_loop().time()
    with pytest.raises(EngineStreamBroken, match="ReadTimeout"):
        await _sink_stream(_trickle(8, 0.1, 3.0), 0.5, got, by_sink)
    assert bytes(got) == EVENTS
    assert asyncio.get_running_loop().time() - started < 2.5  # the timeout at 1.3 s, not the engine's close at 3.8 s


async def test_an_engine_dying_with_a_sink_attached_breaks_the_stream() -> None:
    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _trickle(3, 0.02, 0.0)(reader, writer)

    got, by_sink = bytearray(), []
    with pytest.raises(EngineStreamBroken, match="ReadError"):
        await _sink_stream(dies, 5.0, got, by_sink)
    assert bytes(got) == EVENTS[: len(b"data: 0\n\n") * 3]
