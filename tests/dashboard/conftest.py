from __future__ import annotations

import inspect
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from aigrid.dashboard import dashboard_routes
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.spec.load import load_spec
from tests.dashboard.browser import launched_chromium
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.serving import serving_in_thread

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


def dashboard_app(gw: Gateway, replay_dir: Path, **options: Any) -> tuple[Starlette, list[uvicorn.Server]]:
    """The gateway's app with the dashboard mounted (0.3 s ticks, `replay_dir`'s runs), and a list for the server
    that serves it: its feeds end once that server is stopping (a browser's open feed would hold its stop)."""
    server: list[uvicorn.Server] = []
    routes = dashboard_routes(gw, interval_s=0.3, replay_dir=replay_dir,
                              stopping=lambda: bool(server) and server[0].should_exit, **options)
    return build_app(gw, extra_routes=routes), server


@contextmanager
def served_dashboard(app: Starlette, server: list[uvicorn.Server]) -> Iterator[str]:
    """`app` on a real socket (tests/serving.py, in a thread of its own: the browser's driver blocks this one) for
    a real browser to open: its base URL."""
    with serving_in_thread(app, lifespan="on", timeout_graceful_shutdown=1) as srv:
        server.append(srv.server)
        yield srv.url


@contextmanager
def served_demo(where: Path) -> Iterator[Served]:
    """The demo spec behind a real socket, FAKE engines (instant answers), the dashboard mounted; its audit log
    under `where` (the demo's is .aigrid/audit.db, in the checkout), its replay folder `where`/run."""
    spec = spec_in(where)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(7),
                       sleep=no_sleep)
    with served_dashboard(*dashboard_app(gw, where / "run")) as base:
        yield Served(base, gw)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """served_demo for one test: its replay folder is tmp_path / "run"."""
    with served_demo(tmp_path) as served:
        yield served


@pytest.fixture(scope="module")
def served_to_read(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """served_demo for a whole module, to the tests that only read from it: none of them sends it a request that
    changes its state (a chat completion: a decision in every later test's table) nor writes into its replay folder
    (it has none). A test that does either has a `served` of its own."""
    with served_demo(tmp_path_factory.mktemp("served")) as served:
        yield served


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module's browser tests (browser.launched_chromium: a module's, never the
    session's, and only in modules without async tests); each test opens its page with browser.chromium_page."""
    with launched_chromium() as browser:
        yield browser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `chromium` fixture's rule, checked before anything runs: a module whose tests use it has no async test
    and no async fixture (they fail, while its Playwright driver runs, on "Cannot run the event loop while another
    loop is running", in whichever test comes after the browser's first)."""
    modules: dict[str, list[pytest.Function]] = {}
    for item in items:
        if isinstance(item, pytest.Function):
            modules.setdefault(item.module.__name__, []).append(item)
    for name, tests in modules.items():
        if not any("chromium" in t.fixturenames for t in tests):
            continue
        asynchronous = sorted({t.name for t in tests if inspect.iscoroutinefunction(t.obj)} | {
            d.argname for t in tests for defs in _fixture_defs(t).values() for d in defs
            if inspect.iscoroutinefunction(d.func) or inspect.isasyncgenfunction(d.func)})
        if asynchronous:
            raise pytest.UsageError(f"{name}: its tests use the `chromium` fixture (one browser for the module), so "
                                    f"none may be async nor use an async fixture: {', '.join(asynchronous)}")


def _fixture_defs(test: pytest.Function) -> dict[str, Any]:
    """The test's fixture definitions by name: pytest's private `_fixtureinfo` (no public API names them), read so
    that a pytest without it checks the tests themselves only rather than failing every collection."""
    return getattr(getattr(test, "_fixtureinfo", None), "name2fixturedefs", None) or {}
