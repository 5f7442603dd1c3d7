"""A tenant's users in named cities: how entries resolve, how bad ones are refused, and where users land."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from aigrid.sim.geography import Cities, load_cities
from aigrid.sim.network import distances_km
from aigrid.sim.scenario import Diurnal, Scenario, ScenarioError, Tenant, load_scenario
from aigrid.sim.user_cities import CENTRE_KM, SNAP_KM, UserCity, _nearest, label, locate, pinned, user_places
from aigrid.sim.workload import build_workload

BASE = {
    "name": "w", "seed": 2, "duration_s": 600, "requests": 12000,
    "models": [{"name": "m", "family": "f", "params_b": 1.0}],
    "sites": [{"id": "s", "lat": 0.0, "lon": 0.0, "models": ["m"]}],
    "tenants": [{"name": "t", "share": 1.0, "model": "m"}], "policies": ["nearest"],
}


def where(entry: object) -> str:
    cities = load_cities()
    return label(locate(UserCity.model_validate(entry), cities), cities)


def test_entries_by_name_country_state_and_coordinates() -> None:
    assert where("Tokyo") == "Tokyo, 40, JP"
    assert where("paris") == "Paris, 11, FR"  # Paris, Texas has a hundredth of its people
    assert where("Sao Paulo") == "São Paulo, 27, BR"  # accents need not be typed
    assert where("Valencia, ES") == "Valencia, 60, ES"
    assert where("Springfield, MO, US") == "Springfield, MO, US"
    assert where("springfield, ma, us") == "Springfield, MA, US"
    assert where({"lat": 52.52, "lon": 13.40}) == "Berlin, 16, DE"  # the city, not its district Mitte
    assert where({"lat": 35.44, "lon": 139.64}) == "Yokohama, 19, JP"


def _nearest_of_all(lat: float, lon: float, cities: Cities) -> int | None:
    """What _nearest answered before it measured only its band of latitude: every city measured."""
    km = distances_km(cities.lat, cities.lon, lat, lon)
    near = np.flatnonzero(km <= CENTRE_KM)
    if len(near):
        return int(near[np.argmax(cities.population[near])])
    i = int(np.argmin(km))
    return i if km[i] <= SNAP_KM else None


def test_a_point_means_the_city_every_city_measured_gives() -> None:
    """_nearest measures only the cities in a band of latitude (FX, thirty-second session): the same city as
    measuring all, for points on cities, 5-55 km off them (past CENTRE_KM and SNAP_KM, north and east, near
    the poles and the antimeridian) and far from any."""
    cities = load_cities()
    points = [(90.0, 0.0), (-90.0, 0.0), (0.0, -160.0), (64.0, 179.99), (-17.8, -179.99)]
    for i in range(0, len(cities.lat), 211):
        lat, lon = float(cities.lat[i]), float(cities.lon[i])
        points += [(lat, lon), *((min(90.0, lat + d), lon) for d in (0.05, 0.2, 0.44, 0.5)), (lat, lon + 0.3)]
    for lat, lon in points:
        expected = _nearest_of_all(lat, lon, cities)
        if expected is None:
            with pytest.raises(ValueError, match="no GeoNames city within 50 km"):
                _nearest(lat, lon, cities)
        else:
            assert _nearest(lat, lon, cities) == expected, (lat, lon)


def test_weights_default_to_population() -> None:
    cities = load_cities()
    idx, w = user_places([UserCity.model_validate(e) for e in ["Tokyo", {"city": "Osaka", "weight": 5.0}]], cities)
    assert w[0] == cities.population[idx[0]] and w[1] == 5.0


def test_pinned_entries_name_the_same_city() -> None:
    cities = load_cities()
    for i in (0, 17, 400, 9000, cities.by_name["springfield"][2], cities.by_name["valencia"][1]):
        e = pinned(int(i), 3.0, cities)
        assert locate(e, cities) == i and e.weight == 3.0


def bad(tmp_path: Path, cities: list[object], **tenant: object) -> list[str]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tenants": [{"name": "t", "share": 1.0, "model": "m", "cities": cities,
                                                         **tenant}]}))
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert all(str(path) in line for line in str(e.value).splitlines())
    return e.value.problems


def test_bad_entries_are_named_with_their_candidates(tmp_path: Path) -> None:
    problems = bad(tmp_path, ["Tokyo", "Valencia", "Atlantys", {"lat": 0.0, "lon": -30.0},
                              {"city": "Paris", "lat": 1.0}, "Paris, XX", {"city": "Osaka", "weight": 0}])
    text = "\n".join(problems)
    assert "tenants[0].cities[0]" not in text
    amb = next(p for p in problems if p.startswith("tenants[0].cities[1]: 'Valencia' is ambiguous"))
    assert "Valencia, 60, ES (824,340 people)" in amb and "Valencia, 07, VE" in amb and "lat and lon" in amb
    assert "tenants[0].cities[2]: no city named 'Atlantys' in GeoNames (close: Atlantis" in text
    assert "tenants[0].cities[3]: no GeoNames city within 50 km of (0.0, -30.0)" in text
    assert "tenants[0].cities[4]: give a city name, or lat and lon" in text
    assert "tenants[0].cities[5]: no city 'Paris, XX' in GeoNames; cities named 'Paris': Paris, 11, FR" in text
    assert any(p.startswith("tenants[0].cities[6].weight") for p in problems)
    assert "Traceback" not in text


def test_a_city_twice_or_beside_countries_is_refused(tmp_path: Path) -> None:
    assert bad(tmp_path, ["Paris", "Paris, FR"]) == [
        "tenants[0]: cities[0] and cities[1] are both Paris, 11, FR"]
    assert bad(tmp_path, ["Paris"], countries=["FR"]) == [
        "tenants[0]: give cities, or continents and countries, not both"]


def test_users_land_only_in_the_listed_cities_in_proportion_to_weights() -> None:
    weights = {"Tokyo": 1.0, "Lagos": 2.0, "Lima": 3.0, "Springfield, MO, US": 6.0}
    tenant = Tenant(name="t", share=1, model="m",
                    cities=[UserCity(city=c, weight=w) for c, w in weights.items()])
    # a flat day (peak_to_trough 1), so that local time does not reweigh cities in different time zones
    sc = Scenario.model_validate({**BASE, "tenants": [tenant], "diurnal": Diurnal(peak_to_trough=1.0)})
    cities = load_cities()
    w = build_workload(sc, cities)
    want = {locate(UserCity(city=c), cities): v / sum(weights.values()) for c, v in weights.items()}
    got, counts = np.unique(w.city, return_counts=True)
    assert set(got.tolist()) == set(want)
    for i, n in zip(got.tolist(), counts.tolist(), strict=True):
        assert n / len(w) == pytest.approx(want[i], abs=0.02), label(i, cities)


def test_default_weights_and_local_time_shape_the_draw() -> None:
    # Tokyo and Los Angeles by population; at 05:00 UTC it is 14:00 in Tokyo (near its peak) and 22:00 in
    # Los Angeles, so Tokyo's users send more than their population share.
    tenant = Tenant(name="t", share=1, model="m", cities=[UserCity(city="Tokyo"), UserCity(city="Los Angeles")])
    sc = Scenario.model_validate({**BASE, "tenants": [tenant], "diurnal": Diurnal(start_utc_hour=5.0)})
    cities = load_cities()
    w = build_workload(sc, cities)
    tokyo, la = locate(UserCity(city="Tokyo"), cities), locate(UserCity(city="Los Angeles"), cities)
    assert set(np.unique(w.city).tolist()) == {tokyo, la}
    share = float((w.city == tokyo).mean())
    by_pop = cities.population[tokyo] / (cities.population[tokyo] + cities.population[la])
    assert share > by_pop + 0.05
