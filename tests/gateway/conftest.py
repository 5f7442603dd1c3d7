from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from aigrid.audit.log import AuditLog
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.spec.load import load_spec
from aigrid.spec.models import AuditSpec, BatchSpec, GridSpec
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.fake_engine import FakeEngine
from tests.injection_model_once import Loaded, install

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="session")
def injection_models_read() -> Loaded:
    return {}


@pytest.fixture(autouse=True)
def _injection_model_read_once(injection_models_read: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every gateway built reads the injection model: from disk once per session (tests/injection_model_once.py)."""
    install(monkeypatch, injection_models_read)


@pytest.fixture
def fakes() -> dict[str, FakeEngine]:
    spec = load_spec(DEMO)
    return {e.id: FakeEngine(e.id) for e in spec.endpoints}


def spec_in(tmp: Path, **security: object) -> GridSpec:
    """The demo spec with its key file, audit log and batch files under a temporary folder."""
    spec = load_spec(DEMO)
    sec = spec.security.model_copy(update={
        "keys_file": str(tmp / "keys.json"),
        "audit": AuditSpec(path=str(tmp / "audit.db"), signing_key=str(tmp / "audit.pem")), **security})
    gateway = spec.gateway.model_copy(update={"batch": BatchSpec(dir=str(tmp / "batches"))})
    return spec.model_copy(update={"security": sec, "gateway": gateway})


def salted(spec: GridSpec, kind: str = "vllm") -> GridSpec:
    """`spec` with every endpoint an engine of `kind` and security.isolate_prefix_cache on: the grid keeps each
    tenant's prefix cache apart on every endpoint whose kind reads `cache_salt` (vLLM, SGLang: gateway/cache_salt.py),
    on none of llama-server's."""
    return spec.model_copy(update={"security": spec.security.model_copy(update={"isolate_prefix_cache": True}),
                                   "endpoints": [e.model_copy(update={"engine": kind}) for e in spec.endpoints]})


@pytest.fixture
async def gateway(fakes: dict[str, FakeEngine], tmp_path: Path) -> Gateway:
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(7), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    return gw


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


@asynccontextmanager
async def serving(spec: GridSpec, engines: dict[str, Any], seed: int = 7) -> AsyncIterator[
        tuple[httpx.AsyncClient, Gateway]]:
    """The gateway of `spec` on `engines`, scraped once and its guard started, with a client of its app. A spec whose
    audit log or signing key lies at a relative path (the defaults, .aigrid/audit.db and .aigrid/audit-signing.pem: the
    working directory's) gets a folder of its own for them, removed at the end: tests run from a checkout must not
    share (and lock) the checkout's log."""
    with tempfile.TemporaryDirectory(prefix="aigrid-audit-") as own:
        audit = spec.security.audit
        moved = {} if audit is None else {key: str(Path(own) / name) for key, name, at in (
            ("path", "audit.db", audit.path), ("signing_key", "audit.pem", audit.signing_key))
            if at is not None and not Path(at).is_absolute()}
        if audit is not None and moved:
            spec = spec.model_copy(update={"security": spec.security.model_copy(update={"audit": audit.model_copy(
                update=moved)})})
        gw = build_gateway(spec, engines, rng=random.Random(seed), sleep=_no_sleep)
        await gw.scraper.scrape_once()
        async with started(gw) as c:
            yield c, gw


@asynccontextmanager
async def started(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """`gw`'s guard started and a client of its app (in process: ASGI, base URL http://gw) until the block ends; the
    guard stopped then."""
    await gw.guard.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            yield c
    finally:
        await gw.guard.stop()


async def scripted_gateway(tmp: Path, engine: ScriptedEngine, tool_calls: str | None = None,
                           salt: bool = False, **security: object) -> Gateway:
    """The demo grid with every endpoint one SCRIPTED engine; `tool_calls` ("native" or "constrained") sets how
    every model gets tool calls (the spec's default otherwise); `salt`: every endpoint a salted vLLM one (`salted`);
    `security` as spec_in's."""
    spec = spec_in(tmp, **security)
    if salt:
        spec = salted(spec)
    if tool_calls is not None:
        spec = spec.model_copy(update={"models": {name: m.model_copy(update={"tool_calls": tool_calls})
                                                  for name, m in spec.models.items()}})
    gw = build_gateway(spec, {e.id: engine for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    return gw


async def audit_rows(gw: Gateway) -> list[dict[str, Any]]:
    """Every audit record the gateway wrote, oldest first (its writer flushed first)."""
    audit = gw.guard.audit
    assert isinstance(audit, AuditLog), audit  # an in-process gateway writes its own log (a worker's goes to its hub)
    await audit.flush()
    db = sqlite3.connect(audit.store.path)
    try:
        return [orjson.loads(r[0]) for r in db.execute("SELECT body FROM audit_records ORDER BY seq")]
    finally:
        db.close()


async def trickled(first: bytes, rest: bytes, pause_s: float) -> AsyncIterator[bytes]:
    """A request body sent as a slow client sends it: `first`, a pause, then `rest`."""
    yield first
    await asyncio.sleep(pause_s)
    yield rest


async def handles_opened_after_a_cancel(gw: Gateway, url: str, headers: dict[str, str],
                                        picks: Callable[[Path], bool], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """GET `url`, cancelled (the client gone) while a thread opens a file `picks` chooses; the thread then opens it
    after all. Returns the handles it opened, once the loop has heard of them: a response that opens its files off the
    loop must close such a handle itself (gateway/open_off_loop.py), not leave it to the garbage collector."""
    entered, gate, handles = threading.Event(), threading.Event(), []
    real = Path.open

    def slow_open(self: Path, *a: Any, **k: Any) -> Any:
        if not picks(self) or threading.current_thread() is threading.main_thread():
            return real(self, *a, **k)
        entered.set()
        gate.wait(10)
        handles.append(real(self, *a, **k))  # held here: only a close, not the garbage collector, closes it
        return handles[-1]

    monkeypatch.setattr(Path, "open", slow_open)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw",
                                     headers=headers) as c:
            asked = asyncio.create_task(c.get(url))
            assert await asyncio.to_thread(entered.wait, 10)
            asked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asked
        gate.set()
        for _ in range(3000):  # the thread ends, then the loop hears of it
            if handles and handles[0].closed:
                break
            await asyncio.sleep(0.01)
        return handles
    finally:
        gate.set()
