"""The page's own JavaScript modules (static/*.js, the vendored topojson-client aside), read as text: every name a
module exports is imported by another module of the page or by a test here (`{Name}` or `R.Name` in its script). An export nobody imports is a
function kept for no caller, or one that reads as part of a module's surface while only the module uses it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "aigrid" / "dashboard" / "static"
TESTS = Path(__file__).resolve().parent
VENDORED = {"topojson-client.min.js"}
NODE = shutil.which("node")

EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)", re.M)
IMPORT = re.compile(r"^import\s*\{([^}]*)\}\s*from\s*[\"']\./([\w.-]+)[\"']", re.M)


def modules() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(STATIC.glob("*.js")) if p.name not in VENDORED}


def test_every_export_of_the_page_has_a_caller_outside_its_module() -> None:
    mods = modules()
    imported: set[tuple[str, str]] = set()
    for text in mods.values():
        for names, source in IMPORT.findall(text):
            imported.update((source, n.split(" as ")[0].strip()) for n in names.split(",") if n.strip())
    tests = "\n".join(p.read_text() for p in TESTS.glob("*.py") if p.name != Path(__file__).name)
    unused = [f"{mod}: {name}" for mod, text in mods.items() for name in EXPORT.findall(text)
              if (mod, name) not in imported and not re.search(rf"(?:\.|[{{,]\s*){re.escape(name)}\b", tests)]
    assert unused == [], unused


def test_the_reading_sees_the_page_s_modules_and_their_imports() -> None:
    """The check above reads what it should: app.js imports SiteCharts from charts.js, and each module exports."""
    mods = modules()
    assert {"app.js", "charts.js", "live.js", "map.js", "replay.js", "site_text.js", "table.js"} <= set(mods)
    assert ("{SiteCharts}", "charts.js") in [("{" + n.strip() + "}", s) for n, s in IMPORT.findall(mods["app.js"])]
    assert all(EXPORT.search(text) for name, text in mods.items() if name != "app.js")


def test_the_page_writes_a_time_in_one_place() -> None:
    """The header's clock (app.js) and the decisions' time column (table.js) each wrote a UTC time
    (toISOString().slice(11, 19)) and a simulated one (HH:MM:SS padded) for themselves: both read time_text.js."""
    mods = modules()
    for mark in ("toISOString", "padStart(2"):
        assert [name for name, text in mods.items() if mark in text] == ["time_text.js"], mark
    for user in ("app.js", "table.js"):
        assert ("simTime, utcTime", "time_text.js") in IMPORT.findall(mods[user]), user


@pytest.mark.skipif(NODE is None, reason="no node: the page's time_text.js is not run")
def test_the_times_read_as_the_clock_and_the_table_show_them(tmp_path: Path) -> None:
    module = tmp_path / "time_text.mjs"
    shutil.copy(STATIC / "time_text.js", module)
    instants = [0.0, 1_700_000_000.9, 1_767_225_599.999]
    sims = [0.0, 59.99, 3725.7, 100 * 3600 + 61]
    script = (f"import {{simTime, utcTime}} from {json.dumps(module.as_uri())};"
              f"process.stdout.write(JSON.stringify([{json.dumps(instants)}.map(utcTime), {json.dumps(sims)}.map(simTime)]));")
    done = subprocess.run([NODE or "node", "--input-type=module", "-e", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    utc, sim = json.loads(done.stdout)
    assert utc == [datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") for t in instants]
    assert sim == ["00:00:00", "00:00:59", "01:02:05", "100:01:01"]
