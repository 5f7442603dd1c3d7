"""`python -m aigrid.bench.gateway_launch SPEC --port P [--transport direct|http1|httpx|aiohttp] [--loop uvloop|asyncio]
[--server uvicorn|granian]`: run the aigrid gateway for a spec of external engines only, with a chosen upstream
transport, event loop and ASGI server (granian: `pip install granian`, measurement only, not a dependency).

The side-by-side benchmark uses it to measure each hot-path change on its own (docs/benchmarks.md). It
builds the gateway exactly as `aigrid up` does (build_gateway + build_engines, served by stopping.gateway_server:
the head deadline and connection bounds, the cut requests' last words, the WebSocket settings, the signals and the
grace); only the upstream client's transport and the event loop differ (and the server with `--server granian`).
Until 2026-12-06 it ran a plain uvicorn.Server of its own (HeadDeadline, no CutAnswers, no connection bound, no
WebSocket bound): the benchmarks did not measure the server `aigrid up` ships.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import httpx

from aigrid.engines.upstream_transport import Http1Transport
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.heap import settle_when_started
from aigrid.gateway.responses_socket import server_options
from aigrid.gateway.stopping import gateway_server
from aigrid.gateway.wiring import UPSTREAM_TIMEOUT, Upstream, build_engines, upstream
from aigrid.security.firewall.abuse import AbuseAction, AbuseVerdict, RequestTraits
from aigrid.spec.load import load_spec


def client(transport: str) -> Upstream:
    """direct: as `aigrid up` (Http1Transport, proxied requests without httpx's client layer); http1: the same
    transport behind httpx's client for every request; httpx: httpx's own transport (httpcore's pool);
    aiohttp: the direct path with aiohttp's client in place of Http1Transport (probes and scrapes stay on httpx)."""
    if transport == "direct":
        return upstream()
    if transport == "aiohttp":
        from aigrid.bench.aiohttp_transport import AiohttpTransport

        return Upstream(upstream().client, AiohttpTransport())  # type: ignore[arg-type]
    if transport == "http1":
        return Upstream(httpx.AsyncClient(transport=Http1Transport(), timeout=UPSTREAM_TIMEOUT, trust_env=False), None)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    return Upstream(httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(limits=limits), timeout=UPSTREAM_TIMEOUT,
                                      trust_env=False), None)


class _NoAbuseSignals:
    """Measurement only (--without-abuse-monitor): what the gateway costs without the abuse monitor."""

    def observe(self, key_id: str, traits: RequestTraits) -> AbuseVerdict:
        return AbuseVerdict(AbuseAction.ALLOW, (), 0)


async def serve(spec_path: Path, port: int, transport: str, abuse: bool = True, server: str = "uvicorn") -> None:
    spec = load_spec(spec_path)
    if any(e.engine == "embedded" for e in spec.endpoints):
        raise SystemExit("gateway_launch runs specs of external engines only; use `aigrid up` for embedded ones")
    up = client(transport)
    try:
        gateway = build_gateway(spec, build_engines(spec, {}, up))
        if not abuse:
            gateway.guard.abuse = _NoAbuseSignals()  # type: ignore[assignment]
        if server == "granian":
            await _granian(build_app(gateway), spec.gateway.host, port)
        else:
            uv_server = gateway_server(build_app(gateway), gateway, host=spec.gateway.host, port=port,
                                       **server_options(spec))
            settling = asyncio.create_task(settle_when_started(uv_server))
            try:
                await uv_server.serve()
            finally:
                settling.cancel()
    finally:
        await up.aclose()
        if transport == "aiohttp":
            await up.http1.aclose()  # type: ignore[union-attr]


async def _granian(app: object, host: str, port: int) -> None:
    """granian's embedded server (a Rust HTTP server; its own label: experimental) on this event loop."""
    try:
        from granian.constants import Interfaces
        from granian.server.embed import Server
    except ImportError:
        raise SystemExit("--server granian needs granian (pip install granian); it is not a dependency") from None
    await Server(app, address=host, port=port, interface=Interfaces.ASGI, log_level="warning").serve()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("spec", type=Path)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--transport", choices=("direct", "http1", "httpx", "aiohttp"), default="direct")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    ap.add_argument("--without-abuse-monitor", action="store_true",
                    help="measurement only: replace the abuse monitor by one that never signals")
    args = ap.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.spec, args.port, args.transport, not args.without_abuse_monitor, args.server))
    else:
        asyncio.run(serve(args.spec, args.port, args.transport, not args.without_abuse_monitor, args.server))


if __name__ == "__main__":
    main()
