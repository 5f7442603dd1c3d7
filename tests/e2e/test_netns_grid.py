"""The demo grid with REAL distance: each site in its own network namespace, the kernel holding packets for
the modelled RTT from the gateway (Frankfurt). Then a whole site's namespace goes down under load."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aigrid.engines.model_files import find_llama_server
from aigrid.engines.netns import missing_tools
from aigrid.errors import EngineBuildError
from tests.e2e.processes import NODE_CONTEXT, running_grid

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
                      stop=signal.SIGTERM, context=NODE_CONTEXT) as g:  # short prompts only
        sites = re.findall(r"site (\w+): namespace (\S+) at (\S+), RTT (\d+) ms", g.banner)
        assert len(sites) == 4, g.banner
        yield {"base": g.base, "proc": g.proc, "namespaces": {site: ns for site, ns, _, _ in sites},
               "addresses": {site: address for site, _, address, _ in sites},
               "rtt_s": {site: int(rtt) / 1000 for site, _, _, rtt in sites}}


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


def handshake_s(address: str) -> float:
    """One TCP handshake with a site's namespace from the gateway's (port 9: refused, nothing listens there; the
    refusal crosses the link as an answer would). Only the kernel's delay and scheduling: no engine."""
    t0 = time.perf_counter()
    with contextlib.suppress(ConnectionRefusedError), socket.create_connection((address, 9), timeout=10):
        pass
    return time.perf_counter() - t0


def test_the_kernel_makes_tokyo_far_from_frankfurt(grid: dict) -> None:
    rtt, addresses = grid["rtt_s"], grid["addresses"]
    assert rtt["nrt"] - rtt["fra"] > 0.12, rtt  # the plan: at least 120 ms further
    # the kernel holds every packet to and from Tokyo: no handshake with it is faster than its RTT (a lower bound
    # on every run: load only adds), and Frankfurt's link holds them only its own RTT (an upper bound on the
    # fastest of five, 50 ms for a loaded machine's scheduling)
    far_link = [handshake_s(addresses["nrt"]) for _ in range(5)]
    near_link = [handshake_s(addresses["fra"]) for _ in range(5)]
    assert min(far_link) >= 0.95 * rtt["nrt"], (far_link, rtt)
    assert min(near_link) <= rtt["fra"] + 0.05, (near_link, rtt)
    # and a request routed to Tokyo crosses that link: each first byte at least one round trip (a request and
    # its answer on the pooled connection), load or not. Before, the fastest of five first bytes from each site
    # were compared (more than 120 ms apart): an engine's time varies by more than that under load (fra's
    # fastest 148 ms, nrt's 249 ms: 101 ms apart, while running two test files at once)
    far = sorted(first_byte_s(grid["base"], {"x-aigrid-residency": "JP"}) for _ in range(5))
    assert {site for _, site in far} == {"nrt"}, far
    assert far[0][0] >= 0.95 * rtt["nrt"], (far, rtt)
    near = sorted(first_byte_s(grid["base"], {})[0] for _ in range(5))
    assert first_byte_s(grid["base"], {})[1] == "fra"
    print(f"\nNETNS first byte, fastest of 5: fra {near[0] * 1000:.0f} ms, nrt {far[0][0] * 1000:.0f} ms; "
          f"handshake fra {min(near_link) * 1000:.0f} ms, nrt {min(far_link) * 1000:.0f} ms")


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
