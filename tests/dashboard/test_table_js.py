"""The decisions table (static/table.js) run in node with a stand-in for the row: its TTFT cell, beside the
predicted TTFT, shows a first token's time; a whole answer's first byte (not streamed, or a tool loop's: the row's
ttft_ms null, first_byte_ms set, feed.py) in brackets, titled as no TTFT. Before, the row's ttft_ms was any first
byte, shown as a TTFT. Skipped without node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "aigrid" / "dashboard" / "static"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node: the page's table.js is not tried")

ROW = """
const cell = () => ({textContent: "", title: "", className: "", style: {setProperty() {}}});
const row = over => ({id: "d1", at: 0, place: "Tokyo", tenant: "t", site: "nrt", served_by: "nrt-a", scores: {},
  total: 1, predicted_ttft_ms: 112, status: "ok", reason: "", failures: [], ...over});
const shown = over => { const tr = {dataset: {}, children: Array.from({length: 14}, cell)};
  new DecisionTable(null, null).fill(tr, row(over));
  return [tr.children[11].textContent, tr.children[12].textContent, tr.children[12].title]; };
"""


def test_a_whole_answers_first_byte_is_shown_apart_from_a_ttft(tmp_path: Path) -> None:
    for name in ("table.js", "time_text.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    script = (f"const {{DecisionTable}} = await import({json.dumps((tmp_path / 'table.js').as_uri())});" + ROW +
              "process.stdout.write(JSON.stringify({streamed: shown({ttft_ms: 96.4, first_byte_ms: 96.4}),"
              " whole: shown({ttft_ms: null, first_byte_ms: 2058.2}), none: shown({ttft_ms: null, first_byte_ms: null}),"
              " older: shown({ttft_ms: 80})}));")
    done = subprocess.run([NODE or "node", "--input-type=module", "-e", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out: dict[str, Any] = json.loads(done.stdout)
    assert out["streamed"] == ["112 ms", "96 ms", ""], out
    assert out["whole"][:2] == ["112 ms", "(2058 ms)"] and "not a TTFT" in out["whole"][2], out
    assert out["none"] == ["112 ms", "\u2013", ""] and out["older"] == ["112 ms", "80 ms", ""], out
