"""Load a grid spec from YAML, and turn it into the core's types.

Every problem with a spec becomes one SpecError naming the file and each bad field, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from aigrid.core.policies import BUILTIN_POLICIES, with_slo
from aigrid.core.types import Endpoint, GeoPoint, ModelInfo, Policy, Site
from aigrid.errors import SpecError
from aigrid.spec.models import GridSpec


def load_spec(path: str | Path) -> GridSpec:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(str(p), [f"cannot read file: {e.strerror or e}"]) from e
    except yaml.YAMLError as e:
        raise SpecError(str(p), [f"not valid YAML: {e}"]) from e
    return relative_to(parse_spec(raw, str(p)), p.parent)


def relative_to(spec: GridSpec, base: Path) -> GridSpec:
    """Files a spec names (documents, SQL databases) are relative to the spec file's folder."""
    def resolve(path: str) -> str:
        return path if Path(path).is_absolute() else str(base / path)

    sites = {sid: s.model_copy(update={"documents": [d.model_copy(update={"path": resolve(d.path)})
                                                     for d in s.documents]})
             for sid, s in spec.sites.items()}
    agents = spec.agents.model_copy(update={"sql": {k: resolve(v) for k, v in spec.agents.sql.items()}})
    return spec.model_copy(update={"sites": sites, "agents": agents})


def parse_spec(raw: object, source: str = "<spec>") -> GridSpec:
    if not isinstance(raw, dict):
        raise SpecError(source, ["the top level must be a mapping with models, sites and endpoints"])
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(source, [describe(err) for err in e.errors()]) from e
    problems = _unknown_policies(spec)
    if spec.gateway.location is not None and parse_point(spec.gateway.location, cities(spec)) is None:
        problems.append(f"gateway.location: {spec.gateway.location!r} is neither 'lat,lon' nor a known city "
                        f"(known: {', '.join(sorted(c.title() for c in cities(spec)))})")
    if spec.gateway.network == "netns" and spec.gateway.location is None:
        problems.append("gateway.location: network: netns needs the gateway's location (the origin of the delays)")
    if problems:
        raise SpecError(source, problems)
    return spec


def parse_point(text: str, known: Mapping[str, GeoPoint]) -> GeoPoint | None:
    """'lat,lon' (within range) or the name of a known city (any case); None when it is neither."""
    lat_s, sep, lon_s = text.strip().partition(",")
    if sep:
        try:
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            return None
        return GeoPoint(lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None
    return known.get(text.strip().lower())


def gateway_location(spec: GridSpec) -> GeoPoint | None:
    """Where the gateway is (validated by parse_spec)."""
    return None if spec.gateway.location is None else parse_point(spec.gateway.location, cities(spec))


def describe(err: object) -> str:
    """One pydantic error as "field.path: message" (the spec's, the scenario's and the demand's wording)."""
    d = dict(err)  # type: ignore[call-overload]
    loc = ".".join(str(x) for x in d.get("loc", ())) or "(top level)"
    msg = str(d.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{loc}: {msg}"


def _unknown_policies(spec: GridSpec) -> list[str]:
    known = set(policies(spec))
    problems = []
    if spec.gateway.default_policy not in known:
        problems.append(f"gateway.default_policy: unknown policy {spec.gateway.default_policy!r} "
                        f"(known: {sorted(known)})")
    for name, t in spec.tenants.items():
        if t.policy is not None and t.policy not in known:
            problems.append(f"tenants.{name}.policy: unknown policy {t.policy!r} (known: {sorted(known)})")
    return problems


def policies(spec: GridSpec) -> dict[str, Policy]:
    """The built-in policies and the spec's. With the grid's `slo`, every built-in gates on it, and so does
    each spec policy for what it does not set itself (`ttft_slo_ms`, `tpot_slo_ms`)."""
    slo = spec.slo
    out = dict(BUILTIN_POLICIES) if slo is None else {
        name: with_slo(p, slo.ttft_ms, slo.tpot_ms) for name, p in BUILTIN_POLICIES.items()}
    for name, p in spec.policies.items():
        own = p.model_fields_set
        ttft = p.ttft_slo_ms if slo is None or "ttft_slo_ms" in own else slo.ttft_ms
        tpot = p.tpot_slo_ms if slo is None or "tpot_slo_ms" in own else slo.tpot_ms
        out[name] = Policy(name, dict(p.weights), p.tie_tolerance, ttft, p.allow_family_fallback,
                           tpot_slo_ms=tpot, cost_reference_usd_per_mtok=p.cost_reference_usd_per_mtok)
    return out


def sites(spec: GridSpec) -> dict[str, Site]:
    return {
        sid: Site(sid, s.name, GeoPoint(s.lat, s.lon), s.jurisdiction, s.hardware,
                  s.power_budget_w, s.idle_power_w, s.peak_power_w)
        for sid, s in spec.sites.items()
    }


def models(spec: GridSpec) -> dict[str, ModelInfo]:
    return {name: ModelInfo(name, m.family, m.params_b) for name, m in spec.models.items()}


def endpoints(spec: GridSpec) -> tuple[Endpoint, ...]:
    out = []
    for e in spec.endpoints:
        m = spec.models[e.model]
        out.append(Endpoint(
            id=e.id, site_id=e.site, model=e.model, family=m.family, params_b=m.params_b,
            price_in_per_mtok=e.price_in_per_mtok, price_out_per_mtok=e.price_out_per_mtok,
            max_concurrency=e.slots, prefill_tps=e.prefill_tps, decode_tps=e.decode_tps, engine=e.engine,
        ))
    return tuple(out)


def cities(spec: GridSpec) -> dict[str, GeoPoint]:
    """Named client locations: every site's city plus the spec's extra cities, matched case-insensitively."""
    out = {s.name.lower(): GeoPoint(s.lat, s.lon) for s in spec.sites.values()}
    out.update({name.lower(): GeoPoint(lat, lon) for name, (lat, lon) in spec.cities.items()})
    return out
