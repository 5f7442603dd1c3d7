"""The demo grid with REAL distance: each site in its own network namespace, the kernel holding packets for
the modelled RTT from the gateway (Frankfurt). Then a whole site's namespace goes down under load."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aigrid.engines.model_files import find_llama_server
from aigrid.engines.netns import missing_tools
from aigrid.errors import EngineBuildError
from tests.e2e.processes import running_grid

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.engine
CHAT = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = missing_tools()
    if missing:
        return missing
    try:
        find_llama_server()
    except EngineBuildError:
        return "llama-server not built: run `make engine`"
    return None


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    reason = _why_skip()
    if reason:
        pytest.skip(reason)
    with running_grid(ROOT / "examples" / "demo-netns.yaml", tmp_path_factory.mktemp("netns-grid"),
                      stop=signal.SIGTERM) as g:
        namespaces = dict(re.findall(r"site (\w+): namespace (\S+) at", g.banner))
        assert len(namespaces) == 4, g.banner
        yield {"base": g.base, "proc": g.proc, "namespaces": namespaces}


def first_byte_s(base: str, headers: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    with httpx.stream("POST", base + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers,
                      timeout=30) as r:
        chunks = r.iter_raw()
        next(chunks)
        elapsed = time.perf_counter() - t0
        site = r.headers["x-aigrid-site"]
        for _ in chunks:
            pass
    return elapsed, site


def test_the_kernel_makes_tokyo_far_from_frankfurt(grid: dict) -> None:
    near = sorted(first_byte_s(grid["base"], {})[0] for _ in range(5))
    far = sorted(first_byte_s(grid["base"], {"x-aigrid-residency": "JP"})[0] for _ in range(5))
    assert first_byte_s(grid["base"], {})[1] == "fra"
    # at least one 142 ms round trip more to Tokyo (the connection is pooled; a request and its answer). The
    # fastest of five each: the kernel's delay is fixed, the engine's time only adds (a median of three once
    # came out 102 ms apart, the near site's engine slow twice on a loaded machine)
    assert far[0] - near[0] > 0.12, (near, far)
    print(f"\nNETNS first byte, fastest of 5: fra {near[0] * 1000:.0f} ms, nrt {far[0] * 1000:.0f} ms")


def test_a_whole_site_going_dark_loses_nothing_and_keeps_residency(grid: dict) -> None:
    ns = grid["namespaces"]["nrt"]
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "aigrid0", "down"], check=True)
    served, lost, violations, refused = [], 0, 0, 0
    for i in range(8):
        headers = {"x-aigrid-client-location": "Tokyo"}
        if i % 2:
            headers["x-aigrid-residency"] = "JP"  # only nrt may serve these: they must be refused, not moved
        r = httpx.post(grid["base"] + "/v1/chat/completions", json=CHAT, headers=headers, timeout=60)
        if r.status_code == 200:
            site = r.headers["x-aigrid-site"]
            served.append(site)
            violations += int("x-aigrid-residency" in headers and site != "nrt")
        elif "x-aigrid-residency" in headers and r.status_code in (502, 503):
            refused += 1
        else:
            lost += 1
    health = httpx.get(grid["base"] + "/healthz").json()
    figures = {"requests": 8, "served": len(served), "lost": lost, "refused_by_residency": refused,
               "residency_violations": violations}
    print(f"\nCHAOS site-namespace-down: {json.dumps(figures)}")
    assert lost == 0 and violations == 0 and refused == 4
    assert "nrt" not in served and len(served) == 4
    assert "nrt-smollm2" not in health["healthy"]


def test_sigterm_removes_every_namespace(grid: dict) -> None:
    proc = grid["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in left for ns in grid["namespaces"].values())
