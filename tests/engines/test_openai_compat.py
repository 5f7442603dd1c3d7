"""OpenAICompatEngine against a real uvicorn server on 127.0.0.1 and against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.protocol import Engine, EngineStats
from aigrid.errors import EngineError, EngineStreamBroken, EngineUnavailable
from tests.serving import serving

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LLAMACPP_METRICS = (Path(__file__).parent / "data" / "llamacpp_busy.prom").read_bytes()


class FakeEngine:
    """A tiny ASGI engine. /v1/chat/completions streams one SSE event, then waits for `release` before
    the second, so a test can prove that the first bytes reach the client before the response ends."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[tuple[str, str, bytes, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        self.seen.append((scope["method"], scope["path"], body, headers.get(b"content-type", b"").decode()))
        path = scope["path"]
        if path == "/health":
            await self._reply(send, 200, b'{"status":"ok"}')
        elif path == "/metrics":
            await self._reply(send, 200, LLAMACPP_METRICS, b"text/plain; version=0.0.4")
        elif path == "/v1/chat/completions":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b'data: {"n":1}\n\n', "more_body": True})
            await asyncio.wait_for(self.release.wait(), timeout=10)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        elif path == "/broken":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b"data: partial\n\n", "more_body": True})
            raise ConnectionResetError("engine died mid-stream")  # uvicorn drops the connection
        else:
            await self._reply(send, 404, b'{"error":"not found"}')

    @staticmethod
    async def _reply(send: Send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeEngine, str]]:
    app = FakeEngine()
    async with serving(app, lifespan="off", log_level="critical") as s:
        yield app, s.url


async def test_streams_bytes_as_they_arrive(served: tuple[FakeEngine, str]) -> None:
    app, url = served
    async with httpx.AsyncClient() as client:
        engine: Engine = OpenAICompatEngine("vllm", url + "/", client)
        body = json.dumps({"model": "m", "stream": True}).encode()
        async with engine.open("/v1/chat/completions", body) as upstream:
            assert upstream.status == 200
            assert upstream.headers["content-type"] == "text/event-stream"
            first = await asyncio.wait_for(anext(upstream.body), timeout=5)
            assert first == b'data: {"n":1}\n\n'  # arrived while the engine is still holding the rest
            app.release.set()
            rest = b"".join([chunk async for chunk in upstream.body])
        assert rest == b"data: [DONE]\n\n"
    assert app.seen[-1] == ("POST", "/v1/chat/completions", body, "application/json")


async def test_mid_stream_failure_is_stream_broken(served: tuple[FakeEngine, str]) -> None:
    _, url = served
    async with httpx.AsyncClient() as client:
        engine = OpenAICompatEngine("sglang", url, client)
        async with engine.open("/broken", b"{}") as upstream:
            assert await anext(upstream.body) == b"data: partial\n\n"
            with pytest.raises(EngineStreamBroken):
                async for _ in upstream.body:
                    pass


async def test_health_and_stats_over_a_real_socket(served: tuple[FakeEngine, str]) -> None:
    _, url = served
    async with httpx.AsyncClient() as client:
        engine = OpenAICompatEngine("llamacpp", url, client)
        assert await engine.health() is True
        stats = await engine.stats()
        assert (stats.running, stats.waiting, stats.prompt_tokens_total) == (2, 1, 65.0)
        with pytest.raises(EngineUnavailable, match=r"/nope answered HTTP 404 \(no such path there"):
            await OpenAICompatEngine("llamacpp", url, client, health_path="/nope").health()  # (it was a bare False)
        await engine.aclose()
        assert not client.is_closed  # the client belongs to the caller


async def test_unreachable_engine() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    async with httpx.AsyncClient() as client:
        engine = OpenAICompatEngine("vllm", f"http://127.0.0.1:{port}", client)
        with pytest.raises(EngineUnavailable, match="before the response") as down:
            async with engine.open("/v1/chat/completions", b"{}"):
                pytest.fail("must not yield")
        # as an operator reads it in the log and in `aigrid explain`: the engine and the error in words, no reprs
        assert str(down.value).startswith(f"vllm engine at http://127.0.0.1:{port}: /v1/chat/completions failed "
                                          "before the response: ConnectError: "), str(down.value)
        assert "OpenAICompatEngine(" not in str(down.value) and "ConnectError(" not in str(down.value)
        with pytest.raises(EngineUnavailable, match=f"cannot reach http://127.0.0.1:{port}/health: ConnectError"):
            await engine.health()  # (it was a bare False: no reason in the scraper's line)
        with pytest.raises(EngineUnavailable):
            await engine.stats()


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_timeout_before_headers_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no headers in time", request=request)

    async with mock_client(handler) as client:
        engine = OpenAICompatEngine("tgi", "http://tgi.invalid", client)
        with pytest.raises(EngineUnavailable, match="ReadTimeout: no headers in time$"):
            async with engine.open("/v1/chat/completions", b"{}"):
                pass


async def test_failure_before_first_body_byte_is_unavailable() -> None:
    class Dies(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            raise httpx.RemoteProtocolError("peer closed connection")
            yield b""  # pragma: no cover - makes this an async generator

    async with mock_client(lambda request: httpx.Response(200, stream=Dies())) as client:
        engine = OpenAICompatEngine("vllm", "http://vllm.invalid", client)
        async with engine.open("/v1/completions", b"{}") as upstream:
            with pytest.raises(EngineUnavailable, match="before the first byte"):
                await anext(upstream.body)


async def test_error_statuses_are_handed_back_not_raised() -> None:
    async with mock_client(lambda request: httpx.Response(503, json={"error": "overloaded"})) as client:
        engine = OpenAICompatEngine("vllm", "http://vllm.invalid", client)
        async with engine.open("/v1/chat/completions", b"{}") as upstream:
            assert upstream.status == 503
            assert b"".join([c async for c in upstream.body]) == b'{"error":"overloaded"}'
        with pytest.raises(EngineUnavailable, match="HTTP 503"):
            await engine.stats()


@pytest.mark.parametrize(
    ("kind", "probe"), [("vllm", "/health"), ("sglang", "/health"), ("llamacpp", "/health"),
                        ("tgi", "/health"), ("ollama", "/api/version"), ("openai", "/v1/models")]
)
async def test_health_path_per_kind(kind: str, probe: str) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200)

    async with mock_client(handler) as client:
        assert await OpenAICompatEngine(kind, "http://e.invalid/", client).health() is True
    assert paths == [probe]


async def test_ollama_has_no_metrics_and_is_not_scraped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        pytest.fail(f"unexpected request {request.url}")

    async with mock_client(handler) as client:
        assert await OpenAICompatEngine("ollama", "http://o.invalid", client).stats() == EngineStats()


async def test_power_from_dcgm_is_merged_and_its_failure_tolerated() -> None:
    dcgm = (Path(__file__).parent / "data" / "dcgm_h100x8.prom").read_text()
    power_up = True

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "dcgm.invalid":
            return httpx.Response(200, text=dcgm) if power_up else httpx.Response(500)
        return httpx.Response(200, content=LLAMACPP_METRICS)

    async with mock_client(handler) as client:
        engine = OpenAICompatEngine(
            "llamacpp", "http://e.invalid", client, power_url="http://dcgm.invalid:9400/metrics", gpus=["6"]
        )
        stats = await engine.stats()
        assert stats.power_w == pytest.approx(115.22) and stats.running == 2
        power_up = False
        stats = await engine.stats()
        assert stats.power_w is None and stats.running == 2


async def test_metrics_not_enabled_is_explained() -> None:
    async with mock_client(lambda request: httpx.Response(501, text="not supported")) as client:
        with pytest.raises(EngineError, match="--metrics") as caught:
            await OpenAICompatEngine("llamacpp", "http://e.invalid", client).stats()
    assert not isinstance(caught.value, EngineUnavailable)


async def test_malformed_metrics_are_an_engine_error() -> None:
    async with mock_client(lambda request: httpx.Response(200, text="<html>oops</html>\n")) as client:
        with pytest.raises(EngineError):
            await OpenAICompatEngine("vllm", "http://e.invalid", client).stats()


async def test_headers_and_timeout_are_applied() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="{}")

    async with mock_client(handler) as client:
        engine = OpenAICompatEngine("vllm", "http://e.invalid", client, headers={"authorization": "Bearer k"},
                                    timeout=httpx.Timeout(30.0, connect=1.0))
        async with engine.open("/v1/chat/completions", b"{}") as upstream:
            assert upstream.status == 200
    assert seen[0].headers["authorization"] == "Bearer k"
    assert seen[0].headers["accept-encoding"] == "identity"  # relayed bytes stay inspectable
    assert seen[0].extensions["timeout"]["connect"] == 1.0


async def test_unknown_kind_is_refused() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="known:"):
            OpenAICompatEngine("triton", "http://e.invalid", client)


async def test_a_pooled_connection_closed_by_the_server_is_resent_once() -> None:
    """llama-server sometimes closes a keep-alive connection after a streamed response without saying
    so; the next request on it fails at once with no response. That is resent, once."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) % 2 == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, content=LLAMACPP_METRICS)

    async with mock_client(handler) as client:
        engine = OpenAICompatEngine("llamacpp", "http://e.invalid", client)
        assert (await engine.stats()).running == 2
        assert await engine.health() is True
        async with engine.open("/v1/chat/completions", b'{"stream":true}') as upstream:
            assert upstream.status == 200
    assert calls == ["GET", "GET", "GET", "GET", "POST", "POST"]


async def test_other_protocol_errors_are_not_resent() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.RemoteProtocolError("peer sent an invalid status line", request=request)

    async with mock_client(handler) as client:
        with pytest.raises(EngineUnavailable, match="invalid status line"):
            async with OpenAICompatEngine("vllm", "http://e.invalid", client).open("/v1/completions", b"{}"):
                pass
    assert calls == ["POST"]


async def test_the_key_goes_to_the_engine_and_never_to_the_power_exporter() -> None:
    dcgm = (Path(__file__).parent / "data" / "dcgm_h100x8.prom").read_text()
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[f"{request.url.host}{request.url.path}"] = request.headers.get("authorization")
        if request.url.host == "dcgm.invalid":
            return httpx.Response(200, text=dcgm)
        return httpx.Response(200, content=LLAMACPP_METRICS)

    async with mock_client(handler) as client:
        engine = OpenAICompatEngine("llamacpp", "http://e.invalid", client, headers={"authorization": "Bearer k"},
                                    power_url="http://dcgm.invalid:9400/metrics", gpus=["6"])
        assert await engine.health() is True
        assert (await engine.stats()).power_w == pytest.approx(115.22)
    assert seen == {"e.invalid/health": "Bearer k", "e.invalid/metrics": "Bearer k", "dcgm.invalid/metrics": None}


@pytest.mark.parametrize("status", [401, 403])
async def test_an_engine_that_refuses_the_gateways_key_is_unavailable_not_the_clients_error(status: int) -> None:
    """The client's credentials never reach an engine: a 401/403 there is the gateway's key, missing or wrong,
    so the request moves to the next candidate instead of telling the client its own key is bad; the probe
    says so too (not a bare "health check failed")."""
    async with mock_client(lambda request: httpx.Response(status, json={"error": "bad key"})) as client:
        keyless = OpenAICompatEngine("vllm", "http://e.invalid", client)
        with pytest.raises(EngineUnavailable, match=f"HTTP {status}: the engine asks for a key .*api_key_env"):
            async with keyless.open("/v1/chat/completions", b"{}"):
                pass
        keyed = OpenAICompatEngine("vllm", "http://e.invalid", client, headers={"authorization": "Bearer old"},
                                   key_source="$FRA_KEY, the endpoint's api_key_env")
        with pytest.raises(EngineUnavailable, match=r"refused the gateway's key \(check \$FRA_KEY"):
            async with keyed.open("/v1/chat/completions", b"{}"):
                pass
        with pytest.raises(EngineUnavailable, match="refused the gateway's key"):
            await keyed.stats()
        with pytest.raises(EngineUnavailable, match="/health answered HTTP .*refused the gateway's key"):
            await keyed.health()


async def test_a_hosted_providers_403_is_the_clients_to_hear_and_its_401_the_gateways_key() -> None:
    """A hosted provider (kind openai) answers 403 for content too (a moderation flag): handed back as the
    engine's answer, not counted against the endpoint for every tenant; its 401 is still the gateway's key."""
    status = 403

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": []})
        return httpx.Response(status, json={"error": {"message": "flagged by moderation"}})

    async with mock_client(handler) as client:
        hosted = OpenAICompatEngine("openai", "https://provider.invalid", client,
                                    headers={"authorization": "Bearer k"})
        async with hosted.open("/v1/chat/completions", b"{}") as upstream:
            assert upstream.status == 403
        status = 401
        with pytest.raises(EngineUnavailable, match="refused the gateway's key"):
            async with hosted.open("/v1/chat/completions", b"{}"):
                pass


async def test_compressed_metrics_are_not_inflated() -> None:
    """A probe read its answer with httpx's decoder, which inflates each piece read off the network whole (64 KiB of
    gzip is 66 MB) before the 16 MiB bound was counted: an engine (or a power exporter) answering /metrics with
    300 KB of gzip had the gateway hold 149 MB at every scrape, each endpoint's at once. The probe asks for
    `identity` (as the proxied requests do) and an encoded answer is the engine's error, its body not read."""
    import gzip
    import tracemalloc

    bomb = gzip.compress(b"#" * (100 * 2**20), 9)
    asked: list[str | None] = []

    class Sent(httpx.AsyncByteStream):  # as it comes off the network (`content=` would be inflated by the mock)
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(0, len(bomb), 65_536):
                yield bomb[i:i + 65_536]

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding"))
        return httpx.Response(200, headers={"content-encoding": "gzip"}, stream=Sent())

    async with mock_client(handler) as client:
        tracemalloc.start()
        try:
            with pytest.raises(EngineError, match="content-encoding 'gzip'"):
                await OpenAICompatEngine("vllm", "http://e.invalid", client).stats()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert asked == ["identity"]
    assert peak < 8_000_000, f"{peak / 1e6:.0f} MB held"
