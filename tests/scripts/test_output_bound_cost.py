"""scripts/output_bound_cost.py, whose figures docs/security.md cites (the share of the traces' answers the engine's
output bound cuts), counts as request_info bounds: on three requests of its own, at 4 characters a token and an
8,192 context, one is sent the grid's limit, one the room (8,192 - 5,000 - ROOM_MARGIN_TOKENS, 32: 3,160;
2 x 3,000 at 2 characters a token until the thirty-eighth session) and cut by it, one none (the room below the
floor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_output_bound_cost_script_counts_the_answers_the_room_cuts(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    for name in ("conv", "code"):
        (tmp_path / "traces" / f"azure_llm_2023_{name}.csv").write_text(
            "TIMESTAMP,ContextTokens,GeneratedTokens\nt,100,50\nt,5000,3170\nt,8150,10\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "AIGRID_DATA": str(tmp_path)}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "output_bound_cost.py"), "--contexts", "8192"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0] == "4 characters a token, grid's limit 4,096", run.stdout
    expected = ("context   8,192: n=3  fits 100.00%  sent the limit  33.33%, a smaller room  33.33%, none  33.33%  "
                "cut  33.33% (1), by the room only  33.33% (1)")
    assert lines[1:] == [f"conv  {expected}", f"code  {expected}"], run.stdout
