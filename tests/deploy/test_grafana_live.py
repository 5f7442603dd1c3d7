"""The Grafana dashboard's queries, run by a real Prometheus (Debian's, fetched by scripts/fetch_promtool.sh)
scraping a real gateway in front of the ENGINE EMULATOR: every query is valid on the gateway's real series,
and the core panels show data after traffic (requests, errors, TTFT and TPOT by site, tokens, in flight,
health, refusals by code)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from tests.deploy.test_grafana_dashboard import targets
from tests.gateway.test_relay import gateway_on_socket
from tests.ports import on_a_free_port

SHOWS_DATA = ("Requests / s", "Errors (5 m)", "TTFT p99 (5 m)", "Healthy endpoints", "Requests / s by site",
              "Requests / s by outcome", "Refused before routing, by code", "Tokens / s", "TTFT by site",
              "TPOT by site", "Endpoint health")


def prometheus() -> str:
    found = shutil.which("prometheus") or str(Path.home() / ".cache" / "aigrid" / "promtool" / "prometheus")
    if not os.access(found, os.X_OK):
        pytest.skip("no prometheus: run scripts/fetch_promtool.sh (make test does)")
    return found


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[str]:
    """A real gateway on a socket in front of two emulated engines; yields its host:port."""
    emulators = [await serve(EmulatorConfig(decode_base_ms=2, prefill_base_ms=1)) for _ in range(2)]
    try:
        async with gateway_on_socket([f"http://127.0.0.1:{bound_port(s)}" for s, _ in emulators]) as (_, base):
            yield base.removeprefix("http://")
    finally:
        for s, _ in emulators:
            s.close()


async def traffic(base: str) -> None:
    body = {"model": "emulated", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=30) as client:
        for i in range(30):
            r = await client.post("/v1/chat/completions", json={**body, "stream": i % 2 == 0})
            assert r.status_code == 200, r.text
        assert (await client.post("/v1/chat/completions", json={**body, "model": "nope"})).status_code == 404


def start_prometheus(binary: str, config: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Prometheus on a free port, once it says it is ready; on a new port when another process took the picked one
    before Prometheus bound it (tests/ports.py)."""
    def start(port: int) -> tuple[subprocess.Popen[bytes], int]:
        with log.open("wb") as out:
            proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                                     f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=out)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:  # it did not start (a port taken, a flag): say why at once
                    raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1, trust_env=False).status_code == 200:
                        return proc, port
                time.sleep(0.1)
            raise RuntimeError(f"prometheus not ready within 60 s: {log.read_text()[-2000:]}")
        except BaseException:
            proc.kill()
            proc.wait()
            raise

    return on_a_free_port(start)


async def test_every_dashboard_query_runs_on_a_real_gateways_series(tmp_path: Path) -> None:
    binary = prometheus()
    async with gateway() as base:
        await traffic(base)
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "aigrid", "static_configs": [{"targets": [base]}]}]}))
        # started in a thread: this event loop serves the gateway meanwhile
        proc, port = await asyncio.to_thread(start_prometheus, binary, tmp_path / "prometheus.yml",
                                             tmp_path / "data", tmp_path / "prometheus.log")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom:
                async def query(expr: str) -> dict:
                    r = await prom.get("/api/v1/query", params={"query": expr})
                    return dict(r.json())

                for _ in range(300):  # until a few scrapes span the traffic, more traffic between them
                    if proc.poll() is not None:
                        pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
                    with contextlib.suppress(httpx.HTTPError, ValueError):  # not ready: no JSON yet
                        got = await query("count_over_time(aigrid_requests_total[1m])")
                        if got.get("data", {}).get("result") and \
                                float(got["data"]["result"][0]["value"][1]) >= 4:
                            break
                    await traffic(base)
                    await asyncio.sleep(0.2)
                else:
                    pytest.fail("Prometheus never scraped the gateway 4 times")
                await traffic(base)
                await asyncio.sleep(1.5)
                empty = []
                for panel_title, t in ((p, t) for p, t in _titled()):
                    expr = t["expr"].replace("$__rate_interval", "1m").replace("$site", ".*")
                    got = await query(expr)
                    assert got["status"] == "success", (panel_title, expr, got)
                    if panel_title in SHOWS_DATA and not got["data"]["result"]:
                        empty.append((panel_title, expr))
                assert not empty, empty
                assert len(_titled()) == len(targets())
        finally:
            if proc.poll() is None:
                proc.terminate()
            await asyncio.to_thread(proc.wait)


def _titled() -> list[tuple[str, dict]]:
    import json

    from tests.deploy.test_grafana_dashboard import DASHBOARD

    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t) for p in board["panels"] for t in p.get("targets", [])]
