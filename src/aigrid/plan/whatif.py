"""What-if edits of a demand, as the CLI flags give them: more traffic somewhere, new residency, new prices.

    --traffic AS=1.3          users in Asia (continent or country code) send 30% more
    --residency eu-bank=EU    tenant eu-bank may now run only in these jurisdictions (comma list; '*' lifts it)
    --price rtx-pro-6000=0.8  that hardware's price per hour is multiplied by 0.8
    --growth 0.3              30% more traffic everywhere

Every malformed flag raises DemandError naming the flag.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from aigrid.plan.demand import (
    MAX_FACTOR,
    Demand,
    DemandError,
    Traffic,
    jurisdiction_problems,
    load_problem,
    place_problems,
)
from aigrid.sim.hardware import HARDWARE
from aigrid.spec.near import did_you_mean


def _pairs(flag: str, values: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise DemandError(flag, [f"{v!r}: expected KEY=VALUE"])
        out.append((key.strip(), val.strip()))
    return out


def _factor(flag: str, key: str, val: str) -> float:
    try:
        f = float(val[:-1]) / 100 + 1 if val.endswith("%") else float(val)
    except ValueError:
        raise DemandError(flag, [f"{key}={val}: not a number (use 1.3 or +30%)"]) from None
    if not 0 <= f <= MAX_FACTOR:  # NaN and inf (float() reads both) passed `f < 0`
        raise DemandError(flag, [f"{key}={val}: must be from 0 to {MAX_FACTOR:g}"])
    return f


def apply_whatif(demand: Demand, *, traffic: Sequence[str] = (), residency: Sequence[str] = (),
                 price: Sequence[str] = (), growth: float | None = None) -> Demand:
    """The demand with the edits applied (the original is not changed)."""
    by_place = dict(demand.traffic.by_place)
    for key, val in _pairs("--traffic", traffic):
        problems = place_problems([key])
        if problems:
            raise DemandError("--traffic", [f"{key}: {p}" for p in problems])
        by_place[key] = by_place.get(key, 1.0) * _factor("--traffic", key, val)
    t = demand.traffic.model_copy(update={"by_place": by_place})
    if growth is not None:
        try:  # the demand file's bounds (model_copy does not validate)
            t = Traffic.model_validate({**t.model_dump(), "growth": growth})
        except ValidationError as e:
            raise DemandError("--growth", [f"{growth}: {err['msg']}" for err in e.errors()]) from None

    tenants = list(demand.tenants)
    names = [x.name for x in tenants]
    for key, val in _pairs("--residency", residency):
        if key not in names:
            # the names as a list, not Python's `['chat', 'code']`; a near one named (`chatt` for chat)
            raise DemandError("--residency", [f"{key}: no tenant {key!r}{did_you_mean(key, names)} "
                                              f"(tenants: {', '.join(names)})"])
        i = names.index(key)
        jur = None if val == "*" else [j.strip() for j in val.split(",") if j.strip()]
        problems = jurisdiction_problems(jur or ())
        if problems:
            raise DemandError("--residency", [f"{key}={val}: {p}" for p in problems])
        tenants[i] = tenants[i].model_copy(update={"jurisdictions": jur})

    hardware = dict(demand.supply.hardware)
    for key, val in _pairs("--price", price):
        if key not in hardware:
            raise DemandError("--price", [f"{key}: not among the supply's hardware{did_you_mean(key, hardware)} "
                                          f"({', '.join(sorted(hardware))}; supply.hardware lists what may be "
                                          "priced)"])
        opt = hardware[key]
        base = opt.usd_per_hour if opt.usd_per_hour is not None else HARDWARE[key].usd_per_hour
        hardware[key] = opt.model_copy(update={"usd_per_hour": base * _factor("--price", key, val)})
    supply = demand.supply.model_copy(update={"hardware": hardware})
    out = demand.model_copy(update={"traffic": t, "tenants": tenants, "supply": supply})
    load = load_problem(out)
    if load:
        raise DemandError("--traffic" if traffic else "--growth", [load])
    return out
