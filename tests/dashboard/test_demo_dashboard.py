"""The dashboard over the real demo grid: four llama.cpp engines (SmolLM2-135M) behind the gateway, clients in
several cities streaming at once, the page in headless Chromium. Saves a screenshot under the test's tmp dir;
with AIGRID_UPDATE_DOCS=1 it also refreshes docs/img/dashboard.png."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.browser import chromium_page
from tests.dashboard.conftest import DEMO
from tests.e2e.processes import NODE_CONTEXT, running_grid
from tests.engine_support import require_llama_server

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.engine
CITIES = ("Tokyo", "Seoul", "Frankfurt", "London", "Paris", "New York", "San Francisco", "Sao Paulo",
          "Buenos Aires", "Sydney", "Mumbai", "Johannesburg")
PROMPTS = ("Name three rivers in Japan.", "Write a haiku about the sea.", "Explain what a GPU does.",
           "List five fruits.", "What is the capital of France?", "Describe a mountain in one sentence.")


@pytest.fixture(scope="module")
def demo_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`aigrid up examples/demo.yaml` as users run it: the CLI mounts the dashboard beside the API."""
    require_llama_server()
    with running_grid(DEMO, tmp_path_factory.mktemp("demo"), context=NODE_CONTEXT) as g:  # short prompts only
        yield g.base


def stream(base: str, city: str, prompt: str) -> str:
    # 16 tokens: the page shows decisions, sites and their load, not the answers (48 took 3x the engines' time)
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 16, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}]}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=120,
                      headers={"x-aigrid-client-location": city}) as r:
        r.read()
        return r.headers.get("x-aigrid-site", f"{r.status_code}: {r.text[:200]}")  # a refusal named in the failure


def test_dashboard_over_the_demo_grid(demo_grid: str, tmp_path: Path, chromium: Any) -> None:
    external: list[str] = []
    with chromium_page(chromium, demo_grid, external) as page:
        page.goto(demo_grid + "/dashboard")
        page.wait_for_function("() => document.querySelectorAll('#map-sites g.site').length === 4", timeout=20000)
        served: list[str] = []
        with ThreadPoolExecutor(max_workers=10) as pool:
            futures: list[Future[str]] = []
            for wave in range(6):
                sent = [pool.submit(stream, demo_grid, city, PROMPTS[(k + wave) % len(PROMPTS)])
                        for k, city in enumerate(CITIES) if (k + wave) % 2 == 0]
                futures += sent
                if wave < 5:  # the next wave once the grid has served one of this one (was a fixed 2 s apart)
                    wait(sent, timeout=120, return_when=FIRST_COMPLETED)
            page.wait_for_function("() => document.querySelectorAll('#map-arcs path.arc').length >= 8",
                                   timeout=30000)
            page.screenshot(path=str(tmp_path / "dashboard-demo.png"))
            served = [f.result() for f in futures]
        assert set(served) == {"fra", "iad", "nrt", "gru"}
        page.wait_for_function("() => [...document.querySelectorAll('#decisions tbody tr td:last-child')]"
                               ".filter(td => td.textContent === 'ok').length >= 20", timeout=30000)
        places = set(page.eval_on_selector_all("#decisions tbody tr td:nth-child(2)",
                                               "tds => tds.map(t => t.textContent)"))
        assert {"Tokyo", "Frankfurt", "Sao Paulo", "Sydney"} & places
    assert external == []
    if os.environ.get("AIGRID_UPDATE_DOCS") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "dashboard-demo.png", ROOT / "docs" / "img" / "dashboard.png")
