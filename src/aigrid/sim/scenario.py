"""Scenario spec: pydantic models loaded from YAML. A bad scenario raises ScenarioError naming the file and
the field, never a traceback. See examples/sim/*.yaml and docs/simulator.md."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from aigrid.core.geo import DEFAULT_OVERHEAD_MS, DEFAULT_ROUTE_FACTOR
from aigrid.core.urgency import parse_level
from aigrid.engines.step_cost import DEFAULT_CHUNK_TOKENS
from aigrid.errors import MAX_LISTED, SpecError, listed
from aigrid.sim.geography import load_cities, unknown_continents, unknown_countries
from aigrid.sim.hardware import HARDWARE
from aigrid.sim.routers import KNOWN
from aigrid.sim.user_cities import UserCities, user_places
from aigrid.spec.load import describe, read_yaml, without_typos_missing
from aigrid.spec.models import (
    DEFAULT_QUALITY_TARGET,
    MAX_PARAMS_B,
    MAX_TOKENS,
    AdmissionLimits,
    QualityDrop,
    QualityTarget,
)
from aigrid.spec.near import did_you_mean
from aigrid.traces import TraceFileError, read_trace_cached


def given_twice(names: list[str]) -> list[str]:
    """The names given more than once, sorted; linear (a count per name was quadratic: 40,000 models 24 s)."""
    return sorted(n for n, count in Counter(names).items() if count > 1)


class ScenarioError(SpecError):
    """A scenario file that cannot be read or does not validate (str() lists each problem with its field)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(path, problems)
        self.args = ("\n".join(f"{path}: {p}" for p in listed(problems)),)


class ScenarioProblem(ValueError):
    """A scenario that validates but cannot be built (an unknown city, a model too big for its hardware)."""


SHIPPED_TRACES = ("conv", "code")
"""The Azure 2023 traces shipped in data/traces (conversation, code); any other `trace:` is a file."""


def trace_source(value: str, info: ValidationInfo) -> str:
    """A tenant's `trace:`: conv, code, or a trace file (aigrid.traces: CSV or JSON Lines), relative to the
    file that names it (the validation context's `base`); the file's absolute path, read now so that a bad
    file is refused under the field, with its line and column."""
    if value in SHIPPED_TRACES:
        return value
    path = Path(value).expanduser()
    base = (info.context or {}).get("base")
    if not path.is_absolute():
        path = Path(base or ".") / path
    path = path.resolve()
    try:
        tf = read_trace_cached(path)
    except TraceFileError as e:
        raise ValueError(f"{e} (trace: conv, code or a trace file)") from None
    if len(tf) < 2 or tf.t[-1] <= tf.t[0]:
        raise ValueError(f"{path}: {len(tf)} requests over {tf.t[-1] - tf.t[0]:g} s; a trace to replay needs two "
                         "or more arrival times")
    return str(path)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # YAML's .inf passed every gt=0 bound


MAX_REQUESTS = 10_000_000
"""The most requests a scenario may expect at its highest load (`requests` x the largest `sweep` factor, with its
spikes): about 100 bytes each in the workload's arrays before the simulator's own; 1e9 was a MemoryError."""
MAX_DURATION_S = 172_800.0
"""Two days: the workload holds a weight per user city (34,006) per 5-minute slot; 1e300 s was a traceback."""
MAX_ENGINES = 100_000
"""The most engines (replicas x models, over sites and generated sites; each site set alone) a scenario may
build: the largest example has 4,400; 20,000 generated sites of 10,000 replicas were 200 million objects."""
MAX_SHARE = 1e9
"""Shares are normalised over tenants; two of 1e308 summed to infinity, and every result was NaN."""


class ModelDef(Strict):
    name: str
    family: str
    params_b: float = Field(gt=0, le=MAX_PARAMS_B)
    kv_bytes_per_token: int = Field(default=131072, gt=0, description="2 x layers x KV heads x head dim x 2 B")


class SiteDef(Strict):
    id: str
    city: str | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    country: str | None = None
    jurisdiction: str | None = None
    hardware: str = "h100"
    gpus_per_replica: int = Field(default=1, ge=1, le=16)
    replicas: int = Field(default=1, ge=1, le=10_000)
    models: list[str] = Field(min_length=1)
    chunk_tokens: int | None = Field(default=None, gt=0, description="this site's engines' prefill chunk "
                                     "(vLLM max_num_batched_tokens); default: the scenario's chunk_tokens")

    @model_validator(mode="after")
    def _where(self) -> SiteDef:
        if self.city is None and (self.lat is None or self.lon is None):
            raise ValueError(f"site {self.id!r} needs a city or lat and lon")
        if self.hardware not in HARDWARE:
            raise ValueError(f"site {self.id!r}: unknown hardware {self.hardware!r}"
                             f"{did_you_mean(self.hardware, HARDWARE)} (known: {', '.join(sorted(HARDWARE))})")
        return self


def known_continents(given: list[str] | None) -> list[str] | None:
    """A `continents` list whose every code is a continent's (geography.CONTINENTS), else ValueError naming the one
    meant: `[EUR]` was `tenant 'x': no cities in its continents/countries` with no field, or a generated site set of
    no sites, or a fault on nothing."""
    problem = unknown_continents(given)
    if problem:
        raise ValueError(problem)
    return given


class GeneratedSites(Strict):
    """`count` sites at the most populous cities of the chosen continents, hardware drawn by share."""

    count: int = Field(gt=0, le=20_000)
    hardware: dict[str, float] = Field(default_factory=lambda: {"h100": 1.0})
    continents: list[str] | None = None
    models: list[str] = Field(min_length=1)
    gpus_per_replica: int = Field(default=1, ge=1, le=16)  # a site's own bounds (SiteDef): past them, a traceback
    replicas: int = Field(default=1, ge=1, le=10_000)

    @field_validator("continents")
    @classmethod
    def _continents(cls, v: list[str] | None) -> list[str] | None:
        return known_continents(v)


class AgentDef(Strict):
    """An agent tenant: each arrival is a session of steps + 1 model calls separated by `steps` tool runs.

    loop=client: the client runs the loop, so every model call is a separate routed request that crosses the
    client-site network. loop=site: the loop runs beside the engine chosen for the first call; the session
    crosses the network once."""

    steps: int = Field(ge=1, le=1000, description="tool steps per session (model calls = steps + 1)")
    tool_ms: float = Field(default=0.0, ge=0, le=3_600_000, description="time of one tool run, wherever the loop "
                           "runs (at most an hour)")
    loop: Literal["client", "site"] = "site"
    output_tokens: int | None = Field(default=None, gt=0, le=MAX_TOKENS, description="output of every model call "
                                      "(default: the trace row's)")


class SharedPrefixDef(Strict):
    """Every request of the tenant opens with one of `count` system prompts of `tokens` tokens (an app's
    instructions, a few apps' or agents' tool definitions), drawn uniformly per request: an engine that has
    prefilled that prefix lately (its prefix cache, engines/engine_model.py) prefills only the rest, and the
    gateways know which endpoint served each prefix last (the affinity axis; core.predict.warm_cache)."""

    tokens: int = Field(gt=0, le=65536, description="tokens of each shared prefix, added to the trace's prompt")
    count: int = Field(default=1, ge=1, le=100000, description="distinct prefixes the requests draw from")


class RightSizeDef(Strict):
    """`model: auto` with a quality target (sim/right_size.py, docs/models.md): each request draws a labelled
    held-out prompt; the gateway's estimate for it decides which models may serve it."""

    models: list[str] | None = Field(default=None, description="the model ladder (default: every model)")
    quality_target: QualityTarget = Field(default=DEFAULT_QUALITY_TARGET, description="at most this much below "
                                          "always using the largest model (the estimate's operating table)")
    max_quality_drop: QualityDrop | None = Field(default=None, description="the per-prompt threshold on the "
                                                 "largest model's estimated gain (overrides quality_target)")
    prompts: str | None = Field(default=None, description="labelled prompts, a model-routing CSV (default: "
                                "data/model-routing/heldout_sample.csv)")


class Tenant(Strict):
    name: str
    share: float = Field(gt=0, le=MAX_SHARE, description="fraction of all requests (normalised over tenants)")
    trace: str = Field(default="conv", description="conv or code (the shipped Azure 2023 traces) or a trace file: "
                       "CSV or JSON Lines (docs/simulator.md, 'Trace files'), relative to the scenario file")
    model: str
    right_size: RightSizeDef | None = Field(default=None, description="with model: auto, the smallest model "
                                            "expected to answer each prompt well")
    continents: list[str] | None = None
    countries: list[str] | None = None
    cities: UserCities | None = Field(default=None, description="GeoNames cities its users live in, by name or lat/lon, "
                                      "with weights "
                                      "(sim/user_cities.py); at most 2,000 (its length checked first), each "
                                      "looked up (under 0.3 ms)")
    jurisdictions: list[str] | None = Field(default=None, description="allowed jurisdictions (residency)")
    max_prompt_tokens: int = Field(default=8192, gt=0, le=MAX_TOKENS)
    agent: AgentDef | None = Field(default=None, description="sessions of model calls and tool runs")
    shared_prefix: SharedPrefixDef | None = Field(default=None, description="a system prompt shared by its "
                                                  "requests, which engines cache")
    priority: str | int = Field(default="standard", description="interactive, standard, batch or a level 0-9 "
                                "(core/urgency.py)")
    deadline_ms: float | None = Field(default=None, gt=0, description="first token wanted within this many ms "
                                      "of arrival, else refused before any engine works on it")

    @field_validator("trace")
    @classmethod
    def _trace(cls, v: str, info: ValidationInfo) -> str:
        return trace_source(v, info)

    @field_validator("continents")
    @classmethod
    def _continents(cls, v: list[str] | None) -> list[str] | None:
        return known_continents(v)

    @field_validator("countries")
    @classmethod
    def _countries(cls, v: list[str] | None) -> list[str] | None:
        problem = unknown_countries(v)  # was `tenant 'x': no cities in its continents/countries` once the run began
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("priority")
    @classmethod
    def _level(cls, v: str | int) -> str | int:
        parse_level(v)  # raises ValueError naming what is accepted
        return v

    @model_validator(mode="after")
    def _places(self) -> Tenant:
        if self.cities is not None:
            if self.continents is not None or self.countries is not None:
                raise ValueError("give cities, or continents and countries, not both")
            user_places(self.cities, load_cities())  # two entries naming one city are refused
        return self

    @property
    def level(self) -> int:
        return parse_level(self.priority)


class Diurnal(Strict):
    peak_to_trough: float = Field(default=3.0, ge=1.0)
    peak_hour: float = Field(default=15.0, ge=0, lt=24)
    start_utc_hour: float = Field(default=12.0, ge=0, lt=24)


class NetworkDef(Strict):
    route_factor: float = Field(default=DEFAULT_ROUTE_FACTOR, ge=1.0, le=10.0)
    overhead_ms: float = Field(default=DEFAULT_OVERHEAD_MS, ge=0, le=60_000)
    jitter_ms: float = Field(default=1.0, ge=0, le=60_000)


ClassName = Literal["interactive", "standard", "batch"]


class AdmissionDef(AdmissionLimits):
    """The gateways' admission queue (core/fair_queue.py), with the gateway's own limits (spec/models.py):
    requests wait there when every eligible endpoint is busy for their class, and are shed (429) past their
    class's longest wait or the queue's capacity. It serves aigrid's policies; `POLICY:fcfs` runs a policy
    without it and without classes (first come, first served, as before urgency existed); the baselines never
    have it."""

    enabled: bool = True


class GatewayDef(Strict):
    count: int = Field(default=1, ge=1, le=1000, description="gateways deciding at once")
    telemetry_interval_s: float = Field(default=1.0, ge=0.001, description="at least 1 ms: each tick is an event "
                                        "per gateway (1e-300 s ran without end)")
    telemetry_lag_s: float = Field(default=1.0, ge=0)
    candidates: int = Field(default=32, ge=1, description="nearest endpoints a regional gateway scores")
    local_accounting: bool = True
    shared_state_s: float = Field(default=0.02, ge=0, description=(
        "how often gateways exchange in-flight ledgers through the shared state (Redis; the live gateway's "
        "shared_sync_interval_s, same default); 0: not shared; else at least 1 ms"))
    breaker_failures: int = Field(default=1, ge=1, description="consecutive failures that open a circuit")
    circuit_cooldown_s: float = Field(default=30.0, ge=0)
    connect_timeout_s: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    admission: AdmissionDef = AdmissionDef()

    @field_validator("shared_state_s")
    @classmethod
    def _sync(cls, v: float) -> float:
        if 0 < v < 0.001:
            raise ValueError("0 (not shared) or at least 0.001 s: each exchange is an event per gateway")
        return v


class Fault(Strict):
    kind: Literal["outage", "spike", "partition"]
    at_s: float = Field(ge=0)
    until_s: float | None = None
    sites: list[str] | None = None
    jurisdictions: list[str] | None = None
    continents: list[str] | None = None
    factor: float = Field(default=3.0, gt=0, le=1000, description="load multiplier of a spike")

    @field_validator("continents")
    @classmethod
    def _continents(cls, v: list[str] | None) -> list[str] | None:
        return known_continents(v)

    @model_validator(mode="after")
    def _target(self) -> Fault:
        if self.kind != "spike" and not (self.sites or self.jurisdictions or self.continents):
            raise ValueError(f"a {self.kind} needs sites, jurisdictions or continents")
        if self.until_s is not None and self.until_s <= self.at_s:
            raise ValueError("until_s must be after at_s")
        return self


class ClassSlo(Strict):
    ttft_ms: float = Field(gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)


class Slo(Strict):
    ttft_ms: float = Field(default=2000.0, gt=0)
    tpot_ms: float = Field(default=200.0, gt=0)
    by_class: dict[ClassName, ClassSlo] = Field(default_factory=dict, description=(
        "a class's own SLO for goodput (e.g. batch: first token within minutes); default the one above"))

    def for_class(self, klass: str) -> tuple[float, float]:
        """(TTFT ms, TPOT ms) a request of this class must meet to count as goodput."""
        own = self.by_class.get(klass)  # type: ignore[call-overload]
        if own is None:
            return self.ttft_ms, self.tpot_ms
        return own.ttft_ms, own.tpot_ms if own.tpot_ms is not None else self.tpot_ms


class Scenario(Strict):
    name: str
    description: str = ""
    seed: int = Field(default=1, ge=0)
    duration_s: float = Field(gt=0, le=MAX_DURATION_S)
    requests: int = Field(gt=0, le=MAX_REQUESTS, description="expected number of requests at load factor 1")
    models: list[ModelDef] = Field(min_length=1)
    sites: list[SiteDef] = Field(default_factory=list)
    generate_sites: GeneratedSites | None = None
    site_sets: dict[str, list[SiteDef]] = Field(default_factory=dict)
    tenants: list[Tenant] = Field(min_length=1, max_length=1000, description="each a workload of its own (its users' "
                                  "weight per city and 5-minute slot)")
    policies: list[str] = Field(min_length=1, max_length=64, description="name or name@site_set; each a run of its "
                                "own, at every sweep factor")
    central_site: str | None = None
    diurnal: Diurnal = Diurnal()
    network: NetworkDef = NetworkDef()
    gateway: GatewayDef = GatewayDef()
    faults: list[Fault] = Field(default_factory=list)
    slo: Slo = Slo()
    sweep: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list, max_length=64, description="load "
                                                       "factors for the TTFT-vs-load curve")
    chunk_tokens: int = Field(default=DEFAULT_CHUNK_TOKENS, gt=0)
    write_requests_csv: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        """The checks across fields, each raised at the field it is about (`sites[1].models[0]`; it was
        "(top level):")."""
        for field, given in (("models", [m.name for m in self.models]), ("tenants", [t.name for t in self.tenants])):
            twice = given_twice(given)
            if twice:  # the last of a name silently replaced the others (a model's size, a tenant's results)
                raise at((field,), f"{', '.join(map(repr, twice))} given more than once (each name once)")
        names = {m.name for m in self.models}
        if not self.sites and self.generate_sites is None:
            raise at(("sites",), "needs sites or generate_sites")
        placed: list[tuple[tuple[str | int, ...], SiteDef]] = [(("sites", i), s) for i, s in enumerate(self.sites)] + [
            (("site_sets", k, i), s) for k, ss in self.site_sets.items() for i, s in enumerate(ss)]
        for where, s in placed:
            for j, m in enumerate(s.models):
                if m not in names:
                    raise at((*where, "models", j), f"site {s.id!r} serves unknown model {m!r}{did_you_mean(m, names)} "
                                                    f"(models: {', '.join(sorted(names))})")
        for i, t in enumerate(self.tenants):
            if t.right_size is not None:
                if t.agent is not None:
                    raise at(("tenants", i, "right_size"), f"tenant {t.name!r}: right_size and agent cannot be "
                                                          "combined yet")
                if t.model != "auto":
                    raise at(("tenants", i, "model"), f"tenant {t.name!r}: right_size needs model: auto")
                for j, m in enumerate(t.right_size.models or ()):
                    if m not in names:
                        raise at(("tenants", i, "right_size", "models", j), f"tenant {t.name!r}: unknown model "
                                                                           f"{m!r}{did_you_mean(m, names)}")
            elif t.model not in names:
                raise at(("tenants", i, "model"), f"tenant {t.name!r} asks for unknown model {t.model!r}"
                         + (" (model auto needs right_size)" if t.model == "auto"
                            else f"{did_you_mean(t.model, names)} (models: {', '.join(sorted(names))})"))
        for k, p in enumerate(self.policies):
            if policy_name(p) not in KNOWN:
                raise at(("policies", k), f"unknown policy {p!r}{did_you_mean(policy_name(p), KNOWN)} "
                                          f"(known: {', '.join(KNOWN)})")
            if "@" in p and p.split("@", 1)[1] not in self.site_sets:
                raise at(("policies", k), f"policy {p!r} names an unknown site set")
        if any(policy_name(p) == "centralized" for p in self.policies) and not self.central_site:
            raise at(("central_site",), "the centralized policy needs central_site")
        g = self.generate_sites
        grids = {"sites": sum(s.replicas * len(s.models) for s in self.sites)
                 + (g.count * g.replicas * len(g.models) if g is not None else 0)}
        grids.update({f"site_sets.{k}": sum(s.replicas * len(s.models) for s in v) for k, v in self.site_sets.items()})
        for grid, engines in grids.items():
            if engines > MAX_ENGINES:
                raise at(tuple(grid.split(".", 1)), f"{engines:,} engines (replicas x models), more than the "
                                                     f"{MAX_ENGINES:,} a scenario may simulate")
        most = self.expected_requests()
        if most > MAX_REQUESTS:
            raise at(("requests",), f"{self.requests:,} x load {max([1.0, *self.sweep]):g} with its spikes and "
                             f"agents' steps is about {most:,.0f} model calls, more than the {MAX_REQUESTS:,} a "
                             "scenario may expect")
        return self

    def expected_requests(self) -> float:
        """About how many model calls the highest load draws: `requests` x the largest sweep factor, each spike
        adding its extra load over the part of the run it covers (an upper bound: the workload weighs spikes
        by the traffic of their targets), an agent tenant's sessions `steps` + 1 calls each."""
        extra = sum((f.factor - 1) * (min(f.until_s or self.duration_s, self.duration_s) - f.at_s) / self.duration_s
                    for f in self.faults if f.kind == "spike" and f.factor > 1 and f.at_s < self.duration_s)
        shares = sum(t.share for t in self.tenants)
        calls = sum(t.share * (t.agent.steps + 1 if t.agent else 1) for t in self.tenants) / shares
        return self.requests * max([1.0, *self.sweep]) * (1 + extra) * calls



def at(loc: tuple[str | int, ...], msg: str) -> ValidationError:
    """A check across a file's fields raised at the field it is about: its error's path is `loc` (describe writes
    it `sites[1].models[0]`), not the file's top level (a ValidationError raised in a validator keeps its
    location under the validated model's)."""
    return ValidationError.from_exception_data("Scenario", [InitErrorDetails(
        type=PydanticCustomError("value_error", msg), loc=loc, input=None)])

FCFS = ":fcfs"


def policy_name(label: str) -> str:
    """The router's name in a policy label `NAME[:fcfs][@SITE_SET]`."""
    return label.split("@")[0].removesuffix(FCFS)


def is_fcfs(label: str) -> bool:
    return label.split("@")[0].endswith(FCFS)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    raw = read_yaml(path, ScenarioError, "scenario")
    if not isinstance(raw, dict):
        raise ScenarioError(str(path), ["expected a mapping at the top level"])
    try:
        return Scenario.model_validate(raw, context={"base": str(path.parent)})
    except ValidationError as e:
        raise ScenarioError(str(path), [describe(err, Scenario if k < MAX_LISTED else None)  # hints: listed only
                                        for k, err in enumerate(without_typos_missing(e.errors(), Scenario))]) \
            from None
