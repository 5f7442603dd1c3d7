"""The page as an on-call operator uses it, in headless Chromium against a gateway on a real socket (FAKE engines):
with the keyboard alone, on a phone's width, when the gateway goes away, and which clock its times are on."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from aigrid.dashboard.feed import Feed
from aigrid.gateway.app import build_gateway
from tests.dashboard.browser import chromium_page, errors_of, open_dashboard
from tests.dashboard.conftest import CHAT, Served, dashboard_app, no_sleep, served_dashboard
from tests.dashboard.test_browser import write_run
from tests.dashboard.unreachable_engine import Unreachable
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine

FOCUSED = "() => document.activeElement ? document.activeElement.id : ''"


def test_the_replay_picker_is_reached_and_opened_with_the_keyboard(served: Served, tmp_path: Path,
                                                                   chromium: Any) -> None:
    """'Replay a simulator run...' was a label around a `hidden` file input: display none, so Tab never reached it
    (the page's only stop was the footer's link) and an operator without a mouse could not open a run."""
    run = tmp_path / "run"  # the served fixture's replay_dir
    write_run(run)
    external: list[str] = []
    with chromium_page(chromium, served.base, external) as page:
        errors = open_dashboard(page, served.base + "/dashboard", "live")
        stops = []
        for _ in range(6):
            page.keyboard.press("Tab")
            stops.append(page.evaluate(FOCUSED))
        assert "replay-files" in stops, stops
        while page.evaluate(FOCUSED) != "replay-files":
            page.keyboard.press("Tab")
        # Space on the focused input is what opens the picker: the browser's activation of a file input is a
        # trusted click on it (its default action opens the chooser). Seen here as that click, cancelled: waiting
        # for Playwright's chooser (expect_file_chooser) raced the arming of its interception and timed out under
        # load (once in ~21 runs at load 9). The files then go in as the chooser would give them.
        # Registered after the page's own handlers: one of them cancelling the click (so the chooser) fails it here.
        page.evaluate("() => document.getElementById('replay-files').addEventListener('click', ev => {"
                      " window.__activated = ev.isTrusted && !ev.defaultPrevented; ev.preventDefault(); },"
                      " {once: true})")
        page.keyboard.press("Space")
        page.wait_for_function("() => window.__activated === true", timeout=15000)
        assert page.evaluate(FOCUSED) == "replay-files"
        page.set_input_files("#replay-files", [str(run / "requests.csv"), str(run / "summary.json")])
        page.wait_for_function("() => document.body.dataset.mode === 'replay'", timeout=30000)
        # every control of the replay bar has a name a screen reader reads (the seek slider had none)
        unnamed = page.eval_on_selector_all(
            "#replay-bar button, #replay-bar select, #replay-bar input",
            "es => es.filter(e => !(e.getAttribute('aria-label') || (e.labels && e.labels.length) || "
            "e.textContent.trim())).map(e => e.id)")
        assert unnamed == [], unnamed
    assert external == [] and errors == [], (external, errors)


def test_the_page_does_not_scroll_sideways_on_a_phone(served_to_read: Served, chromium: Any) -> None:
    """The decisions table (14 columns, nowrap) made a 390 px wide page 900 px wide: the whole page, map and header
    included, scrolled sideways. The table scrolls inside its own panel now."""
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(served_to_read.base + "/dashboard")
        page.wait_for_function("() => document.querySelectorAll('#map-sites g.site').length === 4", timeout=15000)
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], widths
        table = page.evaluate("() => { const t = document.getElementById('decisions'); "
                              "return [t.scrollWidth, t.parentElement.clientWidth, getComputedStyle(t.parentElement).overflowX] }")
        assert table[0] > table[1] and table[2] == "auto", table  # still all there, scrolled in its panel
    assert external == [], external


def test_a_decisions_outcome_is_in_sight_on_a_phone(served: Served, chromium: Any) -> None:
    """At 390 px the decisions table showed time, client, tenant, site and endpoint: the status (ok, rejected,
    failed), its 14th column, was scrolled out of sight, so a failed request read as a row like any other until the
    operator scrolled each table sideways. The status column stays at the right edge of the table's panel now."""
    external: list[str] = []
    with chromium_page(chromium, served.base, external) as page:
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(served.base + "/dashboard")
        page.wait_for_function("() => document.body.dataset.mode === 'live'", timeout=15000)
        r = httpx.post(served.base + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200, r.text
        page.wait_for_function("() => [...document.querySelectorAll('#decisions tbody td:last-child')]"
                               ".some(td => td.textContent === 'ok')", timeout=15000)
        seen = page.evaluate("""() => {
          document.getElementById('decisions-panel').scrollIntoView();  // below the map and cards on a phone
          const box = document.querySelector('#decisions-panel .table-scroll').getBoundingClientRect();
          return [...document.querySelectorAll('#decisions tr')].map(tr => {
            const cell = tr.lastElementChild, r = cell.getBoundingClientRect();
            const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
            return {text: cell.textContent, inside: r.left >= box.left - 1 && r.right <= box.right + 1,
                    top: hit === cell || cell.contains(hit)};
          });
        }""")
        assert seen[0]["text"] == "status" and any(c["text"] == "ok" for c in seen), seen
        assert all(c["inside"] and c["top"] for c in seen), seen  # in the panel, and not under another cell
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], widths
    assert external == [], external


def test_why_a_request_was_rejected_is_read_with_a_tap_on_a_phone(tmp_path: Path, chromium: Any) -> None:
    """Why a request was rejected (or failed, or went where it went) was the status cell's hover title alone: a phone
    has no hover, and the keyboard never reached it. At 390x844 a tap on the status opens a row under the decision
    that says why, as text in sight within the table's panel; Enter closes it and Space opens it again."""
    spec = spec_in(tmp_path)
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    for f in fakes.values():  # every site fails its health check: the request is rejected, no eligible endpoint
        f.down = True
    gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=no_sleep)
    external: list[str] = []
    with served_dashboard(*dashboard_app(gw, tmp_path / "run")) as base, \
            chromium_page(chromium, base, external, viewport={"width": 390, "height": 844}, has_touch=True,
                          is_mobile=True) as page:
        errors = open_dashboard(page, base + "/dashboard", "live")
        page.wait_for_function("() => document.querySelectorAll('#map-sites g.site.down').length > 0", timeout=15000)
        r = httpx.post(base + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_eligible_endpoint", r.text
        decision = r.headers["x-aigrid-decision"]
        reason = next(d["reason"] for d in httpx.get(base + "/dashboard/state", timeout=30).json()["decisions"]
                      if d["id"] == decision)
        assert reason, reason
        row = f'#decisions tr[data-id="{decision}"]'
        page.wait_for_function(f"() => document.querySelector('{row} td:last-child')?.textContent === 'rejected'",
                               timeout=15000)
        page.evaluate("() => document.getElementById('decisions-panel').scrollIntoView()")
        status = page.locator(f"{row} td:last-child button")
        assert status.count() == 1, page.inner_html(f"{row} td:last-child")  # something to tap, not a title
        status.tap()
        page.wait_for_function(f"() => document.querySelector('{row}').nextElementSibling?.classList.contains('why-row')",
                               timeout=15000)
        seen = page.evaluate(f"""() => {{
          const text = document.querySelector('{row}').nextElementSibling.querySelector('.why-text');
          const box = document.querySelector('#decisions-panel .table-scroll').getBoundingClientRect();
          const r = text.getBoundingClientRect(), hit = document.elementFromPoint(r.left + 4, r.top + 4);
          return {{text: text.textContent, inside: r.left >= box.left - 1 && r.right <= box.right + 1 && r.width > 0,
                   top: hit === text || text.contains(hit),
                   expanded: document.querySelector('{row} td:last-child button').getAttribute('aria-expanded')}};
        }}""")
        assert seen["text"] == reason and seen["inside"] and seen["top"], seen  # the whole reason, in sight
        assert seen["expanded"] == "true", seen
        status.focus()  # a native button: Tab reaches it; Enter and Space work it
        page.keyboard.press("Enter")
        assert page.evaluate(f"() => document.querySelector('{row}').nextElementSibling?.className") != "why-row"
        page.keyboard.press("Space")
        assert page.evaluate(f"() => document.querySelector('{row}').nextElementSibling?.className") == "why-row"
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], widths  # the page itself still does not scroll sideways
    assert external == [] and errors == [], (external, errors)


def test_why_a_request_failed_is_read_with_a_tap(tmp_path: Path, chromium: Any) -> None:
    """A failed request's reason said why it was sent where it was ('chose iad-smollm2 at iad ...'), not why it
    failed. Tapped open, its line says each attempt's failure first (the engine named, not addressed), then where
    it was routed."""
    spec = spec_in(tmp_path)
    engines = {e.id: Unreachable(e.id, f"http://10.0.0.{i}:8080") for i, e in enumerate(spec.endpoints, 1)}
    gw = build_gateway(spec, dict(engines), rng=random.Random(7), sleep=no_sleep)
    external: list[str] = []
    with served_dashboard(*dashboard_app(gw, tmp_path / "run")) as base, \
            chromium_page(chromium, base, external, viewport={"width": 390, "height": 844}, has_touch=True,
                          is_mobile=True) as page:
        errors = open_dashboard(page, base + "/dashboard", "live")
        r = httpx.post(base + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed", r.text
        row = f'#decisions tr[data-id="{r.headers["x-aigrid-decision"]}"]'
        page.wait_for_function(f"() => document.querySelector('{row} td:last-child')?.textContent === 'failed'",
                               timeout=15000)
        page.locator(f"{row} td:last-child button").tap()
        page.wait_for_function(f"() => document.querySelector('{row}').nextElementSibling?.className === 'why-row'",
                               timeout=15000)
        said = page.text_content(f"{row} + tr.why-row .why-text") or ""
    assert said.startswith("failed: ") and "connection refused" in said and ". Routed: chose " in said, said
    assert any(e in said for e in engines) and not any(e.address in said for e in engines.values()), said
    assert external == [] and errors == [], (external, errors)


def test_a_sites_numbers_on_the_map_are_read_with_a_tap_or_the_keyboard(served_to_read: Served,
                                                                        chromium: Any) -> None:
    """A site's numbers on the map (load, slots, running, waiting, health, TTFT) were its tooltip's, read on hover
    only: not on a phone, not from the keyboard, and on a grid of more than 12 sites nowhere else for a site without a
    card. A tap on a site (or Enter on it) shows them in a line under the map; the same site again closes it."""
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external, viewport={"width": 390, "height": 844},
                       has_touch=True, is_mobile=True) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        page.wait_for_function("() => document.querySelector('#map-sites g.site[data-site=\"iad\"]')", timeout=15000)
        assert page.is_hidden("#site-info")
        page.locator('#map-sites g.site[data-site="iad"] circle.body').tap()
        page.wait_for_function("() => !document.getElementById('site-info').hidden", timeout=15000)
        said = page.text_content("#site-info") or ""
        assert said.startswith("iad Ashburn") and "load 0.00 (idle)" in said and "slots 2" in said, said
        assert "health ok" in said and "TTFT" in said, said
        box = page.evaluate("() => { const r = document.getElementById('site-info').getBoundingClientRect();"
                            " return [r.left, r.right, r.height, document.documentElement.clientWidth]; }")
        assert box[0] >= 0 and box[1] <= box[3] and box[2] > 0, box  # in sight, within the screen's width
        page.locator('#map-sites g.site[data-site="iad"] circle.body').tap()  # the same site again: closed
        page.wait_for_function("() => document.getElementById('site-info').hidden", timeout=15000)
        page.evaluate("() => document.querySelector('#map-sites g.site[data-site=\"gru\"]').focus()")
        assert page.evaluate("() => document.activeElement.dataset.site") == "gru"  # a Tab stop (tabindex 0)
        page.keyboard.press("Enter")
        page.wait_for_function("() => (document.getElementById('site-info').textContent || '').startsWith('gru ')",
                               timeout=15000)
        page.keyboard.press("Escape")
        page.wait_for_function("() => document.getElementById('site-info').hidden", timeout=15000)
    assert external == [] and errors == [], (external, errors)


def test_a_site_button_says_whether_its_numbers_line_is_open(served_to_read: Served, chromium: Any) -> None:
    """A site on the map is a button (role=button) that opens and closes the line of its numbers under the map, but
    it never said so to a screen reader: no aria-expanded, no aria-controls. Each says it controls #site-info, and
    whether that line is open for it, as it opens, moves to another site and closes."""
    expanded = """() => Object.fromEntries([...document.querySelectorAll('#map-sites g.site')].map(g =>
      [g.dataset.site, [g.getAttribute('aria-expanded'), g.getAttribute('aria-controls')]]))"""
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        page.wait_for_function("() => document.querySelector('#map-sites g.site[data-site=\"gru\"]')", timeout=15000)
        shut = page.evaluate(expanded)
        assert shut["iad"] == ["false", "site-info"] and shut["gru"] == ["false", "site-info"], shut
        page.evaluate("() => document.querySelector('#map-sites g.site[data-site=\"gru\"]').focus()")
        page.keyboard.press("Enter")
        page.wait_for_function("() => !document.getElementById('site-info').hidden", timeout=15000)
        opened = page.evaluate(expanded)
        assert opened["gru"][0] == "true" and opened["iad"][0] == "false", opened
        page.locator('#map-sites g.site[data-site="iad"] circle.body').click()  # another site: it is the open one
        page.wait_for_function("() => (document.getElementById('site-info').textContent || '').startsWith('iad ')",
                               timeout=15000)
        moved = page.evaluate(expanded)
        assert moved["iad"][0] == "true" and moved["gru"][0] == "false", moved
        page.keyboard.press("Escape")
        page.wait_for_function("() => document.getElementById('site-info').hidden", timeout=15000)
        closed = page.evaluate(expanded)
        assert all(state == "false" for state, _ in closed.values()), closed
    assert external == [] and errors == [], (external, errors)


def test_a_gateway_gone_greys_the_last_picture_and_says_since_when(tmp_path: Path, chromium: Any) -> None:
    """With the gateway stopped the badge said 'reconnecting' but the map and the cards kept their last colours
    and 'ok', and the clock its last time with nothing saying it had stopped: a picture of a grid no longer
    watched. Now the page is marked stale and the clock reads 'last update ...'."""
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(7),
                       sleep=no_sleep)
    server = ExitStack()
    base = server.enter_context(served_dashboard(*dashboard_app(gw, tmp_path / "run")))
    external: list[str] = []
    try:
        with chromium_page(chromium, base, external) as page:
            page.goto(base + "/dashboard")
            page.wait_for_function("() => document.body.dataset.mode === 'live'", timeout=15000)
            page.wait_for_function("() => / UTC$/.test(document.getElementById('clock').textContent)", timeout=15000)
            assert page.evaluate("() => document.body.dataset.stale") is None
            last = page.text_content("#clock")
            server.close()  # the gateway stops; the page stays open
            page.wait_for_function("() => document.body.dataset.stale === '1'", timeout=30000)
            assert page.text_content("#mode") in ("reconnecting", "connecting")
            clock = page.text_content("#clock")
            assert clock.startswith("last update ") and clock.endswith(" UTC"), clock
            assert clock[len("last update "):] >= last, (clock, last)
            opacity = page.evaluate("() => getComputedStyle(document.getElementById('map-panel')).opacity")
            assert float(opacity) < 1, opacity
    finally:
        server.close()
    assert external == [], external


def test_a_feed_open_but_silent_is_not_shown_as_live(tmp_path: Path, chromium: Any) -> None:
    """The badge said 'live' for as long as the feed's connection stayed open: a gateway whose ticks stopped (its
    event loop stuck, a proxy holding the connection) left its last picture under a green 'live', the map and cards
    in colour and the clock stopped with nothing saying so. Five ticks without a picture (at least 5 s): the page
    says 'stalled', greys the picture and dates it, until the ticks come again."""
    held = threading.Event()  # set: the gateway's feed stops ticking, its connection open

    async def ticking(seconds: float) -> None:
        await asyncio.sleep(seconds)
        for _ in range(1200):  # at most 60 s held
            if not held.is_set():
                return
            await asyncio.sleep(0.05)

    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(7),
                       sleep=no_sleep)
    external: list[str] = []
    try:
        with served_dashboard(*dashboard_app(gw, tmp_path / "run", sleep=ticking)) as base, \
                chromium_page(chromium, base, external) as page:
            errors = errors_of(page)
            page.goto(base + "/dashboard")
            page.wait_for_function("() => document.body.dataset.mode === 'live' && "
                                   "/ UTC$/.test(document.getElementById('clock').textContent)", timeout=15000)
            held.set()
            page.wait_for_function("() => document.body.dataset.stale === '1'", timeout=20000)
            assert page.text_content("#mode") == "stalled"
            clock = page.text_content("#clock")
            assert clock.startswith("last update ") and clock.endswith(" UTC"), clock
            assert float(page.evaluate("() => getComputedStyle(document.getElementById('map-panel')).opacity")) < 1
            held.clear()  # the ticks come again, on the same connection
            page.wait_for_function("() => document.body.dataset.mode === 'live' && !document.body.dataset.stale && "
                                   "!document.getElementById('clock').textContent.startsWith('last update')",
                                   timeout=15000)
    finally:
        held.clear()
    assert external == [] and errors == [], (external, errors)


def test_the_greying_goes_when_the_feed_is_back(served_to_read: Served, chromium: Any) -> None:
    """docs/dashboard.md: back, the badge says `live` again and the greying goes. Nothing checked the second half:
    a page left grey (and its clock on 'last update ...') over a live feed again would have passed. The feed here is
    the test's: the first connection sends one picture and ends (the feed lost), the next one is the gateway's."""
    grid = httpx.get(served_to_read.base + "/dashboard/state", timeout=10).json()["grid"]
    opened: list[str] = []

    def feed(route: Any) -> None:
        opened.append(route.request.url)
        if len(opened) == 1:
            route.fulfill(status=200, headers={"content-type": "text/event-stream", "cache-control": "no-store"},
                          body="event: grid\ndata: " + json.dumps(grid) + "\n\n")
        else:
            route.continue_()

    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = errors_of(page)
        page.route("**/dashboard/events", feed)  # the newest route is asked first: before the page's guard
        page.goto(served_to_read.base + "/dashboard")
        page.wait_for_function("() => document.body.dataset.stale === '1'", timeout=15000)
        assert page.text_content("#clock").startswith("last update "), page.text_content("#clock")
        # the page tries again (2 s later): the gateway's own feed, live, a new picture on the clock
        page.wait_for_function("() => document.body.dataset.mode === 'live' && "
                               "!document.getElementById('clock').textContent.startsWith('last update')",
                               timeout=30000)
        assert page.evaluate("() => document.body.dataset.stale") is None
        assert page.evaluate("() => getComputedStyle(document.getElementById('map-panel')).opacity") == "1"
        assert len(opened) >= 2, opened
    assert external == [] and errors == [], (external, errors)


def test_the_decisions_say_which_clock_their_times_are_on(served: Served, tmp_path: Path,
                                                          chromium: Any) -> None:
    """The decisions' time column showed UTC with no zone (an operator in New York read 17:59 as local time); a
    replay's rows are simulated time since the run's start. The column's header says which."""
    run = tmp_path / "run"
    write_run(run)
    external: list[str] = []
    with chromium_page(chromium, served.base, external) as page:
        page.goto(served.base + "/dashboard")
        page.wait_for_function("() => document.body.dataset.mode === 'live'", timeout=15000)
        assert page.text_content("#decisions thead th:first-child") == "time (UTC)"
        page.goto(served.base + "/dashboard?replay=1")
        page.wait_for_function("() => document.body.dataset.mode === 'replay'", timeout=15000)
        assert page.text_content("#decisions thead th:first-child") == "sim time"
        page.click("#live-button")
        page.wait_for_function("() => document.body.dataset.mode === 'live'", timeout=15000)
        assert page.text_content("#decisions thead th:first-child") == "time (UTC)"
    assert external == [], external


def test_a_replay_that_fails_to_load_leaves_the_live_rows_on_utc(served_to_read: Served, tmp_path: Path,
                                                                 chromium: Any) -> None:
    """Picking files ended the live feed and set the time column to 'sim time' before the files were read: when
    they failed to load, the table still held the live rows, their times UTC, under 'sim time'. The header changes
    with the rows now, once a replay has loaded."""
    run = tmp_path / "picked"
    write_run(run)
    (run / "summary.json").write_text('{"policies": {"balanced": ')  # a run cut short
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        page.goto(served_to_read.base + "/dashboard")
        page.wait_for_function("() => document.body.dataset.mode === 'live'", timeout=15000)
        assert page.text_content("#decisions thead th:first-child") == "time (UTC)"
        page.set_input_files("#replay-files", [str(run / "requests.csv"), str(run / "summary.json")])
        page.wait_for_function("() => document.body.dataset.mode === 'error'", timeout=30000)
        assert page.text_content("#mode").startswith("replay: summary.json is not JSON")
        assert page.text_content("#decisions thead th:first-child") == "time (UTC)"
        (run / "summary.json").unlink()  # the same run without it loads: then the rows are the run's
        page.set_input_files("#replay-files", [str(run / "requests.csv")])
        page.wait_for_function("() => document.body.dataset.mode === 'replay'", timeout=30000)
        assert page.text_content("#decisions thead th:first-child") == "sim time"
    assert external == [], external


def test_a_feed_back_after_a_long_drop_is_live_before_its_first_picture(served: Served, monkeypatch: Any,
                                                                        chromium: Any) -> None:
    """The stall (no picture for 5 ticks, at least 5 s) was counted from the last picture before a drop: after a
    drop longer than 5 s, a feed back (its hello read, the badge 'live') showed 'stalled' until its first picture.
    It is counted from the new connection's hello. The first connection here is the test's (one picture, then it
    ends); the next ones are refused for over 6 s; then the gateway's own, whose first picture is held."""
    grid = httpx.get(served.base + "/dashboard/state", timeout=10).json()["grid"]
    held = threading.Event()
    refresh = Feed.refresh

    async def held_refresh(self: Feed) -> None:
        for _ in range(600):  # at most 30 s held
            if not held.is_set():
                break
            await asyncio.sleep(0.05)
        await refresh(self)

    monkeypatch.setattr(Feed, "refresh", held_refresh)
    opened: list[float] = []

    def feed(route: Any) -> None:
        opened.append(time.monotonic())
        if len(opened) == 1:
            route.fulfill(status=200, headers={"content-type": "text/event-stream", "cache-control": "no-store"},
                          body='event: hello\ndata: {"name": "t", "interval_s": 1}\n\n'
                               "event: grid\ndata: " + json.dumps(grid) + "\n\n")
        elif opened[-1] - opened[0] < 6.5:
            route.abort()
        else:
            route.continue_()

    external: list[str] = []
    try:
        with chromium_page(chromium, served.base, external) as page:
            errors = errors_of(page)
            page.route("**/dashboard/events", feed)
            held.set()
            page.goto(served.base + "/dashboard")
            page.wait_for_function("() => document.body.dataset.stale === '1'", timeout=15000)
            page.evaluate("""() => { window.__modes = [];
              new MutationObserver(() => window.__modes.push(document.body.dataset.mode))
                .observe(document.body, {attributes: true, attributeFilter: ['data-mode']}); }""")
            # back (the gateway's feed, its hello read): live, and not stalled while its first picture is on its way
            page.wait_for_function("() => document.body.dataset.mode === 'live' && !document.body.dataset.stale",
                                   timeout=30000)
            assert opened[-1] - opened[0] >= 6.5, opened  # the drop was longer than the stall's 5 s
            page.evaluate("() => { window.__modes = []; }")
            page.wait_for_timeout(1500)  # watchStall runs every 0.5 s: the old page said 'stalled' within it
            modes = page.evaluate("() => window.__modes")
            assert "error" not in modes and page.text_content("#mode") == "live", modes  # 'stalled' is mode error
            held.clear()
            page.wait_for_function("() => !document.getElementById('clock').textContent.startsWith('last update')",
                                   timeout=15000)
    finally:
        held.clear()
    refused = "Failed to load resource: net::ERR_FAILED"  # the connections this test refused
    assert external == [] and [e for e in errors if e != refused] == [], (external, errors)


def test_a_sites_open_numbers_are_not_rewritten_while_they_stay_the_same(served_to_read: Served,
                                                                         chromium: Any) -> None:
    """The line of a site's numbers under the map is aria-live (a screen reader reads it when it changes), and it was
    written again with each picture (every 0.3 s here): the same numbers, re-read on and on. It is written when
    they change."""
    external: list[str] = []
    with chromium_page(chromium, served_to_read.base, external) as page:
        errors = open_dashboard(page, served_to_read.base + "/dashboard", "live")
        page.wait_for_function("() => document.querySelector('#map-sites g.site[data-site=\"iad\"]')", timeout=15000)
        page.locator('#map-sites g.site[data-site="iad"] circle.body').click()
        page.wait_for_function("() => !document.getElementById('site-info').hidden", timeout=15000)
        said = page.text_content("#site-info")
        page.evaluate("""() => { window.__written = 0; window.__pictures = 0;
          new MutationObserver(() => { window.__written += 1; }).observe(document.getElementById('site-info'),
            {childList: true, characterData: true, subtree: true});
          }""")
        page.evaluate("""async () => {  // the page's own GridMap (one module instance): its pictures counted
          const {GridMap} = await import('/dashboard/static/map.js');
          const draw = GridMap.prototype.setSites;
          GridMap.prototype.setSites = function (sites) { window.__pictures += 1; return draw.call(this, sites); };
        }""")
        page.wait_for_function("() => window.__pictures >= 4", timeout=15000)  # 4 pictures drawn on the map
        assert page.text_content("#site-info") == said  # the fakes idle: the same numbers
        assert page.evaluate("() => window.__written") == 0
    assert external == [] and errors == [], (external, errors)
