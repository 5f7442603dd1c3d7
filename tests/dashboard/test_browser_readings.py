"""What the page's figures say, read in headless Chromium as an operator reads them: a site that is down shows no
TTFT as if live, a site is named once, a replay's summary and decision count say what they are. The page's own
modules (charts.js, map.js: the cards and the map's tooltips) are driven with sites as the feed sends them; the
replay is the real page on a gateway serving a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.dashboard.browser import chromium_page, open_dashboard
from tests.dashboard.conftest import Served
from tests.dashboard.test_browser import write_run

# the page's GridMap on an svg of its own (1000 x 400, the layers the page's map has), as `svg` and `map`: the start of
# each script below that drives the map apart from the page's own
OWN_MAP = """
  const {GridMap} = await import('/dashboard/static/map.js');
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.body.appendChild(document.createElementNS(NS, 'svg'));
  svg.setAttribute('width', '1000'); svg.setAttribute('height', '400');
  for (const id of ['map-land', 'map-arcs', 'map-clients', 'map-sites'])
    svg.appendChild(document.createElementNS(NS, 'g')).id = id;
  const map = new GridMap(svg);
"""

# the page's SiteCharts and GridMap on elements of their own, fed `ticks` (lists of sites) one after another;
# back: each card's name, TTFT caption and TTFT line, and each site's map tooltip
DRIVE = "async ticks => {" + OWN_MAP + """
  const {SiteCharts} = await import('/dashboard/static/charts.js');
  const box = document.body.appendChild(document.createElement('div'));
  const charts = new SiteCharts(box);
  for (const sites of ticks) { charts.push(sites); map.setSites(sites); }
  const cards = [...box.querySelectorAll('.card')].map(c => ({
    site: c.dataset.site, name: c.querySelector('.title span').textContent,
    ttft: c.querySelectorAll('.chart')[1].firstChild.textContent,
    line: c.querySelectorAll('.chart')[1].querySelector('.ttft').getAttribute('d')}));
  const tips = Object.fromEntries([...svg.querySelectorAll('g.site')].map(g => [g.dataset.site,
    g.querySelector('title').textContent]));
  return {cards, tips};
}"""


def drive(page: Any, ticks: list[list[dict[str, Any]]]) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(DRIVE, ticks)
    return result


def site(sid: str, **over: Any) -> dict[str, Any]:
    return {"id": sid, "name": "Sao Paulo", "jurisdiction": "BR", "lat": -23.5, "lon": -46.6, "slots": 2,
            "running": 0, "waiting": 0, "health": "ok", "ttft_ms": 240.0, "tokens_per_s": 0.0, **over}


def run_of_arrivals(run: Path, times: list[float]) -> None:
    """write_run's run (the served fixture's replay_dir) with one policy's requests, request i arriving at times[i]."""
    write_run(run)
    header, rows = (run / "requests.csv").read_text().split("\n", 1)
    first = rows.split("\n")[0].split(",")
    lines = []
    for i, t in enumerate(times):
        cells = list(first)
        cells[1], cells[2] = str(i), f"{t:.4f}"
        lines.append(",".join(cells))
    (run / "requests.csv").write_text(header + "\n" + "\n".join(lines) + "\n")


def test_a_site_down_shows_no_ttft_as_if_live(served_to_read: Served, chromium: Any) -> None:
    """A site marked down kept its last TTFT in its card and tooltip ('TTFT 240 ms' beside 'down'), read as live
    data: it says 'n/a (down)' now, and its chart has a gap there (the line ran on over the missing ticks)."""
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        out = drive(page, [[site("gru")], [site("gru", health="down")]])
        (card,) = out["cards"]
        assert card["ttft"] == "TTFT n/a (down)", card
        assert out["tips"]["gru"].endswith("health down\nTTFT n/a (down)"), out["tips"]
        out = drive(page, [[site("gru")], [site("gru", health="down")], [site("gru", health="down")],
                           [site("gru", ttft_ms=180.0)]])
        (card,) = out["cards"]
        assert card["ttft"] == "TTFT 180 ms", card  # up again: live figures
        assert card["line"].count("M") == 2 and card["line"].count("L") == 0, card  # two points, the gap between
    assert external == [] and errors == [], (external, errors)


# the page's GridMap on an svg of its own, fed `sites`; back: per site, how full its marker is drawn (the height of its
# filled part over the circle's diameter, from the rendered geometry), the opacity of the rest of the circle, its
# tooltip; and the map legend's text
FILL = "async sites => {" + OWN_MAP + """
  map.setSites(sites);
  const out = {};
  for (const g of svg.querySelectorAll('g.site')) {
    const body = g.querySelector('circle.body'), level = g.querySelector('.level');
    const diameter = 2 * Number(body.getAttribute('r'));
    out[g.dataset.site] = {
      filled: level ? Math.round(100 * level.getBBox().height / diameter) / 100 : null,
      shown: level ? getComputedStyle(level).display !== 'none' && Number(getComputedStyle(level).fillOpacity) : null,
      rest: Number(getComputedStyle(body).fillOpacity), lines: level && getComputedStyle(level).fill === 'none',
      width: level ? Math.round(100 * level.getBBox().width / diameter) / 100 : null,
      tip: g.querySelector('title').textContent};
  }
  return {sites: out, legend: document.querySelector('#map-panel .legend').textContent.replace(/\\s+/g, ' ')};
}"""


def test_a_sites_load_reads_on_the_map_without_its_colour(served_to_read: Served, chromium: Any) -> None:
    """A site's load on the map was its colour alone, green, yellow or red: to a red-green colour-blind operator an
    idle site and a saturated one were the same dot (WCAG 1.4.1). The circle fills from the bottom with the load now,
    empty when idle and full when saturated, over a faint rest; a site down is crossed out; the legend says so, and the
    tooltip names the load."""
    sites = [site("idle", load=0.0), site("half", load=0.75, running=1, lat=10, lon=10),
             site("full", load=1.5, running=2, waiting=1, lat=40, lon=60),
             site("gone", load=1.0, health="down", lat=-20, lon=20)]
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        out = page.evaluate(FILL, sites)
    got = out["sites"]
    assert got["idle"]["filled"] == 0 and got["full"]["filled"] == 1, got  # empty, and full to its top
    assert 0.7 <= got["half"]["filled"] <= 0.8, got
    assert got["full"]["shown"] >= 0.8 and got["idle"]["rest"] <= 0.3, got  # the fill stands out against the rest
    # a site down is crossed out (its grey and red edge read as a full circle without colour)
    assert got["gone"]["lines"] and got["gone"]["filled"] >= 0.5 and got["gone"]["width"] >= 0.5, got
    assert not got["full"]["lines"], got
    assert "load 0.00 (idle)" in got["idle"]["tip"] and "load 1.50 (saturated)" in got["full"]["tip"], got
    assert "fill level = load" in out["legend"], out["legend"]
    assert external == [] and errors == [], (external, errors)


# the page's GridMap on an svg of its own, one site (gru), `rows` drawn on it: each test's own script goes on from here
ARCS = "async rows => {" + OWN_MAP + """
  map.setSites([{id: 'gru', lat: -23.5, lon: -46.6, slots: 2, running: 0, waiting: 0, health: 'ok'}]);
  map.addArcs(rows);
"""


def test_a_request_served_nowhere_is_told_on_the_map_without_its_colour(served_to_read: Served,
                                                                        chromium: Any) -> None:
    """A request rejected or failed everywhere was a red dot at its client, an arc's dot in the serving site's colour
    otherwise (the palette has oranges and greens): its colour was its only mark where arcs cross. It is a hollow ring
    now, the served one a filled dot, and the legend says so."""
    rows = [{"id": "served", "client": {"lat": 48.9, "lon": 2.35}, "site": "gru", "status": "ok"},
            {"id": "refused", "client": {"lat": 40.7, "lon": -74.0}, "site": None, "status": "rejected"},
            {"id": "failed", "client": {"lat": 35.7, "lon": 139.7}, "site": "gru", "status": "failed"}]
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        out = page.evaluate(ARCS + """
          map.fade();
          return {dots: Object.fromEntries([...svg.querySelectorAll('#map-clients circle')].map(c => {
                    const st = getComputedStyle(c);
                    return [c.dataset.decision, {fill: st.fill, stroke: Number.parseFloat(st.strokeWidth),
                                                 shown: Number(st.strokeOpacity), r: Number(c.getAttribute('r'))}];
                  })),
                  arcs: [...svg.querySelectorAll('#map-arcs path')].map(p => p.dataset.decision),
                  legend: document.querySelector('#map-panel .legend').textContent};
        }""", rows)
    dots = out["dots"]
    assert dots["served"]["fill"] != "none" and out["arcs"] == ["served"], out
    for sid in ("refused", "failed"):  # a ring: no fill, a stroke of its own, larger than a dot, and no arc
        assert dots[sid]["fill"] == "none" and dots[sid]["stroke"] >= 1.5 and dots[sid]["shown"] > 0.5, dots
        assert dots[sid]["r"] > dots["served"]["r"], dots
    assert "request rejected or failed (a ring, no arc)" in out["legend"], out["legend"]
    assert external == [] and errors == [], (external, errors)


def test_a_request_refused_before_any_engine_work_is_not_drawn_as_served(served_to_read: Served,
                                                                         chromium: Any) -> None:
    """A request shed (429) or refused for a deadline no site could meet (503) is published with its decision, which
    names the site it would have gone to: the map drew its arc there, in that site's colour, as if served, and a
    replay's shed request was a plain dot. Only a request on its way, served, or whose answer began there (cut, an
    engine's error) has an arc; the others are served nowhere, a ring."""
    rows = [{"id": "late", "client": {"lat": 48.9, "lon": 2.35}, "site": "gru", "chosen": "gru-smollm2",
             "served_by": None, "status": "deadline_unmeetable"},
            {"id": "shed", "client": {"lat": 40.7, "lon": -74.0}, "site": "gru", "chosen": "gru-smollm2",
             "served_by": None, "status": "overloaded"},
            {"id": "sim-shed", "client": {"lat": 52.5, "lon": 13.4}, "site": "", "served_by": "", "status": "shed"},
            {"id": "routing", "client": {"lat": 35.7, "lon": 139.7}, "site": "gru", "chosen": "gru-smollm2",
             "served_by": None, "status": "routing"},
            {"id": "cut", "client": {"lat": 1.3, "lon": 103.8}, "site": "gru", "served_by": "gru-smollm2",
             "status": "interrupted"}]
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        out = page.evaluate(ARCS + """
          return {rings: [...svg.querySelectorAll('#map-clients circle')]
                    .filter(c => getComputedStyle(c).fill === 'none').map(c => c.dataset.decision),
                  arcs: [...svg.querySelectorAll('#map-arcs path')].map(p => p.dataset.decision)};
        }""", rows)
    assert sorted(out["rings"]) == ["late", "shed", "sim-shed"], out
    assert sorted(out["arcs"]) == ["cut", "routing"], out
    assert external == [] and errors == [], (external, errors)


def test_a_cards_waiting_line_is_told_from_its_queue_line_without_colour(served_to_read: Served,
                                                                         chromium: Any) -> None:
    """A card's queue chart draws the queue (running + waiting) and the requests waiting: the two lines were told
    apart by colour alone (yellow and red, one colour to a red-green colour-blind eye), so a queue that was all
    waiting read as one that was all running. The waiting line is dashed, and the panel's heading says so."""
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        out = page.evaluate("""async ticks => {
          const {SiteCharts} = await import('/dashboard/static/charts.js');
          const box = document.body.appendChild(document.createElement('div'));
          const charts = new SiteCharts(box);
          for (const sites of ticks) charts.push(sites);
          const dash = cls => getComputedStyle(box.querySelector('.chart path.' + cls)).strokeDasharray;
          return {queue: dash('queue'), waiting: dash('waiting'),
                  heading: document.querySelector('#sites-panel h2').textContent};
        }""", [[site("gru", running=2, waiting=1)], [site("gru", running=2, waiting=3)]])
    assert out["queue"] == "none" and out["waiting"] not in ("none", ""), out
    assert "waiting dashed" in out["heading"], out
    assert external == [] and errors == [], (external, errors)


def test_on_a_grid_of_many_sites_the_cards_show_those_down_and_say_how_many(served_to_read: Served,
                                                                            chromium: Any) -> None:
    """With more than 12 sites the cards were the 12 busiest: a site down, sent nothing so its queue empty, had no
    card at all, nor one degraded and idle, and nothing said that sites were left out. Those down, then degraded,
    come first now, then the busiest, and the heading says how many of how many."""
    busy = [site(f"s{i:02d}", running=1, waiting=i) for i in range(19)]  # s18 the busiest
    ticks = [busy + [site("zz-down", health="down"), site("zz-slow", health="degraded")]] * 2
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        out = page.evaluate("""async ticks => {
          const {SiteCharts} = await import('/dashboard/static/charts.js');
          const box = document.createElement('div'), count = document.createElement('span');
          const charts = new SiteCharts(box, count);
          for (const sites of ticks) charts.push(sites);
          const shown = [...box.querySelectorAll('.card')].map(c => c.dataset.site), said = count.textContent;
          charts.push(ticks[0].slice(0, 12));  // 12 sites: each has its card, and the heading no count
          return {shown, count: said, all: box.querySelectorAll('.card').length,
                  after: count.textContent};
        }""", ticks)
        assert out["shown"] == ["zz-down", "zz-slow"] + [f"s{i:02d}" for i in range(18, 8, -1)], out
        assert out["count"] == "(12 of 21 shown: down and degraded first, then the busiest)", out
        assert out["all"] == 12 and out["after"] == "", out
    assert external == [] and errors == [], (external, errors)


def test_a_held_ttft_says_how_old_it_is_and_a_site_is_named_once(served_to_read: Served, chromium: Any) -> None:
    """A replay holds a site's last TTFT between its arrivals (it read 'n/a' beside a chart with a line): the card
    and tooltip say how old the value is. In a planet run a site's name is its id: 's3180-cn s3180-cn' read twice."""
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        page.goto(served_to_read.base + "/dashboard")
        page.wait_for_function("() => document.body.dataset.mode === 'live'", timeout=15000)
        planet = {"name": "s3180-cn", "jurisdiction": "CN", "lat": 31.2, "lon": 121.5}
        out = drive(page, [[site("s3180-cn", **planet), site("nrt", name="Tokyo", jurisdiction="JP")],
                           [site("s3180-cn", **planet, ttft_age_s=37.2),
                            site("nrt", name="Tokyo", jurisdiction="JP", ttft_ms=None)]])
        cards = {c["site"]: c for c in out["cards"]}
        assert cards["s3180-cn"]["name"] == "s3180-cn \u00b7 CN", cards
        assert cards["nrt"]["name"] == "nrt Tokyo \u00b7 JP", cards
        assert cards["s3180-cn"]["ttft"] == "TTFT 240 ms (last, 37 s ago)", cards
        assert cards["s3180-cn"]["line"].count("L") == 1, cards  # the chart plots the value its card shows
        assert cards["nrt"]["ttft"] == "TTFT n/a", cards
        assert out["tips"]["s3180-cn"].split("\n")[0] == "s3180-cn \u00b7 CN", out["tips"]
        assert out["tips"]["s3180-cn"].endswith("TTFT 240 ms (last, 37 s ago)"), out["tips"]
    assert external == [], external


def test_a_replays_summary_says_what_its_figures_are(served: Served, tmp_path: Path, chromium: Any) -> None:
    """The summary showed goodput 0.97 and mean_utilization 0.2 under their field names (read as a count, or ms),
    and its numbers left-aligned under the first headers, right under the last. Percentages under labels now,
    numbers right, the policy left."""
    write_run(tmp_path / "run")  # the served fixture's replay_dir
    external: list[str] = []
    with chromium_page(chromium, served.base, external) as page:
        errors = open_dashboard(page, served.base + "/dashboard?replay=1", "replay")
        page.wait_for_selector("#summary table", timeout=15000)
        heads = page.eval_on_selector_all("#summary tr:first-child th", "ts => ts.map(t => t.textContent)")
        assert heads == ["policy", "TTFT p50 (ms)", "TTFT p99 (ms)", "goodput", "cost (USD)", "rejected",
                         "mean utilization"], heads
        cells = page.eval_on_selector_all(
            "#summary tr", "trs => trs.map(tr => [...tr.children].map(c => [c.textContent, getComputedStyle(c).textAlign]))")
        balanced = next(r for r in cells if r[0][0] == "balanced")
        assert [c[0] for c in balanced] == ["balanced", "170", "189", "97%", "0.0004", "1", "20%"], balanced
        for row in cells:
            assert row[0][1] == "left" and {c[1] for c in row[1:]} == {"right"}, row
    assert external == [] and errors == [], (external, errors)


def test_a_replays_decision_count_says_how_many_of_the_run_are_shown(served: Served, tmp_path: Path,
                                                                     chromium: Any) -> None:
    """The decisions' counter said '2100 seen' of a 30,000-request run: it counted the rows the table was given (a
    tick keeps its newest 60 arrivals), and an operator read it as the run's count. It says 'newest 50 shown of N
    so far, of M in the run' now (the run's first request, at 0 s, among them: it was never replayed)."""
    # 1000 requests, 500 a simulated second: a tick (0.5 s) of 250 arrivals, of which the table is given 60
    run_of_arrivals(tmp_path / "run", [i / 500 for i in range(1000)])
    external: list[str] = []
    with chromium_page(chromium, served.base, external) as page:
        errors = open_dashboard(page, served.base + "/dashboard?replay=1", "replay")
        page.wait_for_function("() => document.body.dataset.replayDone === '1'", timeout=30000)
        assert page.text_content("#decision-count") == "(newest 50 shown of 1,000 so far, of 1,000 in the run)"
        assert page.eval_on_selector_all("#decisions tbody tr", "trs => trs.length") == 50
    assert external == [] and errors == [], (external, errors)


def test_after_a_seek_back_the_decisions_are_those_arrived_by_then(served: Served, tmp_path: Path,
                                                                   chromium: Any) -> None:
    """Review RV5 of 15bb9c3a: a seek kept the table's rows of the time it left, so a seek back showed requests yet
    to arrive under 'newest 50 shown of N so far'. The table now shows the newest arrived by the new time. The run:
    60 requests in its first second, 60 at 100 s, one at 600 s; played to its end, then sought back to ~50 s."""
    run_of_arrivals(tmp_path / "run", [j / 60 for j in range(60)] + [100 + j / 60 for j in range(60)] + [600.0])
    external: list[str] = []
    with chromium_page(chromium, served.base, external) as page:
        errors = open_dashboard(page, served.base + "/dashboard?replay=1", "replay")
        page.select_option("#replay-speed", "600")
        page.wait_for_function("() => document.body.dataset.replayDone === '1'", timeout=30000)
        shown = "() => [...document.querySelectorAll('#decisions tbody tr')].map(tr => Number(tr.dataset.id.split('#')[1]))"
        assert max(page.evaluate(shown)) == 120  # the run's last request, at 600 s
        page.select_option("#replay-speed", "1")
        page.eval_on_selector("#replay-seek", "s => { s.value = '83'; s.dispatchEvent(new Event('input')); }")
        page.click("#replay-play")
        page.wait_for_function("() => Number(document.body.dataset.replayT) < 100", timeout=15000)  # a tick from ~50 s
        ids = page.evaluate(shown)
        assert sorted(ids) == list(range(10, 60)), ids  # the newest 50 arrived by ~50 s, none of those at 100 s
        assert page.text_content("#decision-count") == "(newest 50 shown of 60 so far, of 121 in the run)"
    assert external == [] and errors == [], (external, errors)


def test_every_status_that_went_wrong_is_coloured_as_rejected_and_failed_are(served_to_read: Served,
                                                                             chromium: Any) -> None:
    """The decisions' status was red for 'rejected' and 'failed' only: a 503 deadline_unmeetable, a 429 overloaded,
    a cut answer (interrupted) and an engine's error (http_502) read as neutral as a request on its way. Every status
    that is not an answer, a request on its way or its client's leaving is coloured as a rejected one."""
    statuses = ["rejected", "failed", "deadline_unmeetable", "overloaded", "interrupted", "http_502", "shed",
                "ok", "routing", "streaming", "client_closed"]
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        colour = page.evaluate("""async statuses => {
          const {DecisionTable} = await import('/dashboard/static/table.js');
          const body = document.body.appendChild(document.createElement('table')).createTBody();
          const table = new DecisionTable(body, document.body.appendChild(document.createElement('span')));
          table.upsert(statuses.map(s => ({id: 'row-' + s, at: 0, status: s, reason: ''})), false);
          return Object.fromEntries(statuses.map(s =>
            [s, getComputedStyle(body.querySelector(`tr[data-id="row-${s}"]`).lastElementChild).color]));
        }""", statuses)
    for status in ("failed", "deadline_unmeetable", "overloaded", "interrupted", "http_502", "shed"):
        assert colour[status] == colour["rejected"], (status, colour)
    for status in ("ok", "routing", "streaming", "client_closed"):
        assert colour[status] != colour["rejected"], (status, colour)
    assert external == [] and errors == [], (external, errors)
