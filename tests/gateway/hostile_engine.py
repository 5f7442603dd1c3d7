"""A FAKE, HOSTILE engine for fault-injection tests: a real HTTP/1.1 socket on 127.0.0.1 that writes exactly the
raw bytes a test scripts (a broken status line, HTML, invalid JSON, a lying Content-Length, a connection closed
mid-event, a stream that stalls), so the gateway's real adapter (OpenAICompatEngine on its own transport) reads
them as it would read a broken engine's. Not an emulator: nothing here models timing or a model.

A script is a list of steps: bytes are written, a float sleeps that many seconds, CLOSE closes the connection.
`answer(path, request)` returns the script of one POST; GET /health answers 200 and GET /metrics `metrics`
(both scriptable the same way through `gets`)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import orjson

from aigrid.engines.protocol import Engine
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.spec.load import parse_spec
from tests.gateway.test_engine_tls import private_authority

CLOSE = object()
Step = bytes | float | object
Script = Sequence[Step]


def head(status: int = 200, content_type: str = "application/json", *, length: int | None = None,
         chunked: bool = False, extra: Sequence[str] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}", *extra]
    if length is not None:
        lines.append(f"content-length: {length}")
    if chunked:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(body: bytes, status: int = 200, content_type: str = "application/json",
          extra: Sequence[str] = ()) -> Script:
    """One answer with an honest Content-Length."""
    return [head(status, content_type, length=len(body), extra=extra) + body]


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


END = b"0\r\n\r\n"


def sse(*events: bytes | dict, done: bool = True) -> list[bytes]:
    """`data:` events (a dict as JSON), each one chunk, then [DONE] and the chunked body's end."""
    out = [chunk(b"data: " + (orjson.dumps(e) if isinstance(e, dict) else e) + b"\n\n") for e in events]
    return [*out, *([chunk(b"data: [DONE]\n\n")] if done else []), END]


def stream(*steps: Step) -> Script:
    """A chunked text/event-stream answer: its head, then the steps (chunks, pauses, CLOSE)."""
    return [head(200, "text/event-stream", chunked=True), *steps]


def token(text: object, finish: object = None, **extra: object) -> dict:
    return {"id": "chatcmpl-h", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}], **extra}


def answer_of(content: object = "Hello", usage: object = None, **choice: object) -> dict:
    """A whole chat completion; `usage` None: a sane one."""
    return {"id": "chatcmpl-h", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", **choice}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6} if usage is None else usage}


METRICS = b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"


class HostileEngine:
    """Serve the scripted bytes; `requests` counts the POSTs it read."""

    def __init__(self, answer: Callable[[str, dict], Script]) -> None:
        self.answer = answer
        self.gets: dict[str, Callable[[], Script]] = {
            "/health": lambda: whole(b"ok", content_type="text/plain"),
            "/metrics": lambda: whole(METRICS, content_type="text/plain")}
        self.requests = 0
        self.open_connections = 0
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self, tls: ssl.SSLContext | None = None) -> HostileEngine:
        """Listen on 127.0.0.1; with `tls` (a server context) behind TLS, an https URL."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                length = 0
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if method == "POST":
                    self.requests += 1
                    script = self.answer(path, orjson.loads(body) if body else {})
                else:
                    script = self.gets.get(path, lambda: whole(b"", 404))()
                for step in script:
                    if step is CLOSE:
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)  # type: ignore[arg-type]
                        await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self.open_connections -= 1
            writer.close()


@contextlib.asynccontextmanager
async def adapter(tmp_path: Path, script: Script, *, tls: bool = False, kind: str = "openai",
                  gateway: Mapping[str, object] | None = None, context: int = 8192) -> AsyncIterator[Engine]:
    """The gateway's adapter for one endpoint (of engine `kind`, its model's `context`) on a hostile engine answering
    every POST with `script`, built from a spec (its `gateway` settings) as a gateway builds it (upstream(spec),
    build_engines); with `tls`, the engine behind TLS with a private authority's certificate (test_engine_tls.py)."""
    ca_file, context_tls = private_authority(tmp_path) if tls else (None, None)
    fake = await HostileEngine(lambda p, r: script).start(tls=context_tls)
    endpoint = {"id": "remote", "site": "fra", "model": "m", "engine": kind, "url": fake.url, "slots": 8,
                **({"tls_ca_file": str(ca_file)} if ca_file else {})}
    spec = parse_spec({"name": "hostile", "gateway": {"network": "none", "scrape_interval_s": 60, **(gateway or {})},
                       "models": {"m": {"family": "m", "params_b": 1.0, "context": context}},
                       "sites": {"fra": {"name": "Frankfurt", "lat": 50.1, "lon": 8.7, "jurisdiction": "EU"}},
                       "endpoints": [endpoint], "security": {"audit": None}}, "hostile")
    up = upstream(spec)
    try:
        yield build_engines(spec, {}, up)["remote"]
    finally:
        await up.aclose()
        await fake.stop()
