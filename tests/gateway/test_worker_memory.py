"""What a gateway process imports: what serving needs, and nothing else (docs/benchmarks.md, "Memory per worker").

Every `--workers N` process (and the parent, and a one-process gateway) starts as `python -m aigrid.cli`; the
other commands' modules (the planner, simulator and load generator: matplotlib, PIL, scipy) and redis took about
35 + 12 MB of each. Not a timing or RSS test: it checks the modules a process holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer.main

from aigrid.cli import app

NOT_AT_START = ("matplotlib", "PIL", "scipy", "sklearn", "torch", "transformers", "sentence_transformers", "redis",
                "networkx",  # the shortest-path tool's, imported when a graph is first built (agents/graph.py)
                "aigrid.plan.cli", "aigrid.sim.cli", "aigrid.bench.cli",
                "aigrid.rightsize.cli", "aigrid.audit.query_cli", "aigrid.engines.emulator_cli")

WORKER = """
import asyncio, json, sys
import aigrid.cli  # what `python -m aigrid.cli worker CONFIG` imports before serve_worker
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.spec.load import parse_spec

spec = parse_spec(json.loads(sys.argv[1]), "spec")

async def main():
    up = upstream(spec)
    try:
        build_app(build_gateway(spec, build_engines(spec, {}, up)))
    finally:
        await up.aclose()

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def grid(tmp: Path) -> dict:
    """The side-by-side benchmark's grid: firewall, abuse signals and audit log at their defaults."""
    return {"name": "lean", "gateway": {"host": "127.0.0.1", "port": 18080, "network": "none"},
            "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
            "sites": {"s0": {"name": "S0", "lat": 50.0, "lon": 8.0, "jurisdiction": "EU"}},
            "endpoints": [{"id": "emu0", "site": "s0", "model": "emulated", "engine": "vllm",
                           "url": "http://127.0.0.1:9", "slots": 8}],
            "security": {"audit": {"path": str(tmp / "audit.db"), "signing_key": str(tmp / "audit.pem")}}}


def test_a_gateway_process_holds_no_other_command_nor_redis_nor_torch(tmp_path: Path) -> None:
    """A worker's gateway and app built as serve_worker builds them: no module of another command, no redis (no
    spec entry names it), no torch (neither the embedder nor the firewall's cascades use it: numpy)."""
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(grid(tmp_path))], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    assert "aigrid.gateway.app" in modules and "aigrid.security.firewall.injection" in modules  # it did build
    assert [name for name in NOT_AT_START if name in modules] == []


def test_the_commands_built_on_first_use_keep_their_place_and_run() -> None:
    """The lazily mounted commands are listed where they were (`aigrid --help`) and resolve to their own."""
    group = typer.main.get_command(app)
    ctx = group.make_context("aigrid", ["--help"], resilient_parsing=True)
    names = group.list_commands(ctx)  # type: ignore[attr-defined]
    assert names[:3] == ["bench", "emulator", "plan"] and names[-2:] == ["sim", "models"]
    assert {"up", "gateway", "worker", "spec", "keys", "audit"} <= set(names)
    plan = group.get_command(ctx, "plan")  # type: ignore[attr-defined]
    assert plan is not None and plan.name == "plan" and "demand" in [p.name for p in plan.params]
    audit = group.get_command(ctx, "audit")  # type: ignore[attr-defined]
    assert audit.list_commands(ctx) == ["query", "summary", "verify", "keygen"]
    models = group.get_command(ctx, "models")  # type: ignore[attr-defined]
    assert models is not None and models.name == "models"
