"""The dashboard's HTTP surface: page, assets (all local), state, SSE feed, replay files, auth, read-only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx

from aigrid.dashboard import dashboard_routes
from aigrid.dashboard.routes import STATIC
from aigrid.errors import AuthenticationError
from aigrid.gateway.app import Gateway, build_app
from tests.dashboard.conftest import CHAT
from tests.dashboard.sse_events import parse_sse


async def test_page_and_every_asset_it_names_are_served_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    assets = set(re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page.text))
    for js in STATIC.glob("*.js"):
        assets |= {f"/dashboard/static/{m}" for m in re.findall(r'from "\./([^"]+)"', js.read_text())}
    assert {"/dashboard/static/app.js", "/dashboard/static/map.js",
            "/dashboard/static/topojson-client.min.js"} <= assets
    for url in sorted(assets):
        r = await client.get(url)
        assert r.status_code == 200, url
    geo = await client.get("/dashboard/static/countries-110m.json")
    assert geo.json()["type"] == "Topology" and len(geo.json()["objects"]["countries"]["geometries"]) > 150
    for name in ("LICENSE.world-atlas.txt", "LICENSE.topojson-client.txt"):
        assert (STATIC / name).read_text().startswith("Copyright")


async def test_the_page_under_static_has_the_pages_policy_and_cannot_be_framed(client: httpx.AsyncClient) -> None:
    # /dashboard/static/index.html is the page too (its paths are absolute, it runs from there): served by
    # StaticFiles with no policy, another site could frame it (clickjacking its key form) and it ran unprotected
    for url in ("/dashboard", "/dashboard/static/index.html", "/dashboard/static/app.js"):
        r = await client.get(url)
        assert r.status_code == 200, url
        policy = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, (url, policy)
        assert "base-uri 'none'" in policy and "object-src 'none'" in policy, (url, policy)
        assert r.headers.get("x-frame-options") == "DENY", url
        assert r.headers.get("cross-origin-opener-policy") == "same-origin", url
    assert "<script" in (await client.get("/dashboard/static/index.html")).text


async def test_the_page_sets_what_others_write_as_text_only() -> None:
    # Tenant names, decision reasons, site and grid names and a replayed run's cells reach the page; each is set
    # with textContent or an attribute. A guard against the sinks that would parse one as markup, script or URL.
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
                       r"createContextualFragment|DOMParser|setAttribute\(\s*[\"'](?:on|href|src|style|xlink)|"
                       r"\.(?:href|src|srcdoc)\s*=(?!=)|location(?:\.href)?\s*=(?!=)")
    for path in STATIC.glob("*.js"):
        found = sinks.findall(path.read_text())
        assert not found, (path.name, found)
    html = (STATIC / "index.html").read_text()  # nothing inline that the policy would have to allow
    assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\son\w+\s*=|\sstyle\s*=", html)


async def test_no_asset_reaches_for_a_cdn() -> None:
    read = set()
    for path in STATIC.iterdir():
        if path.suffix in {".js", ".html", ".css"}:
            text = path.read_text()
            # the SVG namespace is a name, not a fetch; the browser test records every request the page makes
            assert not re.search(r"https?://(?!github\.com/topojson|www\.w3\.org/2000/svg)", text), path.name
            read.add(path.name)
    assert {"index.html", "app.js"} <= read, read  # the page and its script were read (not an empty folder)


async def test_state_snapshot_and_a_bounded_event_stream(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-client-location": "Seoul"})
    state = (await client.get("/dashboard/state")).json()
    assert len(state["grid"]["sites"]) == 4 and state["decisions"][0]["place"] == "Seoul"
    r = await client.get("/dashboard/events", params={"ticks": "2"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert [n for n, _ in parse_sse(r.content)] == ["hello", "grid", "decisions", "grid"]
    assert (await client.get("/dashboard/events", params={"ticks": "zero"})).status_code == 400


async def test_the_dashboard_is_read_only(client: httpx.AsyncClient, gateway: Gateway) -> None:
    before = gateway.store.snapshot()
    for path in ("/dashboard", "/dashboard/state", "/dashboard/events"):
        assert (await client.post(path)).status_code == 405
    await client.get("/dashboard/events", params={"ticks": "3"})
    assert gateway.store.snapshot().states == before.states and gateway.decisions.recent(5) == []


async def test_replay_files_are_served_only_from_the_run_directory(gateway: Gateway, tmp_path: Path) -> None:
    (tmp_path / "requests.csv").write_text("policy,request,arrival_s\nbalanced,0,0.5\n")
    (tmp_path.parent / "secret.txt").write_text("no")
    app = build_app(gateway, extra_routes=dashboard_routes(gateway, replay_dir=tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        r = await c.get("/dashboard/replay/requests.csv")
        assert r.status_code == 200 and r.text.startswith("policy,")
        assert (await c.get("/dashboard/replay/summary.json")).status_code == 404
        assert (await c.get("/dashboard/replay/..%2Fsecret.txt")).status_code == 404
        assert (await c.get("/dashboard/replay/secret.txt")).status_code == 404


async def test_without_a_replay_directory_replay_files_are_not_found(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/replay/requests.csv")
    assert r.status_code == 404 and "started without a simulator run" in r.json()["error"]["message"]


def operators_only(authorization: str | None) -> None:
    """The dashboard's own hook (the gateway wires `operators=True` instead: Guard.operator_of): here one key that
    the gateway, not enforcing authentication, lets through as a client's placeholder."""
    if authorization != "Bearer sk-operator":
        raise AuthenticationError("an operator's key is needed")


async def test_data_routes_honour_the_gateways_authentication(gateway: Gateway) -> None:
    key = "sk-operator"
    app = build_app(gateway, extra_routes=dashboard_routes(gateway, authenticate=operators_only))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        assert (await c.get("/dashboard")).status_code == 200  # the page holds no data
        assert (await c.get("/dashboard/static/app.js")).status_code == 200
        for path in ("/dashboard/state", "/dashboard/events?ticks=1", "/dashboard/replay/requests.csv"):
            r = await c.get(path)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", path
        wrong = await c.get("/dashboard/state", headers={"authorization": "Bearer aig_nope_nope"})
        assert wrong.status_code == 401
        ok = await c.get("/dashboard/events?ticks=1", headers={"authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and b"event: grid" in ok.content


async def test_a_viewer_who_leaves_the_live_feed_is_recorded_client_closed() -> None:
    """The server stops a feed whose viewer left by closing its stream: the record's outcome says so (it said `ok`);
    a feed that ends by itself stays `ok`."""
    from aigrid.dashboard.routes import watched
    from aigrid.gateway.exchange import Exchange

    async def feed() -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"event %d" % i

    left, whole = Exchange("GET /dashboard/events", 0.0), Exchange("GET /dashboard/events", 0.0)
    stream = watched(feed(), left)
    assert await anext(stream) == b"event 0"
    await stream.aclose()
    assert [e async for e in watched(feed(), whole)] == [b"event 0", b"event 1", b"event 2"]
    assert (left.final_outcome(), whole.final_outcome()) == ("client_closed", "ok")


async def test_live_feeds_are_capped_per_gateway(gateway: Gateway) -> None:
    """With authentication off nothing else bounds the live feeds, each a refresh of the event loop every tick: past
    max_viewers one more is a 429 `overloaded` with Retry-After (it was served); a feed ended frees its place."""
    import asyncio

    gate, waiting = asyncio.Event(), []

    async def held(_: float) -> None:  # each feed waits here after its first tick until the gate opens
        waiting.append(1)
        await gate.wait()

    app = build_app(gateway, extra_routes=dashboard_routes(gateway, interval_s=0.01, sleep=held))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        feeds = [asyncio.create_task(c.get("/dashboard/events", params={"ticks": "2"})) for _ in range(64)]
        while len(waiting) < 64:  # the default cap: 64 feeds flowing
            await asyncio.sleep(0.01)
        third = await c.get("/dashboard/events", params={"ticks": "1"})
        assert third.status_code == 429 and third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "overloaded"
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*feeds)] == [200] * 64
        again = await c.get("/dashboard/events", params={"ticks": "1"})
        assert again.status_code == 200 and b"event: grid" in again.content


async def test_a_burst_of_connections_cannot_pass_the_viewer_cap(gateway: Gateway) -> None:
    """A feed was counted from its stream's first chunk, after its answer had started: connections arriving together
    were all checked against a count none of them had joined yet, and a burst of 8 against a cap of 2 had every one
    served. The place is taken at admission now: 2 served, 6 refused with a 429."""
    import asyncio

    gate, flowing, held = held_feeds()

    app = build_app(gateway, extra_routes=dashboard_routes(gateway, interval_s=0.01, sleep=held, max_viewers=2))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        feeds = [asyncio.create_task(c.get("/dashboard/events", params={"ticks": "2"})) for _ in range(8)]
        async with asyncio.timeout(30):
            while len(flowing) + sum(f.done() for f in feeds) < 8:
                await asyncio.sleep(0.01)
        refused = [f.result() for f in feeds if f.done()]
        assert len(flowing) == 2 and len(refused) == 6, (len(flowing), [r.status_code for r in refused])
        assert all(r.status_code == 429 and r.json()["error"]["code"] == "overloaded" for r in refused)
        gate.set()
        assert sorted(r.status_code for r in await asyncio.gather(*feeds)) == [200] * 2 + [429] * 6
        again = await c.get("/dashboard/events", params={"ticks": "1"})  # the two places given back
        assert again.status_code == 200 and b"event: grid" in again.content


async def test_each_worker_serves_its_share_of_the_live_feeds(gateway: Gateway) -> None:
    """Every viewer's tick asks the one hub, and a keyless grid lets anyone open feeds: the cap was per worker, so
    two workers served twice it. Each worker now serves its share: 2 of 4 with two workers."""
    import asyncio

    gateway.workers = 2
    gate, flowing, held = held_feeds()

    app = build_app(gateway, extra_routes=dashboard_routes(gateway, interval_s=0.01, sleep=held, max_viewers=4))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        feeds = [asyncio.create_task(c.get("/dashboard/events", params={"ticks": "2"})) for _ in range(2)]
        async with asyncio.timeout(30):
            while len(flowing) < 2:
                await asyncio.sleep(0.01)
        third = await c.get("/dashboard/events", params={"ticks": "1"})
        assert third.status_code == 429 and third.json()["error"]["code"] == "overloaded"
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*feeds)] == [200, 200]


def held_feeds() -> tuple[asyncio.Event, list[int], Callable[[float], Awaitable[None]]]:
    """A feed's sleep that holds each admitted feed after its first tick until `gate` opens, and the feeds held
    so far (`flowing`)."""
    gate, flowing = asyncio.Event(), []

    async def held(_: float) -> None:
        flowing.append(1)
        await gate.wait()

    return gate, flowing, held
