"""Time a request of N tiny text parts through the gateway (in-process, fake engines), per route.

Run: .venv/bin/python scripts/bench_request_parts.py [N ...]
Prints per route: HTTP status, error code, the request's wall time, the firewall's check_texts time and texts count.
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path.cwd()))
from aigrid.gateway.app import build_app, build_gateway  # noqa: E402
from aigrid.spec.load import load_spec  # noqa: E402
from tests.gateway.conftest import DEMO, spec_in  # noqa: E402
from tests.gateway.fake_engine import FakeEngine  # noqa: E402


async def _no_sleep(_: float) -> None:
    return None


def bodies(n: int) -> dict[str, dict]:
    parts = [{"type": "text", "text": "12 "} for _ in range(n)]
    return {
        "/v1/chat/completions": {"model": "smollm2-135m", "max_tokens": 4,
                                 "messages": [{"role": "user", "content": parts}]},
        "/v1/chat/completions (messages)": {"model": "smollm2-135m", "max_tokens": 4,
                                            "messages": [{"role": "user", "content": "12 "} for _ in range(n)]},
        "/v1/messages": {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": parts}]},
        "/v1/messages (messages)": {"model": "smollm2-135m", "max_tokens": 4, "messages": [
            {"role": ("user", "assistant")[i % 2], "content": "12 "} for i in range(n | 1)]},
        "/v1/responses (items)": {"model": "smollm2-135m", "max_output_tokens": 16,
                                  "input": [{"role": "user", "content": "12 "} for _ in range(n)]},
        "/v1/responses": {"model": "smollm2-135m", "max_output_tokens": 16,
                          "input": [{"role": "user", "content": [{"type": "input_text", "text": "12 "}
                                                                 for _ in range(n)]}]},
    }


async def main(ns: list[int]) -> None:
    spec = load_spec(DEMO)
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_in(Path(tmp))  # a model with a long context (128k tokens), as hosted models have
        spec = spec.model_copy(update={"models": {k: m.model_copy(update={"context": 131_072})
                                                  for k, m in spec.models.items()}})
        gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=_no_sleep)
        await gw.scraper.scrape_once()
        fw = gw.guard.screen.firewall
        check = fw.check_texts
        spent: list[tuple[int, float]] = []

        def timed(tenant, texts):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return check(tenant, texts)
            finally:
                spent.append((len(texts), time.perf_counter() - t0))
        fw.check_texts = timed  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=build_app(gw))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=120) as c:
            for n in ns:
                for route, body in bodies(n).items():
                    spent.clear()
                    t0 = time.perf_counter()
                    r = await c.post(route.split(" ")[0], json=body)
                    wall = time.perf_counter() - t0
                    err = r.json().get("error", {}) if r.status_code >= 400 else {}
                    code = err.get("code") or err.get("type") or ""
                    fw_s = sum(s for _, s in spent)
                    texts = sum(k for k, _ in spent)
                    print(f"N={n:>7} {route:34s} status={r.status_code} {code:22s} wall={wall:6.2f}s "
                          f"firewall={fw_s:6.2f}s texts={texts} param={err.get('param')}", flush=True)


asyncio.run(main([int(a) for a in sys.argv[1:]] or [1_000, 9_000, 100_000]))
