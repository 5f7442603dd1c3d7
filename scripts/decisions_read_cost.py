"""What one tenant's `GET /v1/decisions?limit=1` costs with `--workers`: the hub holds 20,000 decisions (its bound)
of other tenants, one of the caller's among them; prints the bytes the hub answered per call and the time per call.

    .venv/bin/python scripts/decisions_read_cost.py
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigrid.gateway.app import build_app, build_gateway  # noqa: E402
from aigrid.gateway.hub import Hub  # noqa: E402
from aigrid.gateway.hub_client import HubClient  # noqa: E402
from aigrid.security.keys import KeyRing  # noqa: E402
from aigrid.spec.models import TenantSpec  # noqa: E402
from tests.gateway.conftest import _no_sleep, spec_in  # noqa: E402
from tests.gateway.fake_engine import FakeEngine  # noqa: E402

DECISIONS = 20_000
CALLS = 50


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="aigrid-dec-"))
    hub = Hub(work / "hub.sock", None)
    await hub.start()
    client = HubClient(hub.path, hub.token)
    ring = KeyRing(b"decisions-read-cost-0123456789")
    tenant = {"authorization": f"Bearer {ring.issue('default').api_key}"}
    ops = {"authorization": f"Bearer {ring.issue('ops').api_key}"}
    ring.save(work / "keys.json")
    os.environ["AIGRID_KEY_SECRET"] = "decisions-read-cost-0123456789"
    spec = spec_in(work, enforce=True)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "ops": TenantSpec(operator=True)}})
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    gw.hub = client
    await gw.scraper.scrape_once()
    await gw.guard.start()
    answered: list[int] = []
    call = client.call

    async def counted(op: str, arg: Any, timeout: float = 5.0) -> Any:
        got = await call(op, arg, timeout)
        if op == "decisions_recent":
            answered.append(len(orjson.dumps(got)))
        return got

    client.call = counted  # type: ignore[method-assign]
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json={"model": "smollm2-135m", "max_tokens": 4,
                                                            "messages": [{"role": "user", "content": "hi"}]},
                             headers=tenant)
            mine = (await c.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}", headers=ops)).json()
            print(f"one decision: {len(orjson.dumps(mine))} bytes")
            for i in range(DECISIONS - 1):  # other tenants' decisions, newer than the caller's one
                await client.publish_decision({**mine, "id": f"dec-{i:016x}", "tenant": "eu-bank"})
            assert len((await c.get("/v1/decisions?limit=1", headers=ops)).json()["data"]) == 1  # the posts are in
            answered.clear()
            started = time.perf_counter()
            for _ in range(CALLS):
                got = (await c.get("/v1/decisions?limit=1", headers=tenant)).json()["data"]
            took = (time.perf_counter() - started) / CALLS
            print(f"a tenant's GET /v1/decisions?limit=1: {sum(answered) / len(answered):,.0f} bytes from the hub, "
                  f"{took * 1000:.2f} ms a call ({CALLS} calls); its own decision found: {got == [mine]}")
    finally:
        await gw.guard.stop()
        await client.aclose()
        await hub.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
