"""A tenant's users in named cities: the `cities:` list of a simulator tenant and of a plan demand's tenant.

Each entry is one GeoNames city (sim/geography.py), given
- by name: `Tokyo`, `Valencia, ES` (with its ISO country code) or `Springfield, MO, US` (with its GeoNames
  admin-1 code too, the state in the US); names match regardless of case and accents (`Sao Paulo`);
- or by coordinates, `{lat: 52.52, lon: 13.40}`: the most populous GeoNames city within CENTRE_KM of the
  point (Berlin rather than its district Mitte, which GeoNames lists too), else the nearest within SNAP_KM;
with an optional `weight`, its users relative to the other entries' (default: the city's population), e.g.
`{city: Osaka, weight: 2000000}`. A name that several cities share is refused as ambiguous, with the
candidates listed in a form that can be pasted back, unless the most populous of them has at least
DOMINANCE times the people of the next (`Paris` is Paris, France; `Valencia` and `Springfield` are not
decided). An unknown name, an ambiguous one or a point far from any city raises ValueError, which the
scenario and demand loaders report under the entry's field (`tenants[0].cities[2]: ...`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from aigrid.core.geo import EARTH_RADIUS_KM
from aigrid.sim.geography import Cities, fold, load_cities
from aigrid.sim.network import distances_km

SNAP_KM = 50.0
"""A point given by lat/lon must lie within this distance of a GeoNames city (over 15,000 people)."""
CENTRE_KM = 10.0
"""A point given by lat/lon means the most populous city this near it (a city, not one of its districts)."""
DOMINANCE = 10.0
"""A shared name means its most populous city only if that city has this many times the people of the next."""
_BAND_DEG = float(np.degrees(SNAP_KM / EARTH_RADIUS_KM)) + 1e-6
"""SNAP_KM as degrees of latitude (and a little more, for rounding): no city farther in latitude is that near."""
SHOWN = 8
"""Candidates listed in an ambiguity error."""
MAX_ENTRIES = 2_000
"""The most entries a `cities:` list may hold (each is looked up: a lat/lon one 0.06-0.25 ms, 3-4 ms before the
thirty-second session measured only a band of latitude)."""


class UserCity(BaseModel):
    """One city of a tenant's users: `city: NAME[, ADMIN1], COUNTRY` or `lat` and `lon`, and a weight."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # YAML's .inf passed every gt=0 bound

    city: str | None = Field(default=None, min_length=1, description="NAME, NAME, COUNTRY or NAME, ADMIN1, "
                             "COUNTRY (GeoNames)")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    weight: float | None = Field(default=None, gt=0, description="users relative to the other cities' "
                                 "(default: the city's population)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"city": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _resolves(self) -> UserCity:
        by_point = self.lat is not None or self.lon is not None
        if (self.city is None) != by_point or (by_point and (self.lat is None or self.lon is None)):
            raise ValueError("give a city name, or lat and lon")
        locate(self, load_cities())  # raises ValueError naming the candidates
        return self


def _few_enough(value: Any) -> Any:
    """A `cities:` list of more than MAX_ENTRIES refused before any entry is looked up: pydantic checks a list's
    max_length only after validating its items, and 2,001 lat/lon entries took 50 s to be refused. The error is
    pydantic's own (too_long), so the message and the field are those the limit gave before."""
    if isinstance(value, list | tuple) and len(value) > MAX_ENTRIES:
        raise PydanticCustomError("too_long", "List should have at most {max_length} items after validation, not "
                                  "{actual_length}", {"field_type": "List", "max_length": MAX_ENTRIES,
                                                      "actual_length": len(value)})
    return value


UserCities = Annotated[list[UserCity], Field(min_length=1, max_length=MAX_ENTRIES), BeforeValidator(_few_enough)]
"""A tenant's `cities:` list (a scenario's and a plan demand's): 1 to MAX_ENTRIES entries, its length checked
first (the Field before the validator: its limits are the list's own, "List should have ...", not a check after
it, "Value should have ...")."""


def locate(entry: UserCity, cities: Cities) -> int:
    """The index of the entry's city in `cities`, or ValueError saying why there is no single one."""
    if entry.city is None:
        assert entry.lat is not None and entry.lon is not None
        return _nearest(entry.lat, entry.lon, cities)
    return _named(entry.city, cities)


def label(i: int, cities: Cities) -> str:
    """`NAME, ADMIN1, COUNTRY`: how a city is written to pick it among those of the same name."""
    parts = [cities.name[i], cities.admin1[i], cities.country[i]]
    return ", ".join(p for p in parts if p)


def user_places(entries: Sequence[UserCity], cities: Cities) -> tuple[np.ndarray, np.ndarray]:
    """(city indices, user weights) of a city list; ValueError if two entries are the same city."""
    idx = [locate(e, cities) for e in entries]
    seen: dict[int, int] = {}
    for k, i in enumerate(idx):
        if i in seen:
            raise ValueError(f"cities[{seen[i]}] and cities[{k}] are both {label(i, cities)}")
        seen[i] = k
    weight = [e.weight if e.weight is not None else float(cities.population[i]) for e, i in zip(entries, idx,
                                                                                                 strict=True)]
    return np.array(idx, dtype=np.int64), np.array(weight, dtype=float)


def pinned(i: int, weight: float, cities: Cities) -> UserCity:
    """An entry for city i with this weight (what the planner hands the simulator): `NAME, ADMIN1, COUNTRY`
    when that picks it, else its coordinates. For 117 of the 34,006 cities neither does (a namesake in the
    same state, and a more populous city within CENTRE_KM): their users count at that neighbour."""
    name = label(i, cities)
    try:
        if _named(name, cities) == i:
            return UserCity(city=name, weight=weight)
    except ValueError:
        pass
    return UserCity(lat=float(cities.lat[i]), lon=float(cities.lon[i]), weight=weight)


def _named(text: str, cities: Cities) -> int:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 3 or not all(parts):
        raise ValueError(f"{text!r}: expected NAME, NAME, COUNTRY or NAME, ADMIN1, COUNTRY")
    name = parts[0]
    found = list(cities.by_name.get(fold(name), ()))
    if not found:
        raise ValueError(f"no city named {name!r} in GeoNames{cities.close_hint(name)}")
    if len(parts) > 1:
        country = parts[-1].upper()
        mine = [i for i in found if cities.country[i] == country]
        if len(parts) == 3:
            mine = [i for i in mine if cities.admin1[i].casefold() == parts[1].casefold()]
        if not mine:
            raise ValueError(f"no city {text!r} in GeoNames; cities named {name!r}: {_listing(found, cities)}")
        found = mine
    pop = cities.population
    if len(found) > 1 and pop[found[0]] < DOMINANCE * pop[found[1]]:
        raise ValueError(f"{text!r} is ambiguous, {len(found)} GeoNames cities have that name: "
                         f"{_listing(found, cities)}; write one of these, or give lat and lon")
    return found[0]


def _listing(found: list[int], cities: Cities) -> str:
    shown = [f"{label(i, cities)} ({int(cities.population[i]):,} people)" for i in found[:SHOWN]]
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return "; ".join(shown) + more


def _nearest(lat: float, lon: float, cities: Cities) -> int:
    """The city a point means: only the cities in its band of latitude SNAP_KM wide either side are measured (a
    great-circle distance is at least the latitudes' difference, EARTH_RADIUS_KM per radian), the same answer as
    measuring all 34,006 (3-4 ms a point) in 0.06-0.25 ms (0.23 in the densest band, 1,143 cities about
    40.8 N); all of them for the error's nearest city."""
    band = np.flatnonzero(np.abs(cities.lat - lat) <= _BAND_DEG)
    km = distances_km(cities.lat[band], cities.lon[band], lat, lon)
    near = np.flatnonzero(km <= CENTRE_KM)
    if len(near):
        return int(band[near[np.argmax(cities.population[band[near]])]])
    if len(km) and km.min() <= SNAP_KM:
        return int(band[np.argmin(km)])
    km = distances_km(cities.lat, cities.lon, lat, lon)
    i = int(np.argmin(km))
    if km[i] > SNAP_KM:
        raise ValueError(f"no GeoNames city within {SNAP_KM:.0f} km of ({lat}, {lon}); the nearest is "
                         f"{label(i, cities)}, {km[i]:.0f} km away")
    return i
