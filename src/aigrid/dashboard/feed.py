"""What the dashboard shows, as plain JSON-ready dicts: the grid per site, and decisions as table rows.

A Feed belongs to one viewer (one SSE connection). Each tick() reads the gateway (never writes it) and
returns the events that viewer has not seen yet: the whole grid state every tick (it is small), and only
the decisions that are new or whose outcome changed since the last tick (routing -> streaming -> ok).
Tokens per second per site is the rate of the gateway's own completion-token counter (usage reported at the
end of each answer) over the last RATE_WINDOW_S seconds, so that a chart does not spike at every answer.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aigrid.core.geo import distance_km
from aigrid.core.types import Circuit, GeoPoint
from aigrid.gateway.decisions import DecisionRecord, first_byte_fields

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway

PLACE_RADIUS_KM = 150.0
"""A client within this distance of a known city is labelled with the city's name."""
WATCHED_DECISIONS = 200
"""How many of the most recent decisions a feed re-checks for changed outcomes each tick."""
FIRST_DECISIONS = 50
"""How many recent decisions a new viewer is sent at once."""
RATE_WINDOW_S = 5.0
"""Tokens per second is averaged over this window."""


def place_name(point: GeoPoint | None, places: Mapping[str, GeoPoint]) -> str:
    """The nearest known city within PLACE_RADIUS_KM, else 'lat, lon'; 'unknown' without a location."""
    if point is None:
        return "unknown"
    best, best_km = None, math.inf
    for name, p in places.items():
        km = distance_km(point, p)
        if km < best_km:
            best, best_km = name, km
    if best is not None and best_km <= PLACE_RADIUS_KM:
        return best
    return f"{point.lat:.2f}, {point.lon:.2f}"


def known_places(gw: Gateway) -> dict[str, GeoPoint]:
    """Every site's city and the spec's named client locations, as the spec spells them."""
    places = {s.name: s.location for s in gw.store.snapshot().sites.values()}
    places.update({name: GeoPoint(lat, lon) for name, (lat, lon) in gw.spec.cities.items()})
    return places


def failures(attempts: Any, hide: Callable[[str, str | None], str]) -> list[str]:
    """Why a request failed where it was sent: each attempt that failed, `endpoint: error`, its engine's addresses
    hidden (`hide`: engine_names.EngineNames.hide, as a tenant reads them in the decisions API). The row's reason says why it was sent there.
    An attempt that names no endpoint (failed before one was picked) is labelled with its site, or else 'gateway',
    never 'None'."""
    return [f"{attempt_label(a)}: {hide(str(a['error']), a.get('endpoint'))}" for a in attempts or ()
            if isinstance(a, Mapping) and not a.get("ok") and a.get("error")]


def attempt_label(attempt: Mapping[str, Any]) -> str:
    """Where a failed attempt was: its endpoint, else its site, else the gateway itself."""
    return str(attempt.get("endpoint") or attempt.get("site") or "gateway")


def decision_row(rec: DecisionRecord, places: Mapping[str, GeoPoint], site_of: Mapping[str, str],
                 hide: Callable[[str, str | None], str]) -> dict[str, Any]:
    """One line of the live table: where from, where to, the chosen candidate's axis scores, TTFT, and why."""
    d = rec.decision
    chosen = d.chosen
    served = rec.served_by or (chosen.endpoint_id if chosen else None)
    return {
        "id": d.request_id, "at": rec.at, "tenant": rec.tenant, "model": rec.model, "policy": d.policy,
        "client": None if rec.client is None else {"lat": rec.client.lat, "lon": rec.client.lon},
        "place": place_name(rec.client, places),
        "chosen": None if chosen is None else chosen.endpoint_id,
        "served_by": rec.served_by,
        "site": None if served is None else site_of.get(served),
        "scores": {} if chosen is None else {k: round(v, 3) for k, v in chosen.scores.items()},
        "total": None if chosen is None else round(chosen.total, 3),
        "predicted_ttft_ms": None if chosen is None else round(chosen.prediction.ttft_ms, 1),
        **first_byte_fields(rec.to_first_byte()),
        "status": rec.status, "reason": d.reason, "failures": failures(rec.attempts, hide),
        "candidates": len(d.ranked), "rejected": len(d.rejected),
    }


def decision_row_of(d: Mapping[str, Any], places: Mapping[str, GeoPoint], site_of: Mapping[str, str],
                    hide: Callable[[str, str | None], str]) -> dict[str, Any]:
    """The same row from a decision record's dict (DecisionRecord.to_dict: another worker's decision)."""
    chosen = next((c for c in d.get("candidates") or () if c.get("endpoint") == d.get("chosen")), None)
    served = d.get("served_by") or d.get("chosen")
    client = d.get("client")
    point = None if client is None else GeoPoint(client["lat"], client["lon"])
    return {
        "id": d["id"], "at": d.get("at"), "tenant": d.get("tenant"), "model": d.get("model"),
        "policy": d.get("policy"), "client": client, "place": place_name(point, places),
        "chosen": d.get("chosen"), "served_by": d.get("served_by"),
        "site": None if served is None else site_of.get(str(served).split(" -> ")[-1], site_of.get(served)),
        "scores": {} if chosen is None else {k: round(v, 3) for k, v in chosen["scores"].items()},
        "total": None if chosen is None else round(chosen["total"], 3),
        "predicted_ttft_ms": None if chosen is None else chosen.get("predicted_ttft_ms"),
        **first_byte_fields(d), "status": d.get("status"), "reason": d.get("reason"),
        "failures": failures(d.get("attempts"), hide),
        "candidates": len(d.get("candidates") or ()), "rejected": len(d.get("rejected") or ()),
    }


@dataclass
class Feed:
    """Per-viewer state: the decisions already sent and the token counters of the previous tick."""

    gw: Gateway
    _sent: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    _tokens: deque[tuple[float, dict[str, float]]] = field(default_factory=deque)
    _shared: list[dict[str, Any]] | None = None
    """A gateway worker's view of every worker's recent decisions (refresh(), from the hub)."""

    async def refresh(self) -> None:
        """Before a tick: with several workers, every worker's recent decisions (the hub keeps them)."""
        if self.gw.hub is not None:
            self._shared = await self.gw.hub.recent_decisions(WATCHED_DECISIONS if self._sent else FIRST_DECISIONS)

    def tick(self, now: float) -> list[tuple[str, Any]]:
        """The events for this viewer at wall-clock time `now`: ("grid", state) and maybe ("decisions", rows)."""
        events: list[tuple[str, Any]] = [("grid", self.grid_state(now))]
        rows = self.new_decisions()
        if rows:
            events.append(("decisions", rows))
        return events

    def grid_state(self, now: float) -> dict[str, Any]:
        view = self.gw.store.snapshot()
        rates = self._token_rates(now, list(view.sites))
        sites: dict[str, dict[str, Any]] = {
            s.id: {"id": s.id, "name": s.name, "lat": s.location.lat, "lon": s.location.lon,
                   "jurisdiction": s.jurisdiction, "hardware": s.hardware, "slots": 0, "running": 0,
                   "waiting": 0, "endpoints": 0, "healthy_endpoints": 0, "ttft_ms": None,
                   "tokens_per_s": rates.get(s.id)}
            for s in view.sites.values()
        }
        endpoints: list[dict[str, Any]] = []
        hide = self.gw.proxy.names.hide  # a failing endpoint's reason is its engine's error: no address on a screen
        ttfts: dict[str, list[float]] = {sid: [] for sid in sites}
        for e in view.endpoints:
            st = view.state(e.id)
            up = st.healthy and st.circuit is not Circuit.OPEN
            site = sites[e.site_id]
            site["slots"] += max(e.max_concurrency, 1)
            site["running"] += st.running
            site["waiting"] += st.waiting
            site["endpoints"] += 1
            site["healthy_endpoints"] += int(up)
            if st.ttft_s is not None and up:  # a down endpoint's last TTFT is no figure of the site's now
                ttfts[e.site_id].append(st.ttft_s * 1000.0)
            endpoints.append({"id": e.id, "site": e.site_id, "model": e.model, "slots": e.max_concurrency,
                              "healthy": st.healthy, "circuit": str(st.circuit), "running": st.running,
                              "waiting": st.waiting, "kv_usage": st.kv_usage,
                              "ttft_ms": None if st.ttft_s is None else round(st.ttft_s * 1000.0, 1),
                              "reason": hide(st.reason, e.id)})
        for sid, site in sites.items():
            slots = max(site["slots"], 1)
            site["utilization"] = round(site["running"] / slots, 3)
            site["load"] = round((site["running"] + site["waiting"]) / slots, 3)
            if ttfts[sid]:
                site["ttft_ms"] = round(sum(ttfts[sid]) / len(ttfts[sid]), 1)
            healthy, total = site["healthy_endpoints"], site["endpoints"]
            site["health"] = "down" if healthy == 0 else ("degraded" if healthy < total else "ok")
        return {"name": self.gw.spec.name, "at": now, "sites": list(sites.values()), "endpoints": endpoints}

    def new_decisions(self) -> list[dict[str, Any]]:
        """Rows for decisions this viewer has not seen, or seen with another outcome; oldest first. Only those rows
        are made: a row names its client's nearest place (a distance to every site and named city), and making all
        WATCHED_DECISIONS rows each tick to compare them took each viewer 4.7 ms a second on the demo grid's 17
        places, ~0.3 ms each more (in the gateway's event loop)."""
        limit = WATCHED_DECISIONS if self._sent else FIRST_DECISIONS
        shared = self._shared
        recent: list[tuple[str, tuple[Any, ...], Any]]
        if shared is not None:
            recent = [(d["id"], (d.get("status"), d.get("served_by"), d.get("ttft_ms")), d) for d in shared]
        else:
            recent = [(rec.decision.request_id, (rec.status, rec.served_by,
                                                 None if rec.ttft_ms is None else round(rec.ttft_ms, 1)), rec)
                      for rec in self.gw.decisions.recent(limit)]
        changed = []
        for key, sig, item in reversed(recent):
            if self._sent.get(key) != sig:
                self._sent[key] = sig
                changed.append(item)
        if len(self._sent) > 2 * WATCHED_DECISIONS:
            keep = {key for key, _, _ in recent}
            self._sent = {k: v for k, v in self._sent.items() if k in keep}
        if not changed:
            return []
        places = known_places(self.gw)
        site_of = {e.id: e.site_id for e in self.gw.store.snapshot().endpoints}
        hide = self.gw.proxy.names.hide
        if shared is not None:
            return [decision_row_of(d, places, site_of, hide) for d in changed]
        return [decision_row(rec, places, site_of, hide) for rec in changed]

    def _token_rates(self, now: float, site_ids: list[str]) -> dict[str, float | None]:
        counts = dict.fromkeys(site_ids, 0.0)
        # the counter alone, once (every worker's merged registry when several): get_sample_value per site collected
        # every metric of every site once per site, 60% of a tick with 4 sites and sites x samples with more
        metrics = self.gw.metrics
        registry = metrics.readable()
        for metric in (metrics.tokens if registry is metrics.registry else registry).collect():
            if metric.name == "aigrid_tokens":
                for sample in metric.samples:
                    if (sample.name == "aigrid_tokens_total" and sample.labels.get("kind") == "completion"
                            and sample.labels.get("site") in counts):
                        counts[sample.labels["site"]] = sample.value
        while len(self._tokens) > 1 and now - self._tokens[1][0] >= RATE_WINDOW_S:
            self._tokens.popleft()
        rates: dict[str, float | None] = {sid: None for sid in site_ids}
        if self._tokens and now > self._tokens[0][0]:
            then, old = self._tokens[0]
            rates = {sid: round(max(counts[sid] - old.get(sid, 0.0), 0.0) / (now - then), 2) for sid in site_ids}
        self._tokens.append((now, counts))
        return rates
