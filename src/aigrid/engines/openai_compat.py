"""One adapter for every engine that speaks the OpenAI HTTP API: vLLM, SGLang, llama.cpp's llama-server,
Ollama, TGI, or any other OpenAI-compatible server.

The engines differ only in where their health probe lives and whether (and in which dialect) they export
Prometheus metrics; both are table lookups here, not branches. Proxying is byte-level and unbuffered:
open() hands back the engine's status, headers and raw body bytes as they arrive, so SSE passes through
untouched. httpx errors are mapped into aigrid.errors here, once, and nowhere else.

The httpx.AsyncClient is injected: the caller owns connection pooling, limits and its lifetime, so an
adapter holds nothing that needs closing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import NamedTuple, cast

import httpx
import orjson

from aigrid.content_coding import IDENTITY, Encoded, read_identity
from aigrid.engines.prometheus import PARSERS, parse_dcgm, parse_stats, with_power
from aigrid.engines.protocol import EngineStats, UpstreamResponse
from aigrid.engines.trace_context import TRACE_HEADERS
from aigrid.engines.upstream_transport import Http1Transport, Sink
from aigrid.errors import EngineError, EngineKeyRefused, EngineStreamBroken, EngineUnavailable
from aigrid.userinfo import without_userinfo

log = logging.getLogger(__name__)

HEALTH_PATHS: Mapping[str, str] = MappingProxyType(
    {
        "vllm": "/health",
        "sglang": "/health",
        "llamacpp": "/health",
        "tgi": "/health",
        "ollama": "/api/version",
        "openai": "/v1/models",
    }
)
"""Engine kind -> the GET path that answers 200 when the engine can serve."""

METRICS_KINDS: frozenset[str] = frozenset({"vllm", "sglang", "llamacpp", "tgi"})
"""Kinds that export Prometheus metrics; the others (Ollama, generic OpenAI) report EngineStats()."""


def refused_statuses(kind: str) -> frozenset[int]:
    """The statuses by which an engine refuses the gateway itself (the client's own credentials never reach
    an engine): its key missing or wrong, the gateway's fault at that endpoint, never the client's, so the
    request moves to the next candidate. 401 from every kind; 403 only from a server the operator runs, whose
    403 is its key's; a hosted provider (kind openai) also answers 403 for the content (a moderation flag),
    which is the client's to hear, and must not count against the endpoint for every tenant."""
    return frozenset({401}) if kind == "openai" else frozenset({401, 403})


METRICS_MAX_BYTES = 16 << 20
"""The most bytes of metrics read from one exporter (vLLM's, with its histograms, is about 100 KiB; dcgm-exporter's
of 8 GPUs less): more is not read, the scrape fails (EngineError)."""
HEALTH_MAX_BYTES = 64 << 10
"""The most bytes of a health answer read (only its status counts)."""
MODELS_PATH = "/v1/models"
MODELS_MAX_BYTES = 1 << 20
"""The most bytes of an engine's model list read (a hosted provider's lists a few hundred models in under 100 KiB)."""
PROPS_PATH = "/props"
PROPS_MAX_BYTES = 1 << 20
"""The most bytes of llama-server's GET /props read (SmolLM2's is 3 KiB; its chat template is most of it)."""

CLOSED_IDLE = "Server disconnected without sending a response"
"""httpcore's message when the server closed the connection before sending any byte of a response."""
CONNECTING = "connection.connect_tcp.started"
"""httpcore's trace event when it opens a connection for a request (none when it reuses a pooled one)."""


def why(exc: BaseException) -> str:
    """An exception as an operator reads it in a log line or `aigrid explain`: its kind and its message
    ("ConnectError: All connection attempts failed"), not its repr; the kind alone when it says nothing else
    (a ReadTimeout's message is often empty)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _hint(exc: httpx.TransportError) -> str:
    """What to do about a failure an operator fixes in the spec."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return (" (the engine's certificate did not verify: signed by an internal authority, give the endpoint "
                "tls_ca_file, or check the one it names; else expired, or not for this host name)")
    return ""


class ModelCard(NamedTuple):
    """What the gateway reads of one entry of an engine's GET /v1/models (served_models): the context it says it
    holds for the name (`max_model_len`; None where it says none) and the id of the card it derives from (`parent`:
    a LoRA adapter's base model on vLLM and SGLang, whose card has no max_model_len; None where it names none)."""

    max_model_len: int | None
    parent: str | None


class OpenAICompatEngine:
    """An Engine (see protocol.py) for an OpenAI-compatible server at `base_url`.

    `power_url` optionally names a dcgm-exporter /metrics URL whose GPU power (restricted to `gpus`, by
    index or UUID) is merged into stats(). `headers` are sent with every request (e.g. an upstream API
    key). `timeout`, if given, overrides the client's timeout for proxied requests; probes (health,
    metrics) always use the short `probe_timeout_s`. `head_timeout_s`: how long a proxied request's response head
    may take on the direct path (a whole answer's comes once it is whole); None: the read timeout.
    """

    def __init__(
        self,
        kind: str,
        base_url: str,
        client: httpx.AsyncClient,
        *,
        metrics_path: str = "/metrics",
        health_path: str | None = None,
        power_url: str | None = None,
        gpus: Collection[str] | None = None,
        headers: Mapping[str, str] | None = None,
        key_source: str | None = None,
        timeout: httpx.Timeout | None = None,
        probe_timeout_s: float = 2.0,
        transport: Http1Transport | None = None,
        head_timeout_s: float | None = None,
    ) -> None:
        if kind not in HEALTH_PATHS:
            known = ", ".join(sorted(HEALTH_PATHS))
            raise ValueError(f"unknown engine kind {kind!r} (known: {known})")
        if kind in METRICS_KINDS and kind not in PARSERS:
            raise ValueError(f"engine kind {kind!r} has no metrics parser")
        self.kind = kind
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._metrics_path = metrics_path
        self._health_path = health_path if health_path is not None else HEALTH_PATHS[kind]
        self._power_url = power_url
        self._gpus = frozenset(gpus) if gpus is not None else None
        self._headers = dict(headers or {})
        self._key_source = key_source
        """Where the key in `headers` comes from, for the message when the engine refuses it."""
        self._refused_statuses = refused_statuses(kind)
        self._timeout = timeout
        self._probe_timeout = httpx.Timeout(probe_timeout_s)
        self._probe_timeout_s = probe_timeout_s
        url = httpx.URL(self.base_url)
        # the proxied POSTs of a plain-HTTP engine go straight to aigrid's transport, without httpx's client
        # layer (request building, URL merging, cookies, redirects: a tenth of the gateway's CPU per request)
        self._direct = transport if transport is not None and url.scheme == "http" else None
        self._origin = (url.host, url.port or 80)
        self._prefix = url.raw_path.decode("ascii").rstrip("/")
        self._host_header = b"host: " + url.netloc
        # a whole answer's head comes once the answer is whole: `head_timeout_s` (the gateway's ceiling for one,
        # first_byte_timeout.whole_max_s) bounds it, the read timeout (gateway.stream_idle_s) the silences between the
        # body's reads (it bounded the head too, and cut whole answers at 300 s); the proxy's first-byte deadline
        # bounds a stream's head. On https (httpx's client) the same: the head within head_timeout_s (_head_of),
        # then the body's reads at the read timeout
        base = timeout or client.timeout
        self._direct_timeouts = {**base.as_dict(), **({} if head_timeout_s is None else {"head": head_timeout_s})}
        self._head_timeout_s = head_timeout_s
        self._idle_s = base.read
        self._head_timeout = timeout if head_timeout_s is None else \
            httpx.Timeout(connect=base.connect, read=head_timeout_s, write=base.write, pool=base.pool)

    def __repr__(self) -> str:
        return f"OpenAICompatEngine(kind={self.kind!r}, base_url={without_userinfo(self.base_url)!r})"

    def __str__(self) -> str:
        """How its errors name it, for an operator: "llamacpp engine at http://127.0.0.1:8081"."""
        return f"{self.kind} engine at {without_userinfo(self.base_url)}"

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        """POST `body` (JSON bytes) to `path` and stream the response as it arrives.

        Raises EngineUnavailable when the engine cannot be reached, or fails before the first body byte;
        the body iterator raises EngineStreamBroken when the connection fails after bytes were yielded.
        Any HTTP status is handed back as is: what a 429 or 503 means is the gateway's decision.
        """
        if self._direct is not None and not path.startswith(("http://", "https://")):
            return _DirectExchange(self, self._direct, path, body)
        return self._open(path, body)

    @asynccontextmanager
    async def _open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        # identity: the body bytes stay plain SSE/JSON that the gateway can inspect as it relays them
        headers = {"accept-encoding": IDENTITY, **self._headers, **TRACE_HEADERS.get(),
                   "content-type": "application/json"}
        timeout = httpx.USE_CLIENT_DEFAULT if self._head_timeout is None else self._head_timeout
        request = self._client.build_request(
            "POST", self._url(path), content=body, headers=headers, timeout=timeout
        )
        try:
            response = await self._head_of(request)
        except httpx.TransportError as exc:  # connect errors, timeouts, protocol errors
            raise EngineUnavailable(f"{self}: {path} failed before the response: {why(exc)}{_hint(exc)}") from exc
        if response.status_code in self._refused_statuses:
            await response.aclose()
            raise EngineKeyRefused(self._refused(path, response.status_code))
        # a transport that read the body already (httpx.MockTransport) hands it over in one piece
        chunks = _Chunks(self, None, path, response.content) if response.is_stream_consumed else \
            _Chunks(self, cast(httpx.AsyncByteStream, response.stream), path)
        try:
            yield UpstreamResponse(status=response.status_code, headers=response.headers, body=chunks)
        finally:
            await response.aclose()

    async def _open_direct(self, transport: Http1Transport, path: str,
                           body: bytes) -> tuple[UpstreamResponse, httpx.AsyncByteStream]:
        """The response and the stream to close once it is relayed (_DirectExchange closes it)."""
        head = [b"POST " + (self._prefix + "/" + path.lstrip("/")).encode() + b" HTTP/1.1", self._host_header,
                b"accept-encoding: identity", b"content-type: application/json", b"content-length: %d" % len(body)]
        head += [f"{k}: {v}".encode("latin-1") for k, v in {**self._headers, **TRACE_HEADERS.get()}.items()]
        try:
            try:
                status, raw, stream = await transport.exchange(self._origin, head, body, self._direct_timeouts)
            except httpx.RemoteProtocolError as exc:
                if CLOSED_IDLE not in str(exc):
                    raise
                log.debug("%r: %s closed a pooled connection before answering; resending once", self, path)
                status, raw, stream = await transport.exchange(self._origin, head, body, self._direct_timeouts)
        except httpx.TransportError as exc:  # connect errors, timeouts, protocol errors
            raise EngineUnavailable(f"{self}: {path} failed before the response: {why(exc)}") from exc
        if status in self._refused_statuses:
            await stream.aclose()
            raise EngineKeyRefused(self._refused(path, status))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        return UpstreamResponse(status=status, headers=headers, body=_Chunks(self, stream, path)), stream

    def _refused(self, path: str, status: int) -> str:
        if "authorization" in self._headers:
            fix = f"check {self._key_source}" if self._key_source else "check the key it was given"
            return f"{self}: {path} answered HTTP {status}: the engine refused the gateway's key ({fix})"
        return (f"{self}: {path} answered HTTP {status}: the engine asks for a key (set the endpoint's "
                "api_key_env to the variable holding it)")

    async def _head_of(self, request: httpx.Request) -> httpx.Response:
        """The response to a proxied request on httpx's client, its body unread: each read of its head within
        `head_timeout_s` (the request's read timeout until the head is in; the proxy's deadline bounds the head in
        all), then the read timeout for each of the body's reads (httpcore reads the request's timeouts when the
        body's reading starts: tests/gateway/test_engine_silence.py holds it to that)."""
        response = await self._send(request, stream=True)
        if self._head_timeout_s is not None:
            timeouts = request.extensions.get("timeout")
            if isinstance(timeouts, dict):
                timeouts["read"] = self._idle_s
        return response

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send once more if the server closed a pooled keep-alive connection without answering (seen with
        llama-server after streamed responses, with no `Connection: close`: it closed the connection while idle).
        Not when the connection was opened for this request (httpcore's error says the same for both; its trace
        says whether it connected): the engine may have read it, and it would be read twice, as Http1Transport's
        CLOSED_FRESH. A pooled connection closed after the engine read the request cannot be told apart: resent
        (docs/reliability.md, "The wire"). Any other failure is raised to the caller."""
        connected: list[str] = []

        async def trace(event: str, info: Mapping[str, object]) -> None:
            if event == CONNECTING:
                connected.append(event)

        request.extensions["trace"] = trace
        try:
            return await self._client.send(request, stream=stream)
        except httpx.RemoteProtocolError as exc:
            if CLOSED_IDLE not in str(exc) or connected:
                raise
            log.debug("%r: %s closed a pooled connection before answering; resending once", self, request.url)
        return await self._client.send(request, stream=stream)

    async def health(self) -> bool:
        """True when the engine's health path answers 200; else EngineUnavailable saying why, the reason the scraper
        logs and records: unreachable (and why: a refused connection, a certificate that did not verify), the key
        refused, or the status it answered. Until 6 Dec 2026 unreachable and any other status were a bare False:
        "endpoint X is now UNHEALTHY" with no reason (an `openai` endpoint whose url ended in /v1 got 404 on
        /v1/v1/models)."""
        url = self._url(self._health_path)
        try:
            status, _ = await self._get(url, self._headers, HEALTH_MAX_BYTES)
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"{self}: cannot reach {url}: {why(exc)}{_hint(exc)}") from exc
        if status in self._refused_statuses:  # the operator's to fix: said, not just "unhealthy"
            raise EngineKeyRefused(self._refused(self._health_path, status))
        if status != 200:
            raise EngineUnavailable(f"{self}: {url} answered HTTP {status}" + (
                " (no such path there: is the endpoint's url the server's base URL?)" if status == 404 else ""))
        return True

    async def served_models(self) -> dict[str, ModelCard]:
        """The names the engine serves, from its GET /v1/models (each entry's `id`), each with the context the engine
        says it holds for it (the entry's `max_model_len`; None where it says none). The ids are what its answers carry
        in their `model` field, and the names a request may give it (vLLM and SGLang refuse another; llama-server serves
        its one model under any name and answers with its `--alias`, else its GGUF file's path). vLLM's and SGLang's
        model cards carry `max_model_len` (vLLM's ModelCard: the engine's max_model_len for each served name, none for a
        LoRA adapter's card; SGLang's: the model's context_len, its --context-length); llama-server's and a hosted
        provider's do not. A card's `parent` (a LoRA adapter's on vLLM: its base model's id) is kept with it. Read once an
        endpoint is first healthy (gateway/scraper.py), never on the data path. Raises EngineUnavailable when it cannot
        be reached and EngineError when the answer is not a model list."""
        url, doc = await self._json(MODELS_PATH, MODELS_MAX_BYTES)
        data = doc.get("data")
        if not isinstance(data, list):
            raise EngineError(f"{self}: {url} answered no model list (`data`)")
        served: dict[str, ModelCard] = {}
        for m in data:
            if isinstance(m, dict) and isinstance(m.get("id"), str):
                held, parent = m.get("max_model_len"), m.get("parent")
                served[m["id"]] = ModelCard(held if type(held) is int and held >= 1 else None,
                                            parent if isinstance(parent, str) else None)
        return served

    async def slot_context(self) -> tuple[int, int | None]:
        """llama-server's context a slot and its slots, from its GET /props: `default_generation_settings.n_ctx`, what
        one request may hold (each slot's own n_ctx: --ctx-size / --parallel; the whole --ctx-size, shared, with
        --kv-unified), and `total_slots` (None when not given). Measured on this project's build (0.3.36, 6 Dec
        2026): --ctx-size 4096 --parallel 2 answers n_ctx 2048, total_slots 2; with --kv-unified, n_ctx 4096. Read once
        an endpoint is first healthy (gateway/scraper.py). Raises EngineUnavailable when it cannot be reached and
        EngineError when the answer does not say (an engine without /props: not llama-server)."""
        url, doc = await self._json(PROPS_PATH, PROPS_MAX_BYTES)
        settings = doc.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        if type(n_ctx) is not int or n_ctx < 1:
            raise EngineError(f"{self}: {url} answered no context (`default_generation_settings.n_ctx`)")
        slots = doc.get("total_slots")
        return n_ctx, slots if type(slots) is int and slots >= 1 else None

    async def _json(self, path: str, most: int) -> tuple[str, dict[str, object]]:
        """The URL of a probe's GET of `path` and its answer, a JSON object of at most `most` bytes. Raises
        EngineKeyRefused when the engine refuses the gateway's key (as health()), EngineUnavailable when it cannot be
        reached and EngineError when it is not such an answer."""
        url = self._url(path)
        try:
            status, body = await self._get(url, self._headers, most)
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"{self}: cannot reach {url}: {why(exc)}{_hint(exc)}") from exc
        if status in self._refused_statuses:  # as health(): the key's, said as such (llama-server's /health answers
            raise EngineKeyRefused(self._refused(path, status))  # without one, its /v1/models and /props do not)
        if status != 200:
            raise EngineError(f"{self}: {url} answered HTTP {status}")
        if body is None:
            raise EngineError(f"{self}: {url} answered more than {most} bytes")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise EngineError(f"{self}: {url} answered no JSON: {body[:60]!r}") from None
        if not isinstance(doc, dict):
            raise EngineError(f"{self}: {url} answered no JSON object: {body[:60]!r}")
        return url, doc

    async def stats(self) -> EngineStats:
        """The engine's load from its own metrics (all None for kinds without metrics), plus GPU power
        from `power_url` when one is configured.

        Raises EngineUnavailable when the metrics cannot be fetched and EngineError when they cannot be
        parsed. A failing power exporter only leaves power_w None: it says nothing about the engine.
        """
        stats = EngineStats()
        if self.kind in METRICS_KINDS:
            stats = parse_stats(self.kind, await self._scrape(self._url(self._metrics_path), self._headers))
        if self._power_url is not None:
            try:  # without the engine's headers: its key is for its own URL, not another host's exporter
                power = parse_dcgm(await self._scrape(self._power_url, {}), self._gpus)
            except EngineError as exc:
                log.warning("%r: power exporter %s unusable: %s", self, self._power_url, exc)
            else:
                stats = with_power(stats, power)
        return stats

    async def _scrape(self, url: str, headers: Mapping[str, str]) -> str:
        try:
            status, body = await self._get(url, headers, METRICS_MAX_BYTES)
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"{self}: cannot fetch {url}: {why(exc)}{_hint(exc)}") from exc
        if status in (404, 501):
            raise EngineError(
                f"{self}: {url} answered HTTP {status}: no metrics exported there "
                f"(llama-server needs --metrics, SGLang --enable-metrics)"
            )
        if status in self._refused_statuses and headers is self._headers:
            raise EngineKeyRefused(self._refused(url, status))
        if status != 200:
            raise EngineUnavailable(f"{self}: {url} answered HTTP {status}")
        if body is None:
            raise EngineError(f"{self}: {url} answered more than {METRICS_MAX_BYTES} bytes of metrics")
        return body.decode("utf-8", "replace")

    async def _get(self, url: str, headers: Mapping[str, str], most: int) -> tuple[int, bytes | None]:
        """A probe's GET: its status and body (None: larger than `most` bytes, not read further), the whole of it
        within the probe timeout (httpx.ReadTimeout after it). Read whole, without bounds, an engine whose /metrics
        never ended held every endpoint's scrape (they are awaited together) and one of 200 MB took the gateway's
        memory past 20 GB. Asked as `identity` (as the proxied requests are), and an answer encoded anyway is the
        engine's error, its body not read: httpx's decoder inflates each piece read off the network whole (64 KiB of
        gzip is 66 MB) before it could be counted, and 300 KB of gzip held 149 MB at every scrape."""
        request = self._client.build_request("GET", url, headers={**headers, "accept-encoding": IDENTITY},
                                             timeout=self._probe_timeout)
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                response = await self._send(request, stream=True)
                try:
                    return response.status_code, await read_identity(response, most)
                except Encoded as e:
                    raise EngineError(f"{self}: {url} answered with {e}") from None
                finally:
                    await response.aclose()
        except TimeoutError:
            raise httpx.ReadTimeout(f"no whole answer within {self._probe_timeout_s} s") from None

    async def aclose(self) -> None:
        """Nothing to release: the injected client belongs to the caller."""

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + "/" + path.lstrip("/")


class _DirectExchange:
    """open() on the direct path: a plain async context manager (an @asynccontextmanager costs a generator
    and its frames per request); leaving it closes the response stream, which frees the connection."""

    __slots__ = ("_engine", "_transport", "_path", "_body", "_stream")

    def __init__(self, engine: OpenAICompatEngine, transport: Http1Transport, path: str, body: bytes) -> None:
        self._engine, self._transport, self._path, self._body = engine, transport, path, body
        self._stream: httpx.AsyncByteStream | None = None

    async def __aenter__(self) -> UpstreamResponse:
        up, self._stream = await self._engine._open_direct(self._transport, self._path, self._body)
        return up

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()


class _Chunks:
    """The raw body, read by read, with transport failures mapped by whether bytes were already handed out.
    A plain async iterator over the response's own byte stream: aiter_raw() adds a chunker and bookkeeping
    per read, a generator adds a frame per hop (this is the hot path)."""

    __slots__ = ("_engine", "_path", "_it", "_once", "_sent")

    def __init__(self, engine: OpenAICompatEngine, stream: httpx.AsyncByteStream | None, path: str,
                 whole: bytes | None = None) -> None:
        self._engine, self._path, self._sent = engine, path, False
        self._once = whole
        self._it = None if stream is None else stream.__aiter__()

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self._it is None:
            if not self._once:
                raise StopAsyncIteration
            chunk, self._once = self._once, b""
            return chunk
        try:
            chunk = await self._it.__anext__()
        except httpx.TransportError as exc:
            if self._sent:
                raise EngineStreamBroken(f"{self._engine}: {self._path} broke mid-stream: {why(exc)}") from exc
            raise EngineUnavailable(f"{self._engine}: {self._path} failed before the first byte: {why(exc)}") from exc
        self._sent = True
        return chunk

    def attach(self, sink: Sink) -> asyncio.Future[None] | None:
        """Reads handed to `sink` from the connection's read callback (upstream_transport.py), once bytes were
        handed out; None where the stream cannot (httpx's own transport, a body read whole, nothing sent yet):
        read it with __anext__ instead. Failures still surface through __anext__, mapped as above."""
        attach = getattr(self._it, "attach", None)
        return attach(sink) if attach is not None and self._sent else None

    def detach(self) -> None:
        detach = getattr(self._it, "detach", None)
        if detach is not None:
            detach()
