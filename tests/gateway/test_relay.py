"""The streamed answer's data plane (relay.py) in front of the ENGINE EMULATOR on real sockets: an engine that
frames SSE with CRLF streams through event by event; a client that reads one byte a second holds the engine
back instead of growing the gateway's memory; the relay passes the engine's own bytes when nothing changes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.bench.procs import Proc, rss_mb
from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.engines.sse import SseDecoder, SseError
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.output_filter import OutputFilter
from aigrid.gateway.relay import EventPipe
from aigrid.gateway.relay_response import ClientWire
from aigrid.gateway.slow_clients import HeadDeadline
from aigrid.gateway.stopping import CutAnswers
from aigrid.gateway.wiring import UPSTREAM_TIMEOUT, Upstream, build_engines, upstream
from aigrid.spec.load import parse_spec
from tests.ports import on_a_free_port
from tests.serving import serving


def spec_for(urls: list[str], port: int = 8080) -> dict:
    return {"name": "relay", "gateway": {"host": "127.0.0.1", "port": port, "network": "none",
                                         "scrape_interval_s": 60, "max_output_tokens": 200_000},
            "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
            "sites": {f"s{i}": {"name": f"S{i}", "lat": 50.0, "lon": 8.0 + i, "jurisdiction": "EU"}
                      for i in range(len(urls))},
            "endpoints": [{"id": f"emu{i}", "site": f"s{i}", "model": "emulated", "engine": "vllm", "url": u,
                           "slots": 64} for i, u in enumerate(urls)],
            "security": {"audit": None}}


@contextlib.asynccontextmanager
async def gateway_on_socket(urls: list[str], up: Upstream | None = None,
                            http: type[asyncio.Protocol] | None = None) -> AsyncIterator[tuple[Gateway, str]]:
    up = up or upstream()
    spec = parse_spec(spec_for(urls), "relay")
    gw = build_gateway(spec, build_engines(spec, {}, up))
    try:
        # wrapped as server.py and workers.py serve it: the wire must be found through CutAnswers too
        async with serving(CutAnswers(build_app(gw)), http=http) as s:
            await gw.scraper.scrape_once()
            yield gw, s.url
    finally:
        await up.aclose()


BODY = {"model": "emulated", "stream": True, "max_tokens": 12, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_crlf_engine_streams_event_by_event() -> None:
    server, _ = await serve(EmulatorConfig(decode_base_ms=60, prefill_base_ms=1), sse_line_end=b"\r\n")
    try:
        async with gateway_on_socket([f"http://127.0.0.1:{bound_port(server)}"]) as (gw, base):
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                decoder, arrivals, texts = SseDecoder(), [], []
                async with c.stream("POST", "/v1/chat/completions", json=BODY) as r:
                    assert r.status_code == 200
                    decision = r.headers["x-aigrid-decision"]
                    async for raw in r.aiter_raw():
                        for ev in decoder.feed(raw):
                            arrivals.append(time.monotonic())
                            if ev.data != b"[DONE]":
                                obj = orjson.loads(ev.data)
                                texts += [ch["delta"].get("content") or "" for ch in obj["choices"]]
                                assert "usage" not in obj  # the gateway asked for it: metered, then hidden
        assert "".join(texts) == " tok" * 12
        # 12 decode steps of 60 ms: buffered to the end, every event would arrive within a few ms
        assert arrivals[-1] - arrivals[0] > 0.4
        record = gw.decisions.get(decision)
        assert record is not None and record.status == "ok"
        assert record.usage is not None and record.usage["completion_tokens"] == 12
    finally:
        server.close()


def test_the_lean_path_passes_the_engines_own_bytes() -> None:
    pipe = EventPipe(OutputFilter(False, strip_usage=True), sse=True, track=False)
    crlf = b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
    assert pipe.feed(crlf[:10]) == b""  # held back until the event is whole
    assert pipe.feed(crlf[10:] + crlf[:5]) == crlf
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\r\n\r\n'
    # a read where an event changes (the usage chunk dropped) is re-framed, with LF
    lf = crlf.replace(b"\r\n", b"\n")
    assert pipe.feed(crlf[5:] + usage + b"data: [DONE]\r\n\r\n") == lf + b"data: [DONE]\n\n"
    assert pipe.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_escapes_in_an_answers_text_keep_the_lean_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read holding `\\u00` was read as one that may hold an escaped `usage` key, each event built and parsed:
    Go's encoding/json (Ollama's) writes < > & as \\u003c \\u003e \\u0026, so a code answer's every token read left
    the lean path. Only an escape of a letter of `usage` does now; that key is still read."""
    pipe = EventPipe(OutputFilter(False, strip_usage=True), sse=True, track=False)
    first = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    assert pipe.feed(first) == first

    def built(self: SseDecoder, raw: bytes) -> None:
        raise AssertionError("left the lean path")

    monkeypatch.setattr(SseDecoder, "feed", built)
    text = b'data: {"choices":[{"delta":{"content":"if a \\u003c b \\u0026\\u0026 caf\\u00e9"}}]}\n\n'
    assert pipe.feed(text) == text
    monkeypatch.undo()
    usage = b'data: {"choices":[],"us\\u0061ge":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    assert pipe.feed(usage) == b""  # read, charged, and hidden from a client that did not ask
    assert pipe.usage == {"prompt_tokens": 3, "completion_tokens": 2}


@pytest.mark.parametrize("track", [False, True])
def test_an_event_of_json_null_is_dropped(track: bool) -> None:
    """llama.cpp opens the stream of a list of prompts with `data: null`, which the OpenAI SDK hands to the
    client as None: the relay drops it, alone in a read or among other events."""
    pipe = EventPipe(None, sse=True, track=track)
    event = b'data: {"choices":[{"index":1,"text":" a"}]}\n\n'
    assert pipe.feed(b"data: null\n\n") == b""
    assert pipe.feed(b"data:null\n\n" + event) == event
    assert pipe.feed(event) == event


def test_continuation_state_is_text_and_count_not_events() -> None:
    pipe = EventPipe(None, sse=True, track=True)
    for word in ("Hello", " wor", "ld"):
        pipe.feed(b'data: {"id":"x","created":5,"choices":[{"delta":{"content":"%s"}}]}\n\n' % word.encode())
    d = pipe.delivered
    assert d.sent_text() == "Hello world" and d.chunks == 3 and d.stream_id == "x" and not d.done


def test_a_continuation_engine_gets_its_own_quiet_time() -> None:
    """The quiet bound (gateway.stream_idle_s of reads without a data event) is the engine's: an engine that went
    silent after half an event (or a keep-alive) broke at the read timeout, the same span, and the engine that
    continued the answer was cut at its first comment or half event for the first one's silence ("no data event",
    its failure counted, the answer not continued). Now each engine's quiet time starts with its own reads."""
    now = [0.0]
    pipe = EventPipe(None, sse=True, track=True, quiet_s=10, clock=lambda: now[0])
    pipe.feed(b'data: {"id":"x","choices":[{"delta":{"content":"Hi"}}]}\n\n')
    pipe.feed(b'data: {"id":"x","cho')  # half an event, then nothing: the read timeout (10 s) breaks it
    now[0] = 12.0
    pipe.continuation(True)
    pipe.feed(b": ping\n\n")  # before: SseError, no data event for 10 s
    assert pipe.past is None
    now[0] = 23.0
    with pytest.raises(SseError):  # ... and the continuing engine's own quiet is bounded as the first one's
        pipe.feed(b": ping\n\n")
    assert pipe.past is not None and "no data event" in pipe.past


def test_an_expired_answer_is_cut_at_its_next_read() -> None:
    """gateway.stream_max_s: StreamRelay's timer calls expire(); the next read, a lean one (`data: {}`, which resets
    the quiet time), is cut as past the byte bound is (the same test, no clock read per engine read)."""
    pipe = EventPipe(None, sse=True, track=False, most_bytes=1 << 20, quiet_s=10, max_s=60,
                     clock=lambda: pytest.fail("a lean read reads no clock"))
    for _ in range(100):
        assert pipe.feed(b"data: {}\n\n") == b"data: {}\n\n"
    pipe.expire()
    with pytest.raises(SseError, match="streamed for more than 60 s"):
        pipe.feed(b"data: {}\n\n")
    assert pipe.past == "the answer streamed for more than 60 s"


def _slow_reader(port: int, body: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the client really is slow
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%b" % (len(body), body))
    return sock


@pytest.mark.skipif(sys.platform != "linux", reason="reads RSS from /proc")
def test_a_client_reading_one_byte_a_second_does_not_grow_the_gateway(tmp_path: Path) -> None:
    """The emulated engine sends 200,000 tokens (~30 MB of SSE) within seconds; the client reads one byte a
    second. The gateway must hold the engine back (TCP backpressure) instead of buffering the answer."""
    def started(name: str, argv: list[str], ready: str) -> Callable[[int], tuple[Proc, int]]:
        def start(port: int) -> tuple[Proc, int]:  # on a new port if another process took it (tests/ports.py)
            proc = Proc(name, [arg.replace("{port}", str(port)) for arg in argv], tmp_path).start()
            try:
                proc.wait_ready(ready.replace("{port}", str(port)))
            except BaseException:
                proc.stop()
                raise
            return proc, port

        return start

    emu, emu_port = on_a_free_port(started("emulator", [
        sys.executable, "-m", "aigrid.engines.emulator_cli", "--port", "{port}", "--decode-base-ms", "0",
        "--decode-ms-per-seq", "0.02", "--prefill-base-ms", "1"], "http://127.0.0.1:{port}/health"))
    gw, sock = None, None
    try:
        def gateway(port: int) -> tuple[Proc, int]:
            spec = tmp_path / "spec.yaml"
            spec.write_bytes(orjson.dumps(spec_for([f"http://127.0.0.1:{emu_port}"], port)))  # JSON is YAML
            return started("gateway", [sys.executable, "-m", "aigrid.bench.gateway_launch", str(spec), "--port",
                                       "{port}"], "http://127.0.0.1:{port}/healthz")(port)

        gw, gw_port = on_a_free_port(gateway)
        for _ in range(3):  # warm-up: what the first requests allocate once
            assert httpx.post(f"http://127.0.0.1:{gw_port}/v1/chat/completions", json=BODY, timeout=30).is_success
        start = rss_mb(gw.pid)
        sock = _slow_reader(gw_port, orjson.dumps({**BODY, "max_tokens": 200_000, "ignore_eos": True}))

        def produced() -> bool:  # (not httpx's default 5 s: the emulator shares a loaded machine)
            metrics = httpx.get(f"http://127.0.0.1:{emu_port}/metrics", timeout=30).text
            return 'vllm:generation_tokens_total{model_name="emulated"} 200036' in metrics

        reads = 0
        # one byte a second, six seconds and on until the engine has produced its whole answer (about 4 s after
        # the request; a fixed six left 2 s for a loaded machine, and the size was then read with less sent)
        while reads < 6 or not produced():
            assert reads < 60, "the engine never produced its whole answer"
            assert sock.recv(1)
            time.sleep(1.0)
            reads += 1
        grown = rss_mb(gw.pid) - start
        assert grown < 8.0, f"the gateway grew by {grown:.1f} MB behind a slow client"
        # the engine has produced its whole answer: the bytes the client has not taken wait outside the gateway
        metrics = httpx.get(f"http://127.0.0.1:{emu_port}/metrics", timeout=30).text
        assert 'vllm:generation_tokens_total{model_name="emulated"} 200036' in metrics
    finally:
        if sock is not None:
            sock.close()
        if gw is not None:
            gw.stop()
        emu.stop()


_VOLATILE = re.compile(rb'"(id|created)":("[^"]*"|\d+)')


async def _stream(base: str, body: dict) -> tuple[bytes, str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            return b"".join([raw async for raw in r.aiter_raw()]), r.headers["x-aigrid-decision"]


class _Counted:
    """Counts the HTTP chunks the relay wrote from the engine's read callback (ClientWire.write)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes = 0
        real = ClientWire.write

        def write(wire: ClientWire, body: bytes) -> bool:
            self.writes += 1
            return real(wire, body)

        monkeypatch.setattr(ClientWire, "write", write)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
async def test_the_wire_sends_the_bytes_send_would(monkeypatch: pytest.MonkeyPatch, line_end: bytes) -> None:
    """The same answers relayed from the engine's read callback (ClientWire) and through ASGI `send` only:
    the client gets the same bytes (ids and timestamps aside), the decision the same outcome and usage."""
    server, _ = await serve(EmulatorConfig(decode_base_ms=3, prefill_base_ms=1), sse_line_end=line_end)
    counted = _Counted(monkeypatch)
    try:
        async with gateway_on_socket([f"http://127.0.0.1:{bound_port(server)}"]) as (gw, base):
            answers = {}
            for wire in (True, False):
                if not wire:
                    monkeypatch.setattr(ClientWire, "of", classmethod(lambda cls, send, gone: None))
                before = counted.writes
                raw, decision = await _stream(base, {**BODY, "max_tokens": 20})
                record = gw.decisions.get(decision)
                assert record is not None and record.status == "ok"
                assert record.usage is not None and record.usage["completion_tokens"] == 20
                # a read that holds the usage chunk is re-framed with LF (test above): where a CRLF engine's last
                # text event shares that read depends on timing, in either path, so line ends are compared as LF
                answers[wire] = _VOLATILE.sub(b"", raw).replace(b"\r\n", b"\n")
                assert (counted.writes > before) == wire  # the wire carried most of the answer, or none of it
        assert answers[True] == answers[False]
        assert answers[True].count(b" tok") == 20 and b"usage" not in answers[True]
    finally:
        server.close()


async def test_the_wire_is_found_under_the_gateways_own_http_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid up` and each worker serve with slow_clients.HeadDeadline, whose request cycles are its RefusableCycle
    (3c867ed2): ClientWire.of took uvicorn's own cycle class only, so there no answer went over the wire."""
    server, _ = await serve(EmulatorConfig(decode_base_ms=3, prefill_base_ms=1))
    counted = _Counted(monkeypatch)
    try:
        async with gateway_on_socket([f"http://127.0.0.1:{bound_port(server)}"], http=HeadDeadline) as (gw, base):
            raw, decision = await _stream(base, {**BODY, "max_tokens": 20})
            record = gw.decisions.get(decision)
            assert record is not None and record.status == "ok" and raw.count(b" tok") == 20
            assert counted.writes > 0
    finally:
        server.close()


class _Recorded:
    """The client's transport, every write kept (what went out in each system call the server asked for)."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport, self.writes = transport, writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


@pytest.mark.parametrize("wire", [True, False])
async def test_a_streamed_answers_head_goes_out_with_its_first_event(monkeypatch: pytest.MonkeyPatch,
                                                                      wire: bool) -> None:
    """uvicorn writes the head at `http.response.start` and the relay the first event after it: two writes on the
    client's socket (two system calls, two wake-ups of the client) where one does. Over the wire the head waits
    for the first event and both go in one write; without one (ASGI `send` only) the head is written as uvicorn
    writes it. Either way the client gets the same whole answer."""
    writes: list[bytes] = []

    class Recording(HeadDeadline):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_Recorded(transport, writes))  # type: ignore[arg-type]

    if not wire:
        monkeypatch.setattr(ClientWire, "of", classmethod(lambda cls, send, gone: None))
    server, _ = await serve(EmulatorConfig(decode_base_ms=3, prefill_base_ms=1))
    try:
        async with gateway_on_socket([f"http://127.0.0.1:{bound_port(server)}"], http=Recording) as (gw, base):
            raw, decision = await _stream(base, {**BODY, "max_tokens": 5})
            record = gw.decisions.get(decision)
            assert record is not None and record.status == "ok" and raw.count(b" tok") == 5
        heads = [w for w in writes if w.startswith(b"HTTP/1.1 200")]
        assert len(heads) == 1 and heads[0].endswith(b"\r\n\r\n") != wire
        assert (b"data: " in heads[0]) == wire
        assert b"".join(writes).count(b"HTTP/1.1 200") == 1
    finally:
        server.close()


async def test_an_engine_dying_mid_stream_is_continued_over_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    emulators = [await serve(EmulatorConfig(decode_base_ms=20, prefill_base_ms=1)) for _ in range(2)]
    counted = _Counted(monkeypatch)
    try:
        urls = [f"http://127.0.0.1:{bound_port(s)}" for s, _ in emulators]
        async with gateway_on_socket(urls) as (gw, base):
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                async with c.stream("POST", "/v1/chat/completions", json={**BODY, "max_tokens": 30}) as r:
                    serving = int(r.headers["x-aigrid-endpoint"].removeprefix("emu"))
                    decision = r.headers["x-aigrid-decision"]
                    decoder, texts, killed = SseDecoder(), [], False
                    async for raw in r.aiter_raw():
                        for ev in decoder.feed(raw):
                            if ev.data != b"[DONE]":
                                obj = orjson.loads(ev.data)
                                assert "error" not in obj, obj
                                texts += [ch["delta"].get("content") or "" for ch in obj["choices"]]
                        if len(texts) >= 8 and counted.writes and not killed:  # mid-stream, on the wire
                            killed = True  # the engine dies
                            server, emu = emulators[serving]
                            emu.kill()
                            server.close()
        record = gw.decisions.get(decision)
        assert record is not None and record.status == "ok" and " -> " in record.served_by
        # d pieces delivered, the rest continued elsewhere with max_tokens 30 - d; the emulator's text repeats,
        # so the rewriter takes the continuation's first d pieces for an echo of the delivered text (what
        # llama.cpp sends) and drops them: the same answer the relay gives through `send` alone
        d = record.attempts[-1]["continuation_after_chars"] // len(" tok")
        assert d >= 8 and "".join(texts) == " tok" * (30 - d)
    finally:
        for server, _ in emulators:
            server.close()


async def test_a_client_leaving_mid_stream_releases_the_engine_over_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = await serve(EmulatorConfig(decode_base_ms=10, prefill_base_ms=1))
    counted = _Counted(monkeypatch)
    try:
        async with gateway_on_socket([f"http://127.0.0.1:{bound_port(server)}"]) as (gw, base):
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                async with c.stream("POST", "/v1/chat/completions", json={**BODY, "max_tokens": 1000, "ignore_eos": True}) as r:
                    decision = r.headers["x-aigrid-decision"]
                    async for _ in r.aiter_raw():
                        if counted.writes >= 3:
                            break  # hang up while the relay writes from the read callback
            for _ in range(1500):  # polled up to 30 s: a loaded machine is late, not wrong
                record = gw.decisions.get(decision)
                if gw.store.inflight("emu0") == 0 and record is not None and record.status == "client_closed":
                    break
                await asyncio.sleep(0.02)
            assert gw.store.inflight("emu0") == 0
            assert record is not None and record.status == "client_closed", record
    finally:
        server.close()


async def test_a_body_without_a_sink_is_written_on_the_wire_by_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines behind httpx's own transport (https:// engines) cannot hand reads over from a callback: the
    relay's task reads them and writes each on the wire, with the bytes `send` would have sent."""
    server, _ = await serve(EmulatorConfig(decode_base_ms=3, prefill_base_ms=1))
    counted = _Counted(monkeypatch)
    try:
        answers = {}
        for wire in (True, False):
            if not wire:
                monkeypatch.setattr(ClientWire, "of", classmethod(lambda cls, send, gone: None))
            up = Upstream(httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=UPSTREAM_TIMEOUT,
                                            trust_env=False), None)
            async with gateway_on_socket([f"http://127.0.0.1:{bound_port(server)}"], up) as (gw, base):
                before = counted.writes
                raw, decision = await _stream(base, {**BODY, "max_tokens": 20})
                record = gw.decisions.get(decision)
                assert record is not None and record.status == "ok" and record.usage is not None
                assert record.usage["completion_tokens"] == 20
                assert (counted.writes > before) == wire  # the reads, written on the wire by the task
                answers[wire] = _VOLATILE.sub(b"", raw)
        assert answers[True] == answers[False] and answers[True].count(b" tok") == 20
    finally:
        server.close()


def _ending(fakes: dict, last: bytes | None) -> None:
    """Every engine's [DONE] replaced by `last` (None: left out)."""
    for f in fakes.values():
        orig = f._sse

        async def sse(req: dict, orig=orig):  # type: ignore[no-untyped-def]
            async for b in orig(req):
                if b != b"data: [DONE]\n\n":
                    yield b
                elif last is not None:
                    yield last

        f._sse = sse


@pytest.mark.parametrize("last", [None, b"data: [DONE]", b"data: [DONE]\n"])
@pytest.mark.parametrize("extra", [{}, {"response_format": {"type": "json_object"}}])
async def test_a_whole_answer_is_whole_without_a_well_framed_done(tmp_path: Path, last: bytes | None,
                                                                   extra: dict) -> None:
    """An engine that ends with its finish_reason and no [DONE] (TGI before 2.2), or a [DONE] without its
    blank line: the answer is whole, also when the relay does not track the text (response_format: no
    continuation possible), so no interruption event is appended and nothing counts against the engine."""
    import random

    from aigrid.spec.load import load_spec
    from tests.gateway.conftest import DEMO, _no_sleep, spec_in
    from tests.gateway.fake_engine import FakeEngine

    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    _ending(fakes, last)
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "stream": True,
                                                       "messages": [{"role": "user", "content": "hi"}], **extra})
    assert r.status_code == 200 and "stream_interrupted" not in r.text, r.text[-300:]
    record = gw.decisions.get(r.headers["x-aigrid-decision"])
    assert record is not None and record.status == "ok" and not any(a.get("error") for a in record.attempts)


async def test_a_failure_tells_the_client_why_but_never_where_the_engines_are(tmp_path: Path) -> None:
    """Two engines at closed ports on the real transports: the 502 names the endpoints and the cause, not their
    addresses (a connect error's own text says host:port); the decision keeps them for the operator."""
    # bound and never listening for the whole test: connections to them are refused, and no other process can
    # take them meanwhile (free_port() let them go at once)
    closed = [socket.socket(), socket.socket()]
    for s in closed:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in closed]
    spec = parse_spec(spec_for([f"http://127.0.0.1:{p}" for p in ports]), "closed")
    up = upstream(spec)
    try:
        gw = build_gateway(spec, build_engines(spec, {}, up))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json={**BODY, "stream": False})
    finally:
        await up.aclose()
        for s in closed:
            s.close()
    assert r.status_code == 502, r.text
    message = r.json()["error"]["message"]
    assert "emu0" in message and "emu1" in message and "127.0.0.1" not in message, message
    assert not any(str(p) in message for p in ports), message
    record = gw.decisions.get(r.headers["x-aigrid-decision"])
    assert record is not None and any(f"127.0.0.1:{ports[0]}" in str(a.get("error")) for a in record.attempts)


async def test_an_interrupted_stream_tells_the_client_why_but_never_where(tmp_path: Path) -> None:
    """The in-stream error event after an engine broke mid-answer (no continuation: response_format) carried
    the adapter's repr, its base URL with it."""
    import random

    from aigrid.errors import EngineStreamBroken
    from aigrid.spec.load import load_spec
    from tests.gateway.conftest import DEMO, _no_sleep, spec_in
    from tests.gateway.fake_engine import FakeEngine

    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    for f in fakes.values():
        f.base_url = "http://10.1.2.3:8000"
        orig = f._sse

        async def sse(req: dict, orig=orig):  # type: ignore[no-untyped-def]
            n = 0
            async for b in orig(req):
                yield b
                n += 1
                if n == 2:
                    raise EngineStreamBroken("OpenAICompatEngine(kind='vllm', base_url='http://10.1.2.3:8000'): "
                                             "/v1/chat/completions broke mid-stream: ReadError('reset by 10.1.2.3')")

        f._sse = sse
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "stream": True,
                                                       "messages": [{"role": "user", "content": "hi"}],
                                                       "response_format": {"type": "json_object"}})
    assert "stream_interrupted" in r.text and "broke mid-stream" in r.text
    assert "10.1.2.3" not in r.text and "base_url" not in r.text, r.text[-400:]


@pytest.mark.parametrize(("retry_after", "should_retry"), [("5", None), ("3600", "false")])
async def test_an_engines_own_429_passes_its_retry_after_and_the_gateways_rule(
        tmp_path: Path, retry_after: str, should_retry: str | None) -> None:
    """A hosted engine's rate limit: its Retry-After reaches the client, and past 60 s x-should-retry false
    (an SDK that honours any wait would sleep an hour)."""
    import random
    from contextlib import asynccontextmanager

    from aigrid.engines.protocol import UpstreamResponse
    from aigrid.spec.load import load_spec
    from tests.gateway.conftest import DEMO, _no_sleep, spec_in
    from tests.gateway.fake_engine import FakeEngine

    async def body():  # type: ignore[no-untyped-def]
        yield b'{"error": {"message": "rate limited", "type": "rate_limit_error"}}'

    @asynccontextmanager
    async def limited(path: str, raw: bytes):  # type: ignore[no-untyped-def]
        yield UpstreamResponse(429, {"content-type": "application/json", "retry-after": retry_after}, body())

    fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
    for f in fakes.values():
        f.open = limited  # type: ignore[method-assign]
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json={"model": "smollm2-135m",
                                                       "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429 and r.headers["retry-after"] == retry_after
    assert r.headers.get("x-should-retry") == should_retry


_FINISH = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


@pytest.mark.parametrize("bound", ["bytes", "quiet", "ceiling"])
def test_an_unfinished_event_cut_at_a_bound_does_not_end_the_answer(bound: str) -> None:
    """The end of an answer that broke was read from the engine's raw reads, the start of an event the decoder held
    back (never relayed) included: an engine cut at a bound with `"finish_reason":"` (or a `data: [DONE]` line) in
    an unfinished event had its answer taken as ended (audited ok, the engine not counted, no error for the client).
    Only relayed bytes count now."""
    now = [0.0]
    pipe = EventPipe(None, sse=True, track=False, most_bytes=4096, quiet_s=1, max_s=60, clock=lambda: now[0])
    assert pipe.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
    assert pipe.feed(_FINISH[:-2] + b"\ndata: [DONE]") == b""  # unfinished: held back, nothing relayed
    with pytest.raises(SseError):
        if bound == "bytes":
            pipe.feed(b": " + b"x" * 5000 + b"\n\n")
        elif bound == "quiet":  # the unfinished event's read was the first without a data event
            now[0] = 5.0
            pipe.feed(b"x")
        else:
            pipe.expire()
            pipe.feed(b"\n\n")
    assert pipe.past is not None and not pipe.ended(b"")


def test_a_finish_relayed_just_at_the_ceiling_ends_the_answer() -> None:
    """The honest answer: its finish chunk relayed whole, the ceiling cuts the wait for its [DONE]: it has ended."""
    pipe = EventPipe(None, sse=True, track=False, max_s=60)
    assert pipe.feed(_FINISH[:20]) == b""
    assert pipe.feed(_FINISH[20:]) == _FINISH  # completed across reads
    pipe.expire()
    with pytest.raises(SseError):
        pipe.feed(b"data: [DONE]\n\n")
    assert pipe.ended(b"")


def test_an_event_past_its_bound_is_the_engines_fault() -> None:
    """An event over sse.MAX_EVENT_BYTES fails the stream as the other bounds do: `past` says why (not continued on a
    spare, which was handed what the hostile engine streamed as its prefill)."""
    pipe = EventPipe(None, sse=True, track=False)
    with pytest.raises(SseError):
        for _ in range(5):
            pipe.feed(b'data: {"' + b"x" * (1 << 20))
    assert pipe.past is not None and not pipe.ended(b"")


class _Swallowing:
    """An engine body that swallows the ceiling's cancel, then fails (`fail`: True an EngineError, "bug" any other
    exception) or ends."""

    def __init__(self, fail: bool | str) -> None:
        self.fail = fail

    def __aiter__(self) -> _Swallowing:
        return self

    async def __anext__(self) -> bytes:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        if self.fail == "bug":
            raise RuntimeError("a body's own bug")
        if self.fail:
            from aigrid.errors import EngineStreamBroken
            raise EngineStreamBroken("the engine went away")
        raise StopAsyncIteration


class _Proxy:
    stream_idle_s = 10.0
    stream_max_s = 0.05

    def most_tokens(self, cand: object, record: object) -> None:
        return None

    def most_bytes(self, cand: object, record: object) -> int:
        return 1 << 20

    def isolates(self, cand: object) -> bool:
        return False

    def served_name(self, cand: object) -> str:
        return "m"

    async def abandon(self, opened: object, record: object, reason: str) -> None:
        self.abandoned = reason

    def error_event(self, record: object, message: str) -> bytes:
        return b"event: error\ndata: " + message.encode() + b"\n\n"


@pytest.mark.parametrize("fail", [True, False], ids=["engine-error", "end"])
async def test_a_body_that_swallows_the_ceilings_cancel_leaves_no_cancel_behind(fail: bool) -> None:
    """The ceiling cancels the task's wait for a read; a body that swallowed it, then raised EngineError or ended, had
    the take-back skipped: the task kept a cancel count of 1 (on 3.11 an asyncio.timeout in it then never raises
    TimeoutError). Now taken back on every way out of the read, and the answer cut as past its ceiling."""
    from types import SimpleNamespace

    from aigrid.gateway.relay import StreamRelay

    async def stack_close() -> None:
        return None

    upstream = SimpleNamespace(status=200, headers={"content-type": "text/event-stream"}, body=_Swallowing(fail))
    opened = SimpleNamespace(cand=SimpleNamespace(model="m"), upstream=upstream,
                             stack=SimpleNamespace(aclose=stack_close),
                             first=b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
    record = SimpleNamespace(usage=None)

    async def read_all() -> tuple[bytes, int]:
        relay = StreamRelay(_Proxy(), "/v1/chat/completions", {}, opened, [], record, None)  # type: ignore[arg-type]
        out = b"".join([chunk async for chunk in relay])
        task = asyncio.current_task()
        assert task is not None
        return out, task.cancelling()

    out, cancelling = await asyncio.wait_for(read_all(), 10)
    assert cancelling == 0
    assert b"streamed for more than 0.05 s" in out and b"event: error" in out


async def test_a_body_that_swallows_the_ceilings_cancel_then_raises_anything_leaves_no_cancel_behind() -> None:
    """As above, the body then raising an exception that is neither an EngineError nor its end (a bug): the exception
    goes on (it ends the response) and the cancel is taken back, not left on the task."""
    from types import SimpleNamespace

    from aigrid.gateway.relay import StreamRelay

    upstream = SimpleNamespace(status=200, headers={"content-type": "text/event-stream"}, body=_Swallowing("bug"))
    opened = SimpleNamespace(cand=SimpleNamespace(model="m"), upstream=upstream, stack=None,
                             first=b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')

    async def read_all() -> int:
        relay = StreamRelay(_Proxy(), "/v1/chat/completions", {}, opened, [], SimpleNamespace(usage=None),  # type: ignore[arg-type]
                            None)
        with pytest.raises(RuntimeError, match="own bug"):
            _ = [chunk async for chunk in relay]
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.wait_for(read_all(), 10) == 0


def test_a_finish_in_a_read_cut_at_the_output_filters_bound_does_not_end_the_answer() -> None:
    """A read whose later event is past output_filter.MAX_TEXTS is not relayed, none of it: a finish_reason (or a
    [DONE]) in an earlier event of that read, noted as the events were read (Delivered.finished, .done), had the answer
    taken as ended (audited ok, the engine not counted, the client's stream stopped with neither its end nor an
    error). Its events' end is not the client's."""
    from aigrid.gateway.output_filter import MAX_TEXTS

    pipe = EventPipe(OutputFilter(True, strip_usage=False), sse=True, track=True)
    events = [b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n']
    events += [b'data: {"choices":[{"index":%d,"delta":{"content":"a"}}]}\n\n' % i for i in range(1, MAX_TEXTS + 1)]
    with pytest.raises(SseError, match="texts"):
        pipe.feed(b"".join(events))
    assert pipe.past is not None and not pipe.ended(b"")


def _answer_reads(words: list[str]) -> list[bytes]:
    """An engine's reads for one answer: the first token alone, the rest two events a read, then the finish, the
    usage chunk the gateway asked for and [DONE] in one read (the emulator's and vLLM's shape)."""
    events = [b'data: {"id":"s1","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n'
              % w.encode() for w in words]
    last = (b'data: {"id":"s1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
            b'data: {"id":"s1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":%d}}\n\n'
            b"data: [DONE]\n\n" % len(words))
    return [events[0]] + [b"".join(events[i:i + 2]) for i in range(1, len(events), 2)] + [last]


def test_a_tracked_answer_that_ends_whole_parses_none_of_its_token_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream a continuation may need (track) kept its delivered text by parsing every token event (orjson) as it
    passed, ~24 parses a request for a continuation that rarely happens. The events are kept unparsed now and read
    only when something asks what was delivered (a break, a continuation, a steer): an answer that ends whole is
    never parsed for it, and what is read when asked is what the events told, in order."""
    from aigrid.gateway.continuation import Delivered

    observed: list[object] = []
    real = Delivered.observe
    monkeypatch.setattr(Delivered, "observe", lambda self, obj: (observed.append(obj), real(self, obj))[1])
    pipe = EventPipe(OutputFilter(False, strip_usage=True), sse=True, track=True)
    words = ["Hel", "lo", " wo", "rld", "!"]
    reads = _answer_reads(words)
    out = b"".join(pipe.feed(r) for r in reads)
    assert out.count(b"data: ") == len(words) + 2 and b"usage" not in out  # the usage chunk hidden, as before
    assert pipe.ended(b"") and pipe.usage == {"prompt_tokens": 3, "completion_tokens": 5}
    assert observed == []  # the answer ended whole: no event was parsed for a continuation
    d = pipe.delivered  # asked (a break, a continuation, a steer): every relayed event read, in order
    assert (d.sent_text(), d.chunks, d.stream_id, d.created, d.model, d.finished, d.done) == \
        ("Hello world!", 5, "s1", 7, "m", True, True)
    assert len(observed) == len(words) + 2  # the usage chunk observed too, as it was (no text in it)


def test_delivered_events_kept_unparsed_are_bounded_and_read_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The events kept unparsed are read into the delivered text between reads once they pass UNREAD_MAX_BYTES (a
    long answer does not hold its events, only its text), and a continuation starts from all of them: its events are
    then observed as they pass (relabelled), after those."""
    from aigrid.gateway import relay

    monkeypatch.setattr(relay, "UNREAD_MAX_BYTES", 200)
    pipe = EventPipe(None, sse=True, track=True)
    reads = _answer_reads([f"w{i} " for i in range(40)])
    for r in reads[:-1]:
        pipe.feed(r)
        assert pipe._unread_bytes <= 200 + len(r)
    assert pipe._delivered.chunks > 0  # read in between reads, before anyone asked
    pipe.continuation(True)  # the engine broke: the next one continues from every relayed event
    assert pipe._delivered.sent_text() == "".join(f"w{i} " for i in range(40)) and not pipe._unread
    pipe.feed(b'data: {"id":"other","choices":[{"index":0,"delta":{"content":"w40"}}]}\n\n')
    d = pipe.delivered
    assert d.sent_text().endswith("w39 w40") and d.chunks == 41 and d.stream_id == "s1"
