"""A client that vanishes mid-stream: the engine is released, the in-flight count returns to zero and the
decision says the client went away. Runs the gateway on a real socket (uvicorn) so the disconnect is real."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from pathlib import Path

import httpx
import uvicorn

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine


async def test_vanishing_client_releases_the_engine(tmp_path: Path) -> None:
    fakes = {e.id: FakeEngine(e.id, words=tuple(f" w{i}" for i in range(400))) for e in load_spec(DEMO).endpoints}
    for f in fakes.values():
        f.word_delay_s = 0.01  # a 4-second answer: the client leaves long before the end
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(1), sleep=_no_sleep)
    sock = socket.socket()  # bound here and handed to uvicorn: no process can take the port meanwhile
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(gw), log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            async with c.stream("POST", "/v1/chat/completions", headers={"x-aigrid-client-location": "Tokyo"},
                                json={"model": "smollm2-135m", "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]}) as r:
                decision = r.headers["x-aigrid-decision"]
                async for _ in r.aiter_raw():
                    break  # read one chunk, then hang up
        for _ in range(1500):  # polled up to 30 s: a loaded machine is late, not wrong
            if gw.store.inflight("nrt-smollm2") == 0:
                break
            await asyncio.sleep(0.02)
        assert gw.store.inflight("nrt-smollm2") == 0
        record = gw.decisions.get(decision)
        assert record is not None and record.status == "client_closed", record.status
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
