"""The affinity map is shared fairly between tenants (telemetry/store.py AFFINITY_ENTRIES): past its size the tenant
holding the most loses its oldest entry (most_held.MostHeld), so one tenant sending 10,000 new sessions or system
prompts no longer pushes every other tenant's warm routing out. A key's tenant is its tag, which
security/authorize.scope_request writes before the key's "." and which travels with it to the other gateways."""

from __future__ import annotations

from aigrid.core.types import Endpoint, GeoPoint, RequestInfo, Site
from aigrid.security.authorize import scope_request
from aigrid.security.principal import Principal, Scopes
from aigrid.telemetry.shared import SharedView
from aigrid.telemetry.store import AFFINITY_ENTRIES, TelemetryStore


def _store() -> TelemetryStore:
    site = Site("fra", "Frankfurt", GeoPoint(50, 8), "EU")
    eps = (Endpoint("e1", "fra", "m", "f", 1.0), Endpoint("e2", "fra", "m", "f", 1.0))
    return TelemetryStore({"fra": site}, eps, {}, lambda: 100.0)


def _keys(tenant: str, session: str) -> tuple[str, str]:
    """A request's affinity keys as the gateway makes them (its prefix's hash and its session, by its tenant)."""
    r = scope_request(Principal(tenant=tenant, key_id="k", scopes=Scopes()), RequestInfo(id="r", model="m", prefix_hash="system",
                                                                          session=session))
    assert r.prefix_hash is not None and r.session is not None
    return r.prefix_hash, r.session


def test_one_tenants_new_sessions_leave_anothers_entries() -> None:
    store = _store()
    victim = [_keys("victim", f"s{i}") for i in range(50)]
    for keys in victim:
        store.remember_affinity(keys, "e1")
    flood = [_keys("prober", f"s{i}")[1] for i in range(AFFINITY_ENTRIES)]
    for key in flood:
        store.remember_affinity((key,), "e2")
    owner = store.snapshot().prefix_owner
    assert len(owner) == AFFINITY_ENTRIES
    # before: the least recently used of all went, the victim's 51 first (its prefix and its 50 sessions)
    assert all(owner.get(k) == "e1" for keys in victim for k in keys)
    assert flood[50] not in owner and flood[51] in owner  # the prober lost its own 51 oldest


def test_the_tenant_holding_the_most_loses_its_least_recently_set() -> None:
    store = _store()
    a = [f"aaaa.{i}" for i in range(AFFINITY_ENTRIES // 2)]
    b = [f"bbbb.{i}" for i in range(AFFINITY_ENTRIES // 2)]
    for key in (*a, *b):
        store.remember_affinity((key,), "e1")
    store.remember_affinity((a[0],), "e2")  # set again: a's newest, and its endpoint moves
    store.remember_affinity(("aaaa.new",), "e1")  # a holds the most now: its oldest goes, a[1], not a[0]
    owner = store.snapshot().prefix_owner
    assert owner[a[0]] == "e2" and a[1] not in owner and owner["aaaa.new"] == "e1"
    store.remember_affinity(("bbbb.new",), "e1")  # now b holds the most: its oldest goes, b[0]
    owner = store.snapshot().prefix_owner
    assert b[0] not in owner and a[2] in owner and len(owner) == AFFINITY_ENTRIES


def test_keys_without_a_tag_are_one_tenants_least_recently_used() -> None:
    """An older gateway's keys (its peers' entries while a grid upgrades) and keys set directly (tests, tools)."""
    store = _store()
    for i in range(AFFINITY_ENTRIES + 1):
        store.remember_affinity((f"p{i}",), "e1")
    owner = store.snapshot().prefix_owner
    assert "p0" not in owner and "p1" in owner and len(owner) == AFFINITY_ENTRIES


def test_a_peers_entries_are_held_by_their_tags_tenant() -> None:
    """Another gateway's (key, endpoint) pairs carry the tag: a flood learned there evicts its sender's entries."""
    store = _store()
    victim = _keys("victim", "mine")
    store.remember_affinity(victim, "e1")
    flood = tuple((_keys("prober", f"s{i}")[1], "e2") for i in range(AFFINITY_ENTRIES))
    store.apply_shared(SharedView(inflight={}, circuits_opened={}, affinity=flood), lambda: 1000.0)
    owner = store.snapshot().prefix_owner
    assert all(owner.get(k) == "e1" for k in victim) and len(owner) == AFFINITY_ENTRIES
