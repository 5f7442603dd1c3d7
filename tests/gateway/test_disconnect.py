"""A client that vanishes mid-stream: the engine is released, the in-flight count returns to zero and the
decision says the client went away. Runs the gateway on a real socket (uvicorn) so the disconnect is real."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.load import load_spec
from tests.gateway.conftest import DEMO, _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.serving import serving


async def test_vanishing_client_releases_the_engine(tmp_path: Path) -> None:
    fakes = {e.id: FakeEngine(e.id, words=tuple(f" w{i}" for i in range(400))) for e in load_spec(DEMO).endpoints}
    for f in fakes.values():
        f.word_delay_s = 0.01  # a 4-second answer: the client leaves long before the end
    gw = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(1), sleep=_no_sleep)
    async with serving(build_app(gw)) as s:
        async with httpx.AsyncClient(base_url=s.url) as c:
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
