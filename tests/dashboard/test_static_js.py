"""The page's own JavaScript modules (static/*.js, the vendored topojson-client aside), read as text: every name a
module exports is imported by another module of the page or by a test here (`{Name}` or `R.Name` in its script). An export nobody imports is a
function kept for no caller, or one that reads as part of a module's surface while only the module uses it."""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "src" / "aigrid" / "dashboard" / "static"
TESTS = Path(__file__).resolve().parent
VENDORED = {"topojson-client.min.js"}

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

