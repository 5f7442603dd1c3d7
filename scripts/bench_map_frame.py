"""What one picture of a planet costs the live map: headless Chromium (Debian's /usr/bin/chromium, Playwright) runs
the dashboard's own map.js, from the working tree or from a git revision, on an svg of its own, and times
`frames` calls of GridMap.setSites on `sites` synthetic sites (seeded; each picture moves every site's load a little,
as a replay's ticks do), each followed by what app.js's renderSiteInfo does to the site buttons with one site's
numbers line open (GridMap.setExpanded; a revision before it walked every site button, that walk is run in its
place), up to the next painted frame (two requestAnimationFrame). Prints median and max ms per picture for each
source given. A benchmark that prints figures, never a timed assertion.

  .venv/bin/python scripts/bench_map_frame.py --sites 4400 --frames 20 --rev d5276c33~1 --rev HEAD --rev WORK
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent.parent / "src" / "aigrid" / "dashboard" / "static"
ORIGIN = "http://bench.invalid"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

RUN = """async ([sites, frames]) => {
  const {GridMap} = await import('/dashboard/static/map.js');
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.body.appendChild(document.createElementNS(NS, 'svg'));
  svg.setAttribute('width', '1600'); svg.setAttribute('height', '640');
  for (const id of ['map-land', 'map-arcs', 'map-clients', 'map-sites'])
    svg.appendChild(document.createElementNS(NS, 'g')).id = id;
  const map = new GridMap(svg);
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const list = Array.from({length: sites}, (_, i) => ({id: 's' + i, city: 'City ' + i, lat: rnd() * 140 - 58,
    lon: rnd() * 360 - 180, slots: 1 + Math.floor(rnd() * 8), running: 0, waiting: 0, load: rnd(),
    health: 'ok', ttft_ms: 200}));
  const paint = () => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  // app.js's renderSiteInfo, its site buttons' part, with s3's line open
  const layer = document.getElementById('map-sites');
  const buttons = map.setExpanded ? id => map.setExpanded(id) : id => {
    for (const g of layer.querySelectorAll('g.site[role="button"]')) {
      const open = String(g.dataset.site === id);
      if (g.getAttribute('aria-expanded') !== open) g.setAttribute('aria-expanded', open);
    }
  };
  map.setSites(list); buttons('s3'); await paint();
  const times = [];
  for (let f = 0; f < frames; f++) {
    const tick = list.map(s => {
      const load = Math.max(0, Math.min(1.5, s.load + (rnd() - 0.5) * 0.1));
      const running = Math.min(s.slots, Math.round(load * s.slots));
      return Object.assign(s, {load, running, waiting: Math.max(0, Math.round((load - 1) * s.slots)),
                               ttft_ms: 150 + Math.round(rnd() * 100)});
    }).map(s => ({...s}));
    const t0 = performance.now();
    map.setSites(tick);
    const tb = performance.now();
    buttons('s3');
    const t1 = performance.now();
    await paint();
    times.push([performance.now() - t0, t1 - t0, t1 - tb]);
  }
  return times;
}"""


def source_of(rev: str, name: str) -> bytes:
    if rev == "WORK":
        return (STATIC / name).read_bytes()
    out: bytes = subprocess.run(["git", "show", f"{rev}:src/aigrid/dashboard/static/{name}"], cwd=STATIC,
                                capture_output=True, check=True).stdout
    return out


def measure(pw: Any, rev: str, sites: int, frames: int) -> list[list[float]]:
    browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
    try:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        def serve(route: Any) -> None:
            path = route.request.url[len(ORIGIN):]
            if path.startswith("/dashboard/static/"):
                route.fulfill(body=source_of(rev, path.rsplit("/", 1)[1]), content_type="text/javascript")
            else:
                route.fulfill(body="<!doctype html><body></body>", content_type="text/html")

        page.route("**/*", serve)
        page.goto(ORIGIN + "/")
        times: list[list[float]] = page.evaluate(RUN, [sites, frames])
        return times
    finally:
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=4400)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--rev", action="append", help="git revision of the static files, or WORK (the working tree)")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        for rev in a.rev or ["WORK"]:
            got = measure(pw, rev, a.sites, a.frames)
            times, script, buttons = [t for t, _, _ in got], [s for _, s, _ in got], [b for _, _, b in got]
            print(f"{rev:>12}: {a.sites} sites, {a.frames} pictures: median {statistics.median(times):.0f} ms, "
                  f"max {max(times):.0f} ms per picture (setSites and the buttons alone: median "
                  f"{statistics.median(script):.0f} ms, max {max(script):.0f} ms; the buttons alone: median "
                  f"{statistics.median(buttons):.3f} ms, max {max(buttons):.3f} ms)")
    print("load", Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
