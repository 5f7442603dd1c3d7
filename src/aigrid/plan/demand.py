"""The demand file of `aigrid plan`: who the users are, what they send, the SLO, and the supply to choose from.

A bad file raises DemandError (a SpecError) whose problems each name the field, e.g.
`tenants[2].share: Input should be greater than 0`. See examples/plan/*.yaml and docs/planning.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aigrid.errors import MAX_LISTED, SpecError, listed
from aigrid.sim.geography import (
    CONTINENTS,
    EU27,
    continent_hint,
    country_hint,
    jurisdiction_of,
    load_cities,
    unknown_continents,
    unknown_countries,
)
from aigrid.sim.hardware import HARDWARE
from aigrid.sim.routers import KNOWN
from aigrid.sim.scenario import MAX_PARAMS_B, MAX_REQUESTS, MAX_SHARE, given_twice, trace_source
from aigrid.sim.user_cities import UserCities, user_places
from aigrid.spec.load import describe, read_yaml, without_typos_missing
from aigrid.spec.models import MAX_TOKENS
from aigrid.spec.near import did_you_mean

MAX_FLOWS = 600
"""The most flows (a tenant's users on one continent, or in one by_place country) the traffic model may hold,
counted as tenants x (continents + by_place places): each is a rate per demand point and hour, 600 KB; 200
tenants held 2.7 GB, and an 8 MiB demand file lists 100,000."""
MAX_SITE_GPUS = 1_000_000
"""The most devices a site may hold (supply.max_gpus_per_site): the largest sites built hold a few hundred
thousand; 1e30 overflowed the planner's 64-bit table of devices per site (a traceback)."""
MAX_SAMPLES = 20
"""The most arrival samples per check (verify.samples, `--samples`): each is one more simulator run per check."""
MAX_MOVE_TRIALS = 100
"""The most hardware-move trials per proposal (verify.move_trials, `--move-trials`): each is one more run of the
checks on every sample."""
MAX_FACTOR = 1000.0
"""The largest by_place multiplier (and what-if factor): 1e308 overflowed the traffic model (a traceback)."""


class DemandError(SpecError):
    """A demand file that cannot be read or does not validate; str() lists each problem with its field."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(path, problems)
        self.args = ("\n".join(f"{path}: {p}" for p in listed(problems)),)


def place_problems(places: Iterable[str]) -> list[str]:
    """Each of `places` that is neither a continent code nor the country code of a GeoNames city."""
    countries = set(load_cities().country)
    bad = sorted(p for p in set(places) if p not in CONTINENTS and p not in countries)
    return [f"unknown place {p!r}{continent_hint(p) or country_hint(p)} (a continent, {', '.join(CONTINENTS)}, or an ISO "
            "country code, e.g. DE, US)" for p in bad]


def jurisdiction_problems(jurisdictions: Iterable[str]) -> list[str]:
    """Each jurisdiction no candidate city can be in: EU for the 27 member states, else the ISO country code."""
    known = {jurisdiction_of(c) for c in load_cities().country}
    out = []
    for j in sorted(set(jurisdictions) - known):
        hint = "its sites are in jurisdiction EU: use EU" if j in EU27 else "EU or an ISO country code, e.g. US"
        out.append(f"unknown jurisdiction {j!r} ({hint})")
    return out


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # YAML's .inf passed every gt=0 bound


class Model(Strict):
    name: str
    family: str
    params_b: float = Field(gt=0, le=MAX_PARAMS_B)
    kv_bytes_per_token: int = Field(default=131072, gt=0)


class Tenant(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    share: float = Field(gt=0, le=MAX_SHARE, description="fraction of the day's requests (normalised over "
                         "tenants)")
    trace: str = Field(default="conv", description="sizes and bursts: conv or code (the shipped Azure 2023 traces) "
                       "or a trace file (docs/simulator.md, 'Trace files'), relative to the demand file")
    model: str
    continents: list[str] | None = Field(default=None, description="where its users live (default: everywhere)")
    countries: list[str] | None = Field(default=None, description="ISO country codes of its users")
    cities: UserCities | None = Field(default=None, description="or the GeoNames cities its users live in, by name or lat/lon, "
                                      "with weights "
                                      "(sim/user_cities.py); at most 2,000 (its length checked first), each "
                                      "looked up (under 0.3 ms)")
    jurisdictions: list[str] | None = Field(default=None, description="residency: allowed jurisdictions")
    max_prompt_tokens: int = Field(default=8192, gt=0, le=MAX_TOKENS)

    @field_validator("trace")
    @classmethod
    def _trace(cls, v: str, info: ValidationInfo) -> str:
        return trace_source(v, info)

    # each under its own field (`tenants[0].continents: unknown continent 'EUR'`): a check of the whole tenant
    # said `tenants[0]: unknown continents EUR` and `tenants[0]: countries: no GeoNames city in ['XX']`
    @field_validator("continents")
    @classmethod
    def _continents(cls, v: list[str] | None) -> list[str] | None:
        problem = unknown_continents(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("countries")
    @classmethod
    def _countries(cls, v: list[str] | None) -> list[str] | None:
        problem = unknown_countries(v)  # the scenario's check: `de` names DE, a continent says where it goes
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("jurisdictions")
    @classmethod
    def _jurisdictions(cls, v: list[str] | None) -> list[str] | None:
        problems = jurisdiction_problems(v or ())
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _places(self) -> Tenant:
        if self.cities is not None:
            if self.continents is not None or self.countries is not None:
                raise ValueError("give cities, or continents and countries, not both")
            user_places(self.cities, load_cities())  # two entries naming one city are refused
        return self


class Diurnal(Strict):
    peak_to_trough: float = Field(default=3.0, ge=1.0)
    peak_hour: float = Field(default=15.0, ge=0, lt=24, description="local solar hour of the daily peak")


class Traffic(Strict):
    peak_rps: float = Field(gt=0, description="requests per second of all tenants at the busiest hour of the day")
    growth: float = Field(default=0.0, ge=-0.9, le=100, description="planned growth on top (0.3 = +30%)")
    diurnal: Diurnal = Diurnal()
    by_place: dict[str, float] = Field(default_factory=dict, description="multiplier per continent or country "
                                       "code on top of the population model, e.g. {AS: 1.3}")

    @field_validator("by_place")
    @classmethod
    def _factors(cls, v: dict[str, float]) -> dict[str, float]:
        # under its field (`traffic.by_place: ...`), not `traffic: by_place: ...`
        bad = [k for k, f in v.items() if not 0 <= f <= MAX_FACTOR]
        if bad:
            raise ValueError(f"factors must be from 0 to {MAX_FACTOR:g} ({', '.join(f'{k}: {v[k]:g}' for k in bad)})")
        problems = place_problems(v)
        if problems:
            raise ValueError("; ".join(problems))
        return v


class Slo(Strict):
    ttft_ms: float = Field(default=1000.0, gt=0)
    tpot_ms: float = Field(default=100.0, gt=0)
    attainment: float = Field(default=0.99, gt=0, le=1, description="fraction of every tenant's requests that "
                              "must be served within both TTFT and TPOT")


class Candidates(Strict):
    """Where capacity may go: named cities, the N most populous GeoNames cities, or a provider's regions."""

    cities: list[str] | None = Field(default=None, max_length=2_000, description="at most 2,000 (each is looked "
                                     "up by name, 5 ms; top gives more)")
    top: int | None = Field(default=None, gt=0, le=20_000, description="the N most populous cities")
    continents: list[str] | None = Field(default=None, description="restrict `top` to these continents")
    provider: Literal["aws", "gcp", "azure"] | None = None

    @model_validator(mode="after")
    def _one(self) -> Candidates:
        given = [k for k in ("cities", "top", "provider") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of cities, top or provider (got {given or 'none'})")
        return self


class HardwareOption(Strict):
    usd_per_hour: float | None = Field(default=None, gt=0, le=1000, description="price per device-hour "
                                       "(default: the simulator profile's assumption)")
    gpus_per_replica: int = Field(default=1, ge=1, le=16)
    chunk_tokens: int | None = Field(default=None, ge=64, le=65536, description="the engines' prefill chunk "
                                     "(vLLM max_num_batched_tokens); default: the planner chooses (plan/chunks.py)")


class SiteLimit(Strict):
    max_gpus: int | None = Field(default=None, ge=0)
    max_power_kw: float | None = Field(default=None, ge=0, description="devices x peak power must fit")


class Supply(Strict):
    candidates: Candidates
    hardware: dict[str, HardwareOption] = Field(default_factory=lambda: {"h100": HardwareOption()})
    max_gpus_per_site: int = Field(default=64, ge=1, le=MAX_SITE_GPUS)
    limits: dict[str, SiteLimit] = Field(default_factory=dict, description="per candidate site id or city")
    mix_hardware: bool = Field(default=False, description="let the pooled model give each site its own hardware "
                               "(off: on the global example its mixed proposals refined to dearer plans, "
                               "docs/planning.md)")

    @field_validator("hardware")
    @classmethod
    def _known(cls, v: dict[str, HardwareOption]) -> dict[str, HardwareOption]:
        # under its field (`supply.hardware: unknown profile 'h10'`), not `supply: hardware: unknown profiles h10`
        unknown = [h for h in v if h not in HARDWARE]
        if unknown:
            raise ValueError(f"unknown profile{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                             f"{did_you_mean(unknown[0], HARDWARE)} (known: {', '.join(sorted(HARDWARE))})")
        if not v:
            raise ValueError("give at least one profile")
        return v


class Verify(Strict):
    """How each placement is checked in the simulator (the same routing core as the gateway)."""

    window_s: float = Field(default=120.0, ge=10, le=3600, description="simulated seconds per check")
    policy: str = "balanced"
    gateways: int = Field(default=4, ge=1, le=64)
    telemetry_lag_s: float = Field(default=1.0, ge=0)
    peak_windows: int = Field(default=3, ge=1, le=24, description="UTC hours checked without a failure")
    max_rounds: int = Field(default=6, ge=1, le=50, description="refinement rounds per placement")
    proposals: int = Field(default=3, ge=1, le=12, description="screened placements verified in full")
    samples: int = Field(default=1, ge=1, le=MAX_SAMPLES, description="arrival samples per check (seeds seed + hour "
                         "+ 1000 x k); a check passes only if every sample does (`aigrid plan --samples`)")
    move_trials: int = Field(default=16, ge=0, le=MAX_MOVE_TRIALS,
                             description="hardware-move candidates (each a run of the checks on every sample) "
                             "tried per proposal, the trims after a kept move included; 0: no moves "
                             "(`aigrid plan --move-trials`)")
    pair_trials: int = Field(default=8, ge=0, le=MAX_MOVE_TRIALS,
                             description="two-site-move candidates (each a run of the checks on every sample, "
                             "stopping at the first failing batch) simulated per proposal once every single-site "
                             "move has failed, the trims after a kept one included; 0: none")

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:  # `verify.policy: unknown policy 'fastest'`, not `verify: policy: unknown ...`
        if v not in KNOWN:
            raise ValueError(f"unknown policy {v!r}{did_you_mean(v, KNOWN)} (known: {', '.join(KNOWN)})")
        return v


class Demand(Strict):
    name: str = "plan"
    seed: int = Field(default=1, ge=0)
    models: list[Model] = Field(min_length=1)
    tenants: list[Tenant] = Field(min_length=1)
    traffic: Traffic
    slo: Slo = Slo()
    supply: Supply
    verify: Verify = Verify()

    @model_validator(mode="after")
    def _consistent(self) -> Demand:
        models = {m.name for m in self.models}
        problems = []
        for i, t in enumerate(self.tenants):
            if t.model not in models:
                problems.append(f"tenants[{i}].model: unknown model {t.model!r}{did_you_mean(t.model, models)} "
                                f"(models: {', '.join(sorted(models))})")
        named_twice = given_twice([t.name for t in self.tenants])
        if named_twice:  # the names, not the whole list as Python writes it (tenants: duplicate names in ['a', ...])
            problems.append(f"tenants: {', '.join(map(repr, named_twice))} given more than once (each name once)")
        given = [m.name for m in self.models]
        twice = given_twice(given)
        if twice:  # the last of a name silently replaced the others (their sizes, their KV bytes)
            problems.append(f"models: {', '.join(map(repr, twice))} given more than once (each name once)")
        load = load_problem(self)
        if load:
            problems.append(load)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def tenant(self, name: str) -> Tenant:
        for t in self.tenants:
            if t.name == name:
                return t
        raise KeyError(name)


def load_problem(demand: Demand) -> str | None:
    """Why the planner cannot hold the demand (None when it can): its flows, at most MAX_FLOWS; and its peak,
    which the simulator checks: each check replays up to
    peak_rps x (1 + growth) x the largest by_place factor x verify.window_s requests, at most the
    MAX_REQUESTS a scenario may expect (1e12 rps was a pydantic traceback from the scenario the planner built)."""
    t = demand.traffic
    flows = len(demand.tenants) * (len(CONTINENTS) + len(t.by_place))
    if flows > MAX_FLOWS:
        return (f"tenants: {len(demand.tenants):,} tenants x {len(CONTINENTS) + len(t.by_place)} places (continents "
                f"and by_place) is up to {flows:,} flows, more than the {MAX_FLOWS:,} the traffic model holds")
    most = t.peak_rps * (1 + t.growth) * max([1.0, *t.by_place.values()]) * demand.verify.window_s
    if most <= MAX_REQUESTS:
        return None
    return (f"traffic.peak_rps: {t.peak_rps:g} rps with its growth and by_place factors is about {most:,.0f} requests "
            f"in a verify window of {demand.verify.window_s:g} s, more than the {MAX_REQUESTS:,} the simulator checks")


def load_demand(path: str | Path) -> Demand:
    path = Path(path)
    return parse_demand(read_yaml(path, DemandError, "demand file"), str(path), base=path.parent)


def parse_demand(raw: object, source: str = "<demand>", base: Path | None = None) -> Demand:
    """`base`: where a tenant's relative `trace:` file is (default: the current directory)."""
    if not isinstance(raw, dict):
        raise DemandError(source, ["expected a mapping at the top level"])
    try:
        return Demand.model_validate(raw, context={"base": str(base) if base is not None else None})
    except ValidationError as e:
        lines = []
        for k, err in enumerate(without_typos_missing(e.errors(), Demand)):  # `peak_rp`: one line, not two
            if err["loc"]:  # the path as a grid spec's and a scenario's errors write it (`tenants[0].share`)
                lines.append(describe(err, Demand if k < MAX_LISTED else None))  # hints for the errors listed only
            else:  # checks across fields already name theirs, "; "-separated
                lines += err["msg"].removeprefix("Value error, ").split("; ")
        raise DemandError(source, lines) from None
