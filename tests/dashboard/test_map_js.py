"""The page's world map (static/map.js) run in node with a stand-in for the DOM: GridMap.setSites draws any number
of sites. Skipped without node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

MAP_JS = Path(__file__).resolve().parents[2] / "src" / "aigrid" / "dashboard" / "static" / "map.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node: the page's map.js is not tried")

# the least of the DOM that GridMap's constructor and setSites touch
DOM = """
class Node { constructor() { this.attrs = {}; this.children = []; this.dataset = {}; this.textContent = ""; }
  setAttribute(k, v) { this.attrs[k] = String(v); } appendChild(c) { this.children.push(c); return c; }
  remove() {} querySelector() { return new Node(); } addEventListener() {} }
globalThis.document = {createElementNS: () => new Node()};
"""


@pytest.fixture
def module(tmp_path: Path) -> Path:
    """map.js as an ES module in tmp_path, beside the site_text.js it imports."""
    module = tmp_path / "map.mjs"
    shutil.copy(MAP_JS, module)
    shutil.copy(MAP_JS.with_name("site_text.js"), tmp_path / "site_text.js")
    (tmp_path / "package.json").write_text('{"type": "module"}')
    return module


def node(script: str) -> Any:
    """What `script` (an ES module) writes to stdout, read as JSON; it must exit 0."""
    done = subprocess.run([NODE or "node", "--input-type=module", "-e", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_grid_of_200000_sites_is_drawn(module: Path) -> None:
    """setSites took the largest site's slots as Math.max(1, ...sites.map(...)): an argument per site, and past
    about 125,000 sites a RangeError (Maximum call stack size exceeded), so the map drew nothing at all."""
    n = 200_000
    script = (DOM + f"const {{GridMap}} = await import({json.dumps(module.as_uri())});"
              "const m = new GridMap(new Node());"
              f"const sites = Array.from({{length: {n}}}, (_, i) => ({{id: 's' + i, lat: 0, lon: 0, slots: 1 + i % 7}}));"
              "sites[5].slots = 70;"
              "m.setSites(sites);"
              "const r = id => Number(m.sites.get(id).body.attrs.r);"
              "process.stdout.write(JSON.stringify({n: m.sites.size, big: r('s5'), small: r('s0')}));")
    out = node(script)
    # every site drawn; the largest (70 slots) at the full radius of a crowded map (2.5 + 7), one slot at sqrt(1/70)
    assert out == {"n": n, "big": 9.5, "small": round(2.5 + 7 * (1 / 70) ** 0.5, 1)}, out


def test_a_planets_unchanged_sites_are_not_drawn_again(module: Path) -> None:
    """Each picture rebuilt and set every site's fill path, radius, ring, class and tooltip: on 4,400 sites a map frame
    went from 225 to 349 ms (median, review RV8). A site is written only where what it shows changed; its fill in
    1/20 steps; a planet's tooltips when the pointer comes (or when its numbers are asked for)."""
    script = (DOM + "let writes = 0; const set = Node.prototype.setAttribute;"
              "Node.prototype.setAttribute = function (k, v) { writes += 1; return set.call(this, k, v); };"
              f"const {{GridMap}} = await import({json.dumps(module.as_uri())});"
              "const m = new GridMap(new Node());"
              "const planet = load => Array.from({length: 4400}, (_, i) => ({id: 's' + i, lat: 0, lon: 0,"
              "  slots: 1 + i % 7, running: 1, waiting: 0, load, health: 'ok', ttft_ms: 200 + i}));"
              "m.setSites(planet(0.5)); const first = writes; writes = 0;"
              "m.setSites(planet(0.5)); const same = writes; writes = 0;"
              "m.setSites(planet(0.51)); const within = writes; writes = 0;"
              "m.setSites(planet(0.6)); const step = writes;"
              "process.stdout.write(JSON.stringify({first: first > 0, same, within, step,"
              "  told: m.describe('s3')}));")
    out = node(script)
    # the same picture writes nothing; a load moved within its 1/20 step neither; the next step each site's fill once
    assert out["first"] and out["same"] == 0 and out["within"] == 0 and out["step"] == 4400, out
    assert out["told"].startswith("s3") and "load 0.60 (busy)" in out["told"], out  # the numbers are the latest


def test_only_the_site_buttons_whose_line_opened_or_closed_are_written(module: Path) -> None:
    """app.js's renderSiteInfo walked every site button each picture to say which one's numbers line was open
    (aria-expanded): on a planet a selector matched against thousands of sites every picture. GridMap.setExpanded
    writes the button that was open and the one opened alone, nothing while it stays; a site drawn while its line
    is open says so as it comes; a planet's sites (no buttons) are never written."""
    script = (DOM + "const written = []; const set = Node.prototype.setAttribute;"
              "Node.prototype.setAttribute = function (k, v) {"
              "  if (k === 'aria-expanded') written.push(this.dataset.site ?? this.attrs['data-site']);"
              "  return set.call(this, k, v); };"
              f"const {{GridMap}} = await import({json.dumps(module.as_uri())});"
              "const m = new GridMap(new Node());"
              "const grid = (n, load) => Array.from({length: n}, (_, i) => ({id: 's' + i, lat: 0, lon: 0,"
              "  slots: 1, running: 1, waiting: 0, load, health: 'ok', ttft_ms: 200}));"
              "const state = id => m.sites.get(id).g.attrs['aria-expanded'];"
              "m.setSites(grid(30, 0.5)); const drawn = written.length; written.length = 0;"
              "m.setExpanded('s3'); const opened = [...written]; written.length = 0;"
              "for (const load of [0.6, 0.7, 0.8]) { m.setSites(grid(30, load)); m.setExpanded('s3'); }"
              "const kept = [...written]; written.length = 0;"
              "m.setExpanded('s7'); const moved = [...written, state('s3'), state('s7')]; written.length = 0;"
              "m.setSites(grid(7, 0.5)); m.setSites(grid(30, 0.5));"  # s7 gone, drawn again while open
              "const back = [state('s7'), state('s3')]; written.length = 0;"
              "const p = new GridMap(new Node()); p.setSites(grid(4400, 0.5)); p.setExpanded('s3');"
              "p.setSites(grid(4400, 0.6)); p.setExpanded(null);"
              "process.stdout.write(JSON.stringify({drawn, opened, kept, moved, back, planet: written.length}));")
    out = node(script)
    assert out["drawn"] == 30 and out["opened"] == ["s3"] and out["kept"] == [], out
    assert out["moved"] == ["s3", "s7", "false", "true"], out
    assert out["back"] == ["true", "false"], out
    assert out["planet"] == 0, out
