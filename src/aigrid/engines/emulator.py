"""The engine emulator: an OpenAI-compatible server with realistic timing and almost no cost of its own.

It is an EMULATOR, not an engine: it generates no text. It answers /v1/chat/completions and
/v1/completions (streamed or not, with usage), /v1/models, /health and Prometheus /metrics in vLLM's names,
with the timing of a continuous-batching engine (emulator_model.py). It exists so that a gateway's own
overhead can be measured in isolation: the emulator must spend far less CPU per token than any gateway.

Why not an ASGI framework: the server is an asyncio.Protocol over httptools (the parser uvicorn uses),
so one token costs one transport.write() of bytes encoded once per request; no per-chunk JSON, no
per-request task, no framework middleware. See docs/benchmarks.md for the comparison with xpyd-sim.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
from collections import deque
from typing import Any

import httptools
import orjson

from aigrid.engines.emulator_model import EmulatedEngine, EmulatorConfig, Job, Sink

CHARS_PER_TOKEN = 4
"""Prompt tokens are estimated as ceil(characters / 4): the emulator has no tokenizer."""
TOKEN_TEXT = " tok"
_ids = itertools.count(1)


def prompt_tokens(path: str, body: dict[str, Any]) -> int:
    if path.endswith("/chat/completions"):
        chars = 0
        for m in body.get("messages") or ():
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    else:
        prompt = body.get("prompt", "")
        chars = len(prompt) if isinstance(prompt, str) else sum(len(str(p)) for p in prompt)
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


def cached_prefix(path: str, body: dict[str, Any]) -> tuple[int, int]:
    """(key, tokens) of the part of a chat prompt the emulated engine's prefix cache may hold: its leading
    system (or developer) message, as an app's instructions repeat on every request; (-1, 0) when there is
    none. vLLM caches any repeated prefix block by block; the emulator keeps the common case."""
    if not path.endswith("/chat/completions"):
        return -1, 0
    messages = body.get("messages")
    head = messages[0] if isinstance(messages, list) and messages else None
    if not isinstance(head, dict) or head.get("role") not in ("system", "developer"):
        return -1, 0
    content = head.get("content")
    if not isinstance(content, str) or not content:
        return -1, 0
    digest = hashlib.blake2b(content.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1, math.ceil(len(content) / CHARS_PER_TOKEN)


def answer_length(cap: int | None, ignore_eos: bool, natural: int) -> tuple[int, str]:
    """(output tokens, finish_reason) of an answer, as a real engine ends it. The emulated model ends its answer on
    its own (end of sequence) after `natural` tokens (EmulatorConfig.default_max_tokens) unless `ignore_eos`;
    `cap` (max_tokens / max_completion_tokens) cuts it, finish_reason "length" where it did, "stop" where the
    answer ended on its own (vLLM checks the end of sequence before the length: an answer of exactly `cap` tokens
    that ends there is "stop"). With ignore_eos (what `aigrid bench` sends) the answer is `cap` tokens exactly, or
    `natural` without a cap (a real engine would decode to the end of its context; the emulator has none).
    Until the thirty-third session every answer was `cap` tokens, as if ignore_eos were always set: the gateway
    now sends every request a cap (gateway.max_output_tokens, 4,096), and a plain request decoded all of it."""
    if ignore_eos:
        return (cap or natural), "length"
    if cap is not None and cap < natural:
        return cap, "length"
    return natural, "stop"


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunked-encoding frame."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _head(status: int, content_type: str, length: int | None) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "OK")
    framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    extra = "cache-control: no-cache\r\n" if content_type == "text/event-stream" else ""
    return f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n{extra}{framing}\r\n\r\n".encode()


class Exchange(Sink):
    """One request/response on a connection: renders the engine's tokens as OpenAI JSON or SSE."""

    def __init__(self, conn: EmulatorProtocol, path: str, body: dict[str, Any], model: str) -> None:
        self.conn = conn
        self.chat = path.endswith("/chat/completions")
        self.stream = bool(body.get("stream"))
        opts = body.get("stream_options")
        self.usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-emu{next(_ids)}"
        self.created = int(time.time())
        self.model = str(body.get("model") or model)
        self._eol = conn.server.sse_line_end
        if self.stream:
            self._token_frame = _chunk(self._event({"content": TOKEN_TEXT} if self.chat else TOKEN_TEXT, None))

    def _event(self, piece: Any, finish: str | None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if self.chat:
            choice["delta"] = piece
        else:
            choice["text"] = piece
        obj = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": [choice]}
        return self._framed(b"data: " + orjson.dumps(obj) + b"\n\n")

    def _framed(self, event: bytes) -> bytes:
        return event if self._eol == b"\n" else event.replace(b"\n", self._eol)

    def start(self) -> None:
        if self.stream:
            self.conn.write(_head(200, "text/event-stream", None))

    def token(self, job: Job) -> None:
        if self.stream:
            self.conn.write(self._token_frame)

    def finish(self, job: Job) -> None:
        usage = {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.generated,
                 "total_tokens": job.prompt_tokens + job.generated}
        if self.stream:
            tail = self._event({} if self.chat else "", job.finish_reason)
            if self.usage:
                tail += self._framed(b"data: " + orjson.dumps({
                    "id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                    "created": self.created, "model": self.model, "choices": [], "usage": usage}) + b"\n\n")
            self.conn.write(_chunk(tail + self._framed(b"data: [DONE]\n\n")) + b"0\r\n\r\n")
        else:
            text = TOKEN_TEXT * job.generated
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": job.finish_reason}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            body = orjson.dumps({"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                                 "created": self.created, "model": self.model, "choices": [choice],
                                 "usage": usage})
            self.conn.write(_head(200, "application/json", len(body)) + body)
        self.conn.exchange_done()


class EmulatorProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive connection; requests on one connection are answered in order."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._pending: deque[tuple[bytes, bytes, bytes]] = deque()
        self._job: Job | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.connections.discard(self)
        if self._job is not None:
            self.server.engine.cancel(self._job)
            self._job = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(_head(400, "text/plain", 11) + b"bad request")
            self.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._pending.append((self.parser.get_method(), self._url, b"".join(self._body)))
        self._url, self._body = b"", []
        if not self._busy:
            self._next()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def exchange_done(self) -> None:
        self._busy, self._job = False, None
        if self._pending:
            self._next()

    def _next(self) -> None:
        method, url, body = self._pending.popleft()
        path = url.split(b"?", 1)[0].decode("latin-1")
        self._busy = True
        self.server.handle(self, method, path, body)

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        self.write(_head(status, content_type, len(body)) + body)
        self.exchange_done()

    def start_job(self, job: Job) -> None:
        self._job = job


def _error(message: str, code: str, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}})


SSE_LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
"""The line ends an SSE stream may use (all three are valid); engines differ (sse-starlette: CRLF)."""


class EmulatorServer:
    """Routes requests of every connection to one EmulatedEngine; its SSE lines end with `sse_line_end`."""

    def __init__(self, config: EmulatorConfig, sse_line_end: bytes = b"\n") -> None:
        if sse_line_end not in SSE_LINE_ENDS.values():
            raise ValueError(f"an SSE line ends with LF, CRLF or CR, not {sse_line_end!r}")
        self.config = config
        self.sse_line_end = sse_line_end
        self._engine: EmulatedEngine | None = None
        self.connections: set[EmulatorProtocol] = set()

    @property
    def engine(self) -> EmulatedEngine:
        if self._engine is None:
            self._engine = EmulatedEngine(self.config)
        return self._engine

    def protocol(self) -> EmulatorProtocol:
        return EmulatorProtocol(self)

    def kill(self) -> None:
        """Crash: drop every connection at once (streams cut mid-way, as when an engine process dies).
        Close the asyncio server too, or new connections are still accepted."""
        for conn in list(self.connections):
            conn.abort()

    def handle(self, conn: EmulatorProtocol, method: bytes, path: str, raw: bytes) -> None:
        if method == b"GET":
            if path == "/health":
                conn.answer(200, "application/json", b"{}")
            elif path == "/metrics":
                conn.answer(200, "text/plain; version=0.0.4", self.engine.prometheus())
            elif path == "/v1/models":
                # vLLM's model card: `max_model_len` the context it holds (its --max-model-len), `root` the model,
                # `parent` null (a LoRA adapter's names its base): what the gateway's scraper reads
                conn.answer(200, "application/json", orjson.dumps({"object": "list", "data": [
                    {"id": self.config.model, "object": "model", "created": 0, "owned_by": "aigrid-emulator",
                     "root": self.config.model, "parent": None, "max_model_len": self.config.max_model_len}]}))
            else:
                conn.answer(404, "application/json", _error(f"no route {path}", "not_found"))
            return
        if method != b"POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            conn.answer(404, "application/json", _error(f"no route {method.decode()} {path}", "not_found"))
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            conn.answer(400, "application/json", _error(f"invalid JSON: {e}", "invalid_json"))
            return
        if not isinstance(body, dict):
            conn.answer(400, "application/json", _error("the body must be a JSON object", "invalid_json"))
            return
        # the first set (vLLM reads `max_completion_tokens or max_tokens`); its error names the field that was read
        field = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
        cap = body.get(field)
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            conn.answer(400, "application/json", _error(f"{field} must be a positive integer", "invalid_value",
                                                        field))
            return
        ignore_eos = body.get("ignore_eos")
        if ignore_eos is not None and not isinstance(ignore_eos, bool):
            conn.answer(400, "application/json", _error("ignore_eos must be true or false", "invalid_type", "ignore_eos"))
            return
        tokens, finish = answer_length(cap, bool(ignore_eos), self.config.default_max_tokens)
        exchange = Exchange(conn, path, body, self.config.model)
        job = Job(prompt_tokens(path, body), tokens, exchange, asyncio.get_running_loop().time(),
                  *cached_prefix(path, body), finish_reason=finish)
        conn.start_job(job)
        exchange.start()
        self.engine.submit(job)


async def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0, *,
                sse_line_end: bytes = b"\n") -> tuple[asyncio.Server, EmulatorServer]:
    """Start one emulated engine listening on host:port (0 picks a free port); the caller closes the server."""
    emulator = EmulatorServer(config, sse_line_end)
    server = await asyncio.get_running_loop().create_server(emulator.protocol, host, port, backlog=2048)
    return server, emulator


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
