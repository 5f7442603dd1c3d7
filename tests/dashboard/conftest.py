from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from aigrid.dashboard import dashboard_routes
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.spec.load import load_spec
from tests.gateway.fake_engine import FakeEngine

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16,
        "stream": True, "stream_options": {"include_usage": True}}


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def fakes() -> dict[str, FakeEngine]:
    return {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}


@pytest.fixture
async def gateway(fakes: dict[str, FakeEngine]) -> Gateway:
    gw = build_gateway(load_spec(DEMO), fakes, rng=random.Random(7), sleep=no_sleep)
    await gw.scraper.scrape_once()
    return gw


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(gateway, extra_routes=dashboard_routes(gateway, interval_s=0.01))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


@dataclass
class Served:
    base: str
    gateway: Gateway


class ServerThread:
    """A real uvicorn socket in a background thread, so a real browser can open the page."""

    def __init__(self, app: Starlette) -> None:
        # bound here and handed to uvicorn: a port picked with free_port() and bound later could be taken meanwhile
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The demo spec behind a real socket, FAKE engines (instant answers), the dashboard mounted."""
    spec = load_spec(DEMO)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(7),
                       sleep=no_sleep)
    holder: list[ServerThread] = []
    routes = dashboard_routes(gw, interval_s=0.3, replay_dir=tmp_path / "run",
                              stopping=lambda: bool(holder) and holder[0].server.should_exit)
    with ServerThread(build_app(gw, extra_routes=routes)) as srv:
        holder.append(srv)
        yield Served(srv.base, gw)
