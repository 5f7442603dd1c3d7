"""Traffic from the real traces: counts, sizes, burstiness, diurnal shape, spikes, tenants' cities."""

import numpy as np

from aigrid.sim.geography import load_cities
from aigrid.sim.scenario import Diurnal, Fault, Scenario, SharedPrefixDef, Tenant
from aigrid.sim.workload import build_workload, diurnal, load_trace

BASE = {
    "name": "w", "seed": 1, "duration_s": 3600, "requests": 20000,
    "models": [{"name": "m", "family": "f", "params_b": 1.0}],
    "sites": [{"id": "s", "lat": 0.0, "lon": 0.0, "models": ["m"]}],
    "tenants": [{"name": "t", "share": 1.0, "model": "m"}], "policies": ["nearest"],
}


def test_trace_sizes_and_burstiness_match_the_readme() -> None:
    conv, code = load_trace("conv"), load_trace("code")
    assert 900 < np.median(conv.prompt) < 1150 and 100 < np.median(conv.output) < 160
    cv = lambda g: g.std() / g.mean()  # noqa: E731
    assert 0.9 < cv(conv.gaps) < 1.4 and cv(code.gaps) > 8


def test_count_sizes_and_order() -> None:
    w = build_workload(Scenario.model_validate(BASE), load_cities())
    assert 0.85 * 20000 < len(w) < 1.15 * 20000
    assert np.all(np.diff(w.t) >= 0) and w.t[-1] <= 3600
    assert w.prompt.min() >= 0 and w.output.min() >= 1


def test_diurnal_curve_has_the_configured_peak_to_trough() -> None:
    h = np.linspace(0, 24, 241)
    d = diurnal(h, 3.0, 15.0)
    assert abs(d.max() / d.min() - 3.0) < 1e-6 and abs(h[d.argmax()] - 15.0) < 0.1


def test_users_follow_local_time_and_their_tenants_region() -> None:
    # 24 hours of European users: more of them at 15:00 local than at 03:00.
    sc = Scenario.model_validate({**BASE, "duration_s": 86400, "requests": 30000,
                                  "tenants": [Tenant(name="eu", share=1, model="m", continents=["EU"])],
                                  "diurnal": Diurnal(start_utc_hour=0.0)})
    cities = load_cities()
    w = build_workload(sc, cities)
    assert {cities.continent[c] for c in np.unique(w.city)} == {"EU"}
    hour = (w.t / 3600) % 24
    assert ((hour > 13) & (hour < 15)).sum() > 1.8 * ((hour > 1) & (hour < 3)).sum()


def test_a_spike_adds_load_in_its_window() -> None:
    calm = build_workload(Scenario.model_validate(BASE), load_cities())
    spiky_sc = Scenario.model_validate({**BASE, "faults": [Fault(kind="spike", at_s=1800, until_s=2400, factor=4)]})
    spiky = build_workload(spiky_sc, load_cities())
    window = lambda w: ((w.t >= 1800) & (w.t < 2400)).sum()  # noqa: E731
    assert window(spiky) > 2.5 * window(calm) and len(spiky) > len(calm)


def test_shared_prefixes_open_their_tenants_prompts() -> None:
    sc = Scenario.model_validate({**BASE, "requests": 4000}).model_copy(update={"tenants": [
        Tenant(name="app", share=0.5, model="m", shared_prefix=SharedPrefixDef(tokens=1000, count=3)),
        Tenant(name="plain", share=0.5, model="m")]})
    plain = build_workload(sc.model_copy(update={"tenants": [t.model_copy(update={"shared_prefix": None})
                                                             for t in sc.tenants]}), load_cities())
    w = build_workload(sc, load_cities())
    assert plain.prefix is None and w.prefix is not None and w.prefix_tokens is not None
    app = w.tenant == 0
    assert set(np.unique(w.prefix[app])) == {0, 1, 2} and (w.prefix[~app] == -1).all()
    assert (w.prompt - plain.prompt == np.where(app, 1000, 0)).all() and (w.prefix_tokens[app] == 1000).all()
    assert (w.t == plain.t).all() and (w.city == plain.city).all()  # the rest of the workload is unchanged
