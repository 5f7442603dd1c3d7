"""The dashboard's feed: grid state per site, decision rows, token rates and the SSE wire format."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from aigrid.core.types import GeoPoint
from aigrid.dashboard import feed as feed_module
from aigrid.dashboard.feed import Feed, place_name
from aigrid.dashboard.sse import event_stream, sse_event
from aigrid.gateway.app import Gateway, build_app, build_gateway
from tests.dashboard.conftest import CHAT, no_sleep
from tests.dashboard.sse_events import parse_sse
from tests.dashboard.unreachable_engine import Unreachable
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine


async def send(client: httpx.AsyncClient, city: str) -> httpx.Response:
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-client-location": city})
    assert r.status_code == 200, r.text
    return r


async def test_grid_state_has_every_site_with_capacity_and_health(gateway: Gateway,
                                                                  fakes: dict[str, FakeEngine]) -> None:
    fakes["gru-smollm2"].down = True
    await gateway.scraper.scrape_once()
    state = Feed(gateway).grid_state(1000.0)
    sites = {s["id"]: s for s in state["sites"]}
    assert set(sites) == {"fra", "iad", "nrt", "gru"}
    assert sites["nrt"]["name"] == "Tokyo" and sites["nrt"]["lat"] == 35.68 and sites["nrt"]["slots"] == 2
    assert sites["fra"]["health"] == "ok" and sites["gru"]["health"] == "down"
    assert sites["fra"]["load"] == 0 and sites["fra"]["tokens_per_s"] is None
    assert {e["id"] for e in state["endpoints"]} == {f"{s}-smollm2" for s in sites}


async def test_a_sites_ttft_is_of_its_endpoints_that_are_up(tmp_path: Path) -> None:
    """A site's TTFT averaged every endpoint's last one, a down endpoint's too: a degraded site showed a figure half
    made of an endpoint no longer serving, and a site down its last TTFT, as if live (the page showed it so)."""
    spec = spec_in(tmp_path)
    gru = next(e for e in spec.endpoints if e.site == "gru")
    spec = spec.model_copy(update={"endpoints": [*spec.endpoints, gru.model_copy(update={"id": "gru-b"})]})
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=no_sleep)
    await gw.scraper.scrape_once()
    gw.store.record_success("gru-smollm2", 0.1)
    gw.store.record_success("gru-b", 0.5)

    def gru_now() -> tuple[str, float | None]:
        site = next(s for s in Feed(gw).grid_state(0.0)["sites"] if s["id"] == "gru")
        return site["health"], site["ttft_ms"]

    assert gru_now() == ("ok", 300.0)
    fakes["gru-b"].down = True
    await gw.scraper.scrape_once()
    assert gru_now() == ("degraded", 100.0)
    fakes["gru-smollm2"].down = True
    await gw.scraper.scrape_once()
    assert gru_now() == ("down", None)


async def test_load_counts_in_flight_requests(gateway: Gateway) -> None:
    for _ in range(3):
        gateway.store.request_started("iad-smollm2")
    site = next(s for s in Feed(gateway).grid_state(0.0)["sites"] if s["id"] == "iad")
    assert (site["running"], site["waiting"], site["utilization"], site["load"]) == (2, 1, 1.0, 1.5)


async def test_decisions_are_sent_once_then_again_only_when_their_outcome_changes(
        gateway: Gateway, client: httpx.AsyncClient) -> None:
    feed = Feed(gateway)
    assert [name for name, _ in feed.tick(0.0)] == ["grid"]
    tokyo = await send(client, "Tokyo")
    await send(client, "Frankfurt")
    rows = dict(feed.tick(1.0))["decisions"]
    assert [r["place"] for r in rows] == ["Tokyo", "Frankfurt"]
    first = rows[0]
    assert first["id"] == tokyo.headers["x-aigrid-decision"]
    assert (first["site"], first["served_by"], first["status"]) == ("nrt", "nrt-smollm2", "ok")
    assert set(first["scores"]) == {"ttft", "cost", "affinity", "headroom", "proximity"}
    assert first["client"] == {"lat": 35.68, "lon": 139.69}
    assert first["ttft_ms"] is not None and first["predicted_ttft_ms"] > 0
    assert [name for name, _ in feed.tick(2.0)] == ["grid"]
    gateway.decisions.get(first["id"]).status = "http_500"  # an outcome arriving later
    assert [r["id"] for r in dict(feed.tick(3.0))["decisions"]] == [first["id"]]


async def test_a_whole_answers_first_byte_is_no_ttft_beside_the_prediction(
        gateway: Gateway, client: httpx.AsyncClient) -> None:
    """A row's ttft_ms, shown beside predicted_ttft_ms, is a first token's (the decision's ttft_is_first_token, as
    `aigrid explain` reads it); an answer not streamed has its first byte, after its last token, as first_byte_ms
    (the table shows it in brackets). Before, the row's ttft_ms was the whole answer's time. The same from another
    worker's decision (its dict, decision_row_of)."""
    feed = Feed(gateway)
    feed.tick(0.0)
    whole = await client.post("/v1/chat/completions", json={**CHAT, "stream": False, "stream_options": None},
                              headers={"x-aigrid-client-location": "Tokyo"})
    assert whole.status_code == 200, whole.text
    streamed = await send(client, "Tokyo")
    rows = {r["id"]: r for r in dict(feed.tick(1.0))["decisions"]}
    row, first = rows[whole.headers["x-aigrid-decision"]], rows[streamed.headers["x-aigrid-decision"]]
    assert row["ttft_ms"] is None and row["first_byte_ms"] is not None and row["predicted_ttft_ms"] > 0, row
    assert first["ttft_ms"] is not None and first["first_byte_ms"] == first["ttft_ms"], first
    for rid, shown in ((whole.headers["x-aigrid-decision"], row), (streamed.headers["x-aigrid-decision"], first)):
        d = gateway.decisions.get(rid).to_dict()
        of_dict = feed_module.decision_row_of(d, {}, {}, lambda text, _: text)
        assert (of_dict["ttft_ms"], of_dict["first_byte_ms"]) == (shown["ttft_ms"], shown["first_byte_ms"]), of_dict


async def test_tokens_per_second_is_the_rate_of_completion_tokens_between_ticks(
        gateway: Gateway, client: httpx.AsyncClient) -> None:
    feed = Feed(gateway)
    feed.tick(10.0)
    await send(client, "Osaka")
    await send(client, "Tokyo")
    nrt = next(s for s in feed.grid_state(12.0)["sites"] if s["id"] == "nrt")
    assert nrt["tokens_per_s"] == 4.0  # 2 answers x 4 tokens in 2 s
    rate = {t: next(s for s in feed.grid_state(t)["sites"] if s["id"] == "nrt")["tokens_per_s"] for t in (14, 18)}
    assert rate == {14: 2.0, 18: 0.0}  # averaged over the last RATE_WINDOW_S seconds, then gone


def test_place_name_is_the_nearest_known_city_or_coordinates() -> None:
    places = {"Tokyo": GeoPoint(35.68, 139.69), "Paris": GeoPoint(48.86, 2.35)}
    assert place_name(GeoPoint(35.6, 139.8), places) == "Tokyo"
    assert place_name(GeoPoint(-10.0, -20.0), places) == "-10.00, -20.00"
    assert place_name(None, places) == "unknown"


def test_sse_event_is_one_named_event_on_one_data_line() -> None:
    raw = sse_event("grid", {"text": "two\nlines"})
    assert raw == b'event: grid\ndata: {"text":"two\\nlines"}\n\n'


async def test_event_stream_says_hello_then_ticks(gateway: Gateway, client: httpx.AsyncClient) -> None:
    await send(client, "Sydney")
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        await no_sleep(s)

    clock = iter([1.0, 2.0, 3.0])
    raw = b"".join([c async for c in event_stream(Feed(gateway), interval_s=0.5, clock=lambda: next(clock),
                                                  sleep=sleep, ticks=3)])
    assert raw.startswith(b"retry: 2000\n\n")
    names = [n for n, _ in parse_sse(raw)]
    assert names == ["hello", "grid", "decisions", "grid", "grid"]
    assert slept == [0.5, 0.5]
    decisions = dict(parse_sse(raw))["decisions"]
    assert isinstance(decisions, list) and decisions[0]["place"] == "Sydney"


async def test_event_stream_ends_within_one_interval_once_the_server_is_stopping(gateway: Gateway) -> None:
    ticks: list[float] = []
    stop = False

    async def sleep(s: float) -> None:
        nonlocal stop
        stop = True  # the server started shutting down while the feed slept

    def clock() -> float:
        ticks.append(1.0)
        return 1.0

    raw = b"".join([c async for c in event_stream(Feed(gateway), interval_s=1.0, clock=clock, sleep=sleep,
                                                  stopping=lambda: stop)])
    assert [n for n, _ in parse_sse(raw)] == ["hello", "grid"] and len(ticks) == 1


async def test_a_tick_makes_rows_only_for_the_decisions_that_changed(
        gateway: Gateway, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tick made a row for each of the last 200 decisions, each row its client's distance to every site and
    named city, only to compare it with what the viewer had seen (per viewer, in the gateway's event loop)."""
    placed: list[GeoPoint | None] = []

    def counted(point: GeoPoint | None, places: Mapping[str, GeoPoint]) -> str:
        placed.append(point)
        return place_name(point, places)

    monkeypatch.setattr(feed_module, "place_name", counted)
    feed = Feed(gateway)
    for city in ("Tokyo", "Paris", "Sydney"):
        await send(client, city)
    assert [r["place"] for r in dict(feed.tick(1.0))["decisions"]] == ["Tokyo", "Paris", "Sydney"]
    placed.clear()
    assert [name for name, _ in feed.tick(2.0)] == ["grid"] and placed == []
    await send(client, "Osaka")
    assert [r["place"] for r in dict(feed.tick(3.0))["decisions"]] == ["Osaka"] and len(placed) == 1


async def test_a_tick_reads_the_token_counters_once_whatever_the_number_of_sites(
        gateway: Gateway, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """get_sample_value per site collected every metric of the registry once per site (sites x samples a tick; in
    multi-worker mode every worker's files read again for each site)."""

    class Counted:
        def __init__(self, registry: CollectorRegistry) -> None:
            self.registry, self.collected = registry, 0

        def collect(self) -> Iterable[Metric]:
            self.collected += 1
            return self.registry.collect()

        def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
            return CollectorRegistry.get_sample_value(self, name, labels)  # type: ignore[arg-type]

    registry = Counted(gateway.metrics.registry)
    monkeypatch.setattr(gateway.metrics, "readable", lambda: registry)
    feed = Feed(gateway)
    feed.tick(10.0)
    await send(client, "Tokyo")
    nrt = next(s for s in feed.grid_state(12.0)["sites"] if s["id"] == "nrt")
    assert nrt["tokens_per_s"] == 2.0 and registry.collected == 2  # one a tick, 4 sites


async def test_a_failed_requests_row_says_why_it_failed_without_engine_addresses(tmp_path: Path) -> None:
    """A failed request's row said only why it was sent where it was ('chose iad-smollm2 at iad ...'): the reason
    of the routing, not of the failure, which only `aigrid explain` told. Its row carries each failed attempt now,
    `endpoint: error`, its engine's address named by its endpoint (as a tenant reads it in the decisions API; the
    operator's `aigrid explain` keeps it)."""
    spec = spec_in(tmp_path)
    engines = {e.id: Unreachable(e.id, f"http://10.0.0.{i}:8080") for i, e in enumerate(spec.endpoints, 1)}
    gw = build_gateway(spec, engines, rng=random.Random(7), sleep=no_sleep)
    await gw.scraper.scrape_once()
    feed = Feed(gw)
    feed.tick(0.0)
    app = build_app(gw)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed", r.text
    (row,) = dict(feed.tick(1.0))["decisions"]
    assert row["status"] == "failed" and row["failures"], row
    for line in row["failures"]:
        endpoint, error = line.split(": ", 1)
        assert endpoint in engines and "connection refused" in error, row["failures"]
        assert engines[endpoint].address not in line and endpoint in error, row["failures"]  # named, not addressed
    assert "chose" in row["reason"], row["reason"]  # and why it was sent there, as before


def test_a_failed_attempt_with_no_endpoint_is_labelled_by_its_site_or_the_gateway_never_none() -> None:
    """An attempt that failed before an endpoint was picked read 'None: error' in the row's failures."""
    attempts = [{"ok": False, "error": "no route"}, {"site": "gru", "ok": False, "error": "timed out"},
                {"endpoint": "iad-smollm2", "ok": False, "error": "http_500"}, {"endpoint": "x", "ok": True}]
    lines = feed_module.failures(attempts, lambda text, endpoint: text)
    assert lines == ["gateway: no route", "gru: timed out", "iad-smollm2: http_500"], lines
