"""`aigrid plan` end to end on a small demand: the plan, its tables and map, the SLO claims re-checked by
running the emitted simulator scenarios, and the emitted grid spec served by `aigrid up` over emulated engines."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.engines.llama_server import free_ports
from aigrid.plan.chunks import chunk_for
from aigrid.plan.demand import load_demand
from aigrid.spec.load import load_spec, policies
from tests.plan.resimulate import resimulate
from tests.ports import on_a_free_port, port_taken

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()




@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan")
    port = free_ports(40)
    r = runner.invoke(app, ["plan", str(ROOT / "examples" / "plan" / "small.yaml"), "--out", str(out), "--compare",
                            "--workers", "2", "--emulator-port", str(port), "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def test_outputs_and_tables(planned: Path) -> None:
    for name in ("grid.yaml", "run-emulated.sh", "scenario.yaml", "cost.md", "cost.csv", "slo.md", "map.png",
                 "plan.json", "compare.md"):
        assert (planned / name).stat().st_size > 0, name
    doc = json.loads((planned / "plan.json").read_text())
    plan = doc["plan"]
    assert doc["meets"] and all(c["pass"] for c in doc["checks"])
    assert plan["usd_per_hour"] == pytest.approx(sum(s["usd_per_device_hour"] * sum(s["replicas"].values())
                                                     for s in plan["sites"]))
    # peak checks and one failure check per site
    failed = {c["check"].split(", ")[1].removesuffix(" down") for c in doc["checks"] if "down" in c["check"]}
    assert failed == {s["id"] for s in plan["sites"]}
    assert sum(s["jurisdiction"] == "EU" for s in plan["sites"]) >= 2  # the EU-only tenant survives N+1
    labels = [r["label"] for r in doc["compare"]]
    assert labels[0] == "plan" and sorted(labels[1:]) == ["one-region", "one-region-3az", "per-continent", "population"]
    for row in doc["compare"][1:]:
        assert row["meets"] or row["why_not"]
        if row["meets"]:
            assert row["usd_per_hour"] >= plan["usd_per_hour"]  # the plan is never dearer than a naive that meets it
    assert "plan saves" in (planned / "compare.md").read_text()


def test_every_slo_claim_holds_in_the_simulator(planned: Path) -> None:
    doc = json.loads((planned / "plan.json").read_text())
    files = sorted((planned / "checks").glob("*.yaml"))
    assert len(files) == len(doc["checks"]) >= 3
    target = 0.98  # slo.attainment of examples/plan/small.yaml
    for path in files:
        rerun = resimulate(path)
        got = rerun.attainment()
        assert rerun.violations == 0, path.name
        assert set(got) == {"chat", "code", "eu-bank"}
        assert min(got.values()) >= target, (path.name, got)


def test_the_chunk_the_planner_chose_reaches_the_emitted_spec_and_the_naive_shapes(planned: Path) -> None:
    d = load_demand(ROOT / "examples" / "plan" / "small.yaml")
    chosen = {h: chunk_for(d, h) for h in d.supply.hardware}
    assert chosen == {"h100": 3072, "l40s": 512}  # 3,072 holds TPOT by the screen's rule (plan/chunks.py)
    doc = json.loads((planned / "plan.json").read_text())
    sites = doc["plan"]["sites"]
    assert all(s["chunk_tokens"] == chosen[s["hardware"]] for s in sites), sites
    head = [x for x in (planned / "grid.yaml").read_text().split("\n") if x.startswith("# ")]
    for s in sites:
        c = chosen[s["hardware"]]
        assert any(x.startswith(f"# {s['id']} ({s['hardware']}): prefill chunk {c} tokens") for x in head), head
    flags = re.findall(r"--chunk-tokens (\d+)", (planned / "run-emulated.sh").read_text())
    assert flags and {int(f) for f in flags} == {chosen[s["hardware"]] for s in sites}
    for path in sorted((planned / "checks").glob("*.yaml")):
        assert set(re.findall(r"chunk_tokens: (\d+)", path.read_text())) == {str(chosen[s["hardware"]]) for s in sites}
    # the naive shapes are sized with the same options and chunks: each of their sites names its chunk
    wheres = [w for r in doc["compare"][1:] for w in r["where"]]
    assert wheres and all(f"{chosen[w.split('(')[1].split(' ')[0]]:,}-token prefill chunks" in w for w in wheres), wheres


def test_spec_check_and_aigrid_up_on_emulated_engines(planned: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["spec", "check", str(planned / "grid.yaml")])
    assert r.exit_code == 0 and "ok" in r.output, r.output
    slo = load_demand(ROOT / "examples" / "plan" / "small.yaml").slo  # the gateway gates on the SLO the plan was checked against
    assert {p.ttft_slo_ms for p in policies(load_spec(planned / "grid.yaml")).values()} == {slo.ttft_ms}
    doc = json.loads((planned / "plan.json").read_text())
    eu_sites = {s["id"] for s in doc["plan"]["sites"] if s["jurisdiction"] == "EU"}
    planned_ports = sorted(int(e.url.rsplit(":", 1)[1]) for e in load_spec(planned / "grid.yaml").endpoints if e.url)
    first, count = planned_ports[0], len(planned_ports)
    assert planned_ports == list(range(first, first + count))  # consecutive from --emulator-port
    env = {**os.environ, "AIGRID": str(Path(sys.executable).parent / "aigrid")}

    def launch(base: int) -> tuple[subprocess.Popen[bytes], int]:
        """The plan's run-emulated.sh and grid.yaml, copied with the emulators moved to the ports from `base` (free
        now: the planned ones were picked when the module's plan was made, minutes before) and the gateway on the
        port after them; returned once every planned endpoint is healthy. Stopped, and what it said raised, if a
        process could not start (again on new ports when one was taken meanwhile: tests/ports.py)."""
        def moved(text: str) -> str:
            def one(m: re.Match[str]) -> str:
                return m[1] + str(base + int(m[2]) - first) if first <= int(m[2]) < first + count else m[0]
            return re.sub(r"(127\.0\.0\.1:|--port )(\d+)", one, text)

        here = tmp_path / f"launch-{base}"
        here.mkdir()
        for name in ("grid.yaml", "run-emulated.sh"):
            (here / name).write_text(moved((planned / name).read_text()))
        gw_port = base + count
        # the launcher's and gateway's log goes to a file: a pipe nobody reads fills at 64 KiB and then blocks the
        # gateway on its next log line
        err_log = here / "launcher.log"
        with err_log.open("wb") as err:
            proc = subprocess.Popen(["bash", str(here / "run-emulated.sh"), "--port", str(gw_port)], cwd=tmp_path,
                                    env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 180  # a loaded 2-core machine starts a dozen processes slowly
            while time.monotonic() < deadline:
                # every planned endpoint healthy, not only one (/healthz says 200 from the first): the emulators
                # start one after another, and an EU one not yet scraped healthy could not serve the request below
                try:
                    health = httpx.get(f"http://127.0.0.1:{gw_port}/healthz", timeout=1, trust_env=False)
                    if health.status_code == 200 and len(health.json()["healthy"]) == health.json()["endpoints"]:
                        return proc, gw_port
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                logs = "".join(p.read_text(errors="replace") for p in sorted(here.glob("emulator-*.log")))
                if port_taken(logs):  # the launcher would wait out its 60 s for that emulator's banner
                    raise RuntimeError(logs)
                if proc.poll() is not None:
                    raise RuntimeError(err_log.read_text(errors="replace") + logs)
                time.sleep(0.5)
            raise AssertionError("the gateway did not come up:\n" + err_log.read_text(errors="replace")[-4000:])
        except BaseException:
            stop(proc)
            raise

    proc, gw_port = on_a_free_port(launch, pick=lambda: free_ports(count + 1))
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{gw_port}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="llama-3.1-8b", max_tokens=8, messages=[{"role": "user", "content": "hello"}],
            extra_headers={"x-aigrid-client-location": "48.86,2.35", "x-aigrid-tenant": "eu-bank"})  # Paris
        assert raw.headers["x-aigrid-site"] in eu_sites
        assert raw.parse().usage.completion_tokens == 8
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
